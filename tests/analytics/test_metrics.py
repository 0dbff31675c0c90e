"""GET /metrics: the gateway's request counts, latencies and pipeline gauges, counted
off the request path by the event flusher; summed across processes in multi-process mode."""

import urllib.request

import openai
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.helpers import ask, client_for
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

STORE = "analytics.tasks.request_logs_store"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return samples_of(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_it_counts_requests_by_outcome_and_status(gateway, live_world):
    before = scrape(gateway.url)
    client = client_for(gateway.url, live_world.a.raw_key)
    ask(client, "count me")
    ask(client, "count me")
    with pytest.raises(openai.InternalServerError):
        ask(client, "fail [[fault:status=500]]")

    def all_written() -> Samples | None:
        samples = scrape(gateway.url)
        written = ("cognitude_events_written_total", (("task", STORE),))
        return samples if samples.get(written, 0) - before.get(written, 0) == 3 else None

    after = wait_until(all_written, timeout=5, what="the three events to be written")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cognitude_requests_total", outcome="miss", status="200") == 1
    assert delta("cognitude_requests_total", outcome="hit_redis", status="200") == 1
    assert delta("cognitude_requests_total", outcome="miss", status="500") == 1
    assert delta("cognitude_request_duration_seconds_count", outcome="miss") == 2
    assert delta("cognitude_request_duration_seconds_count", outcome="hit_redis") == 1
    assert delta("cognitude_request_duration_seconds_sum", outcome="miss") > 0
    # The provider by name: the tenant's default one here.
    assert delta("cognitude_upstream_errors_total", provider="default", error="http_500") == 1
    assert delta("cognitude_events_published_total", kind="request_log") == 3
    assert value(after, "cognitude_event_spool_depth") == 0
    assert ("cognitude_event_buffer_depth", ()) in after


def test_it_sums_every_process_in_multiprocess_mode(live_world, tmp_path):
    env = {"REDIS_URL": TEST_REDIS_URL, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    gateways = [start_gateway(env), start_gateway(env)]
    try:
        for n, gateway in enumerate(gateways):
            ask(client_for(gateway.url, live_world.a.raw_key), f"process {n}")
        # Either process answers for both.
        wait_until(lambda: value(scrape(gateways[0].url), "cognitude_requests_total",
                                 outcome="miss", status="200") == 2,
                   timeout=5, what="both processes' requests in one scrape")
    finally:
        for gateway in gateways:
            gateway.stop()
    assert list(tmp_path.glob("counter_*.db"))


def test_it_serves_the_prometheus_text_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert b"# TYPE cognitude_event_spool_depth gauge" in response.content


def test_it_asks_for_the_metrics_token_when_one_is_set(client, settings):
    settings.COGNITUDE_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    allowed = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert allowed.status_code == 200
    assert b"cognitude_requests_total" in allowed.content

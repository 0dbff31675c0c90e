"""Every proxied request becomes one RequestLog row, written off the request path."""

import time

import openai
import pytest

from analytics.models import RequestLog
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.helpers import ask, client_for, wait_for_entries

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for_logs(org, count: int, timeout: float = 5.0) -> list[RequestLog]:
    deadline = time.monotonic() + timeout
    while True:
        logs = list(RequestLog.objects.filter(organization=org).order_by("created_at"))
        if len(logs) >= count or time.monotonic() > deadline:
            return logs
        time.sleep(0.02)


def test_it_records_a_miss_and_a_hit(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    _, miss_headers = ask(client, "record me", model="gpt-4o")
    _, hit_headers = ask(client, "record me", model="gpt-4o")

    miss, hit = wait_for_logs(live_world.a.org, 2)
    assert miss.request_id == miss_headers["x-request-id"]
    assert hit.request_id == hit_headers["x-request-id"]
    assert (miss.cache_outcome, hit.cache_outcome) == ("miss", "hit_redis")
    assert miss.status == hit.status == 200
    assert miss.model_requested == miss.model_used == "gpt-4o"
    assert miss.prompt_tokens > 0 and miss.completion_tokens > 0
    assert (hit.prompt_tokens, hit.completion_tokens) == (miss.prompt_tokens,
                                                          miss.completion_tokens)
    assert miss.upstream_latency_ms is not None and hit.upstream_latency_ms is None
    assert miss.api_key.organization == live_world.a.org
    assert miss.endpoint == "chat/completions" and miss.provider == "default"
    assert miss.cache_key == hit.cache_key and len(miss.cache_key) == 64
    assert not RequestLog.objects.filter(organization=live_world.b.org).exists()


def test_it_records_errors_and_bypasses(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    ask(client, "bypass me", extra_headers={"Cache-Control": "no-cache"})
    with pytest.raises(openai.InternalServerError):
        ask(client, "fail [[fault:status=500]]")
    bypass, failure = wait_for_logs(live_world.a.org, 2)
    assert (bypass.cache_outcome, bypass.cache_bypassed) == ("bypass", True)
    assert (failure.status, failure.cache_outcome) == (500, "miss")


def test_it_records_nothing_when_request_logging_is_off(live_world):
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_REQUEST_LOG": "false"})
    try:
        client = client_for(gateway.url, live_world.a.raw_key)
        ask(client, "private question")
        assert ask(client, "private question")[1]["x-cognitude-cache"] == "HIT"
        # The cold-tier write goes through the same pipeline: once it has landed, a
        # request record would have too.
        assert len(wait_for_entries(live_world.a.org, 1)) == 1
        time.sleep(0.2)
        assert not RequestLog.objects.filter(organization=live_world.a.org).exists()
    finally:
        gateway.stop()

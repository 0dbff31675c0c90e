"""Routes through the gateway: a weighted split, the latency strategy, the default
provider for models without a route, the clear error of a route with nothing to send
to, /v1/models and /v1/models/{model}, and tenants kept apart."""

import http.client
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from fakeupstream.testing import start_fake_upstream, stop_fake_upstream
from routing.services import TargetSpec, route_set
from tests.conftest import FakeUpstream
from tests.proxy.failing import FailingUpstream
from tests.proxy.helpers import client_for
from tests.proxy.routes import add_provider, chat, provider_key, set_route, way

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def slow_upstream():
    process, url = start_fake_upstream(latency_ms=120)
    yield FakeUpstream(url)
    stop_fake_upstream(process)


def test_it_splits_a_weighted_route_by_weight(gateway, live_world, fake_upstream):
    org = live_world.a.org
    big = add_provider(org, "big", fake_upstream.api_base)
    small = add_provider(org, "small", fake_upstream.api_base)
    set_route(org, "split", (big, "gpt-4o-mini", 3), (small, "gpt-4o-mini", 1),
              strategy="weighted")
    headers = {"Authorization": f"Bearer {live_world.a.raw_key}", "Cache-Control": "no-store"}

    with httpx.Client(timeout=20) as client:
        def one(n: int) -> str:
            response = client.post(f"{gateway.url}/v1/chat/completions", headers=headers,
                                   json={"model": "split", "messages": [
                                       {"role": "user", "content": f"share {n}"}]})
            assert response.status_code == 200
            return response.headers["x-cognitude-provider"]

        with ThreadPoolExecutor(8) as pool:
            chosen = list(pool.map(one, range(1_000)))

    # 750 expected; the binomial's standard deviation is 13.7: five of them either side.
    assert 680 <= chosen.count("big") <= 820
    assert chosen.count("big") + chosen.count("small") == 1_000
    assert fake_upstream.calls_with(provider_key(big)) == chosen.count("big")
    assert fake_upstream.calls_with(provider_key(small)) == chosen.count("small")


def test_it_prefers_the_faster_upstream_on_a_latency_route(gateway, live_world,
                                                           fake_upstream, slow_upstream):
    org = live_world.a.org
    slow = add_provider(org, "slow", slow_upstream.api_base)
    fast = add_provider(org, "fast", fake_upstream.api_base)
    set_route(org, "quick", (slow, "gpt-4o-mini"), (fast, "gpt-4o-mini"), strategy="latency")

    chosen = [way(chat(gateway.url, live_world.a.raw_key, "quick", f"hurry {n}"))[0]
              for n in range(30)]

    # Each is measured once (a target never measured goes first), then the fast one wins.
    assert chosen[2:].count("fast") == 28
    assert slow_upstream.calls_with(provider_key(slow)) <= 2


def test_it_sends_a_model_without_a_route_to_the_default_provider(gateway, live_world,
                                                                  fake_upstream):
    response = chat(gateway.url, live_world.a.raw_key, "gpt-4o-mini", "no route for me")

    assert response.status_code == 200
    assert way(response) == ("default", "gpt-4o-mini", "1", None)
    assert "x-cognitude-route" not in response.headers
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_says_when_a_route_has_no_enabled_target(gateway, live_world, fake_upstream):
    org = live_world.a.org
    off = add_provider(org, "off", fake_upstream.api_base)
    route_set(organization=org, name="paused",
              targets=[TargetSpec(off, "gpt-4o-mini", enabled=False)])

    response = chat(gateway.url, live_world.a.raw_key, "paused", "hello?")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "route_has_no_target"
    assert "paused" in response.json()["error"]["message"]
    assert fake_upstream.calls_with(provider_key(off)) == 0


def test_it_says_when_no_target_of_a_route_serves_the_api(gateway, live_world):
    response = httpx.post(f"{gateway.url}/v1/messages", timeout=10,
                          headers={"x-api-key": live_world.a.raw_key},
                          json={"model": "gpt-4o-mini", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "route_has_no_target"
    assert "Messages API" in response.json()["error"]["message"]


def test_it_lists_route_names_beside_the_providers_models(gateway, live_world, fake_upstream):
    org = live_world.a.org
    set_route(org, "fast", (add_provider(org, "extra", fake_upstream.api_base), "gpt-4o-mini"))
    client = client_for(gateway.url, live_world.a.raw_key)

    ids = [model.id for model in client.models.list()]
    route = client.models.retrieve("fast")
    upstream = client.models.retrieve("gpt-4o")

    assert ids[0] == "fast"
    assert "gpt-4o-mini" in ids and len(ids) == len(set(ids))
    assert (route.id, route.owned_by) == ("fast", "cognitude")
    assert upstream.id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("unknown-model")


def test_it_refuses_a_model_id_that_would_walk_the_providers_url(gateway, live_world,
                                                                  fake_upstream):
    before = fake_upstream.calls_with(live_world.a.provider_key)
    host, port = gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    # Sent as written (an HTTP client would resolve the dots): the gateway gets
    # "x/../../stats" as the model.
    connection.request("GET", "/v1/models/x/%2E%2E/%2E%2E/stats",
                       headers={"Authorization": f"Bearer {live_world.a.raw_key}"})
    response = connection.getresponse()

    assert response.status == 404
    assert b"model_not_found" in response.read()
    assert fake_upstream.calls_with(live_world.a.provider_key) == before


def test_it_keeps_one_organizations_routes_and_providers_from_another(gateway, live_world):
    failing = FailingUpstream()
    try:
        a = live_world.a.org
        secret = add_provider(a, "a-secret", failing.api_base)
        set_route(a, "a-only-route", (secret, "a-private-model"))
        client_b = client_for(gateway.url, live_world.b.raw_key)

        listed = [model.id for model in client_b.models.list()]
        retrieved = client_b.models.retrieve("a-only-route")
        asked = chat(gateway.url, live_world.b.raw_key, "a-only-route", "let me in")
    finally:
        failing.stop()

    assert "a-only-route" not in listed and "failing-model" not in listed
    assert retrieved.owned_by != "cognitude"  # B's provider's answer, not A's route
    # B's model name went, as asked, to B's own default provider and nowhere else.
    assert way(asked) == ("default", "a-only-route", "1", None)
    assert failing.requests == 0

"""Circuit breakers through the gateway: after N failures a target is skipped (no
request reaches it, by its own count), after the cool-down one request probes it, and
its success closes the breaker; the state is shared by two gateway processes."""

import time

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.failing import FailingUpstream
from tests.proxy.routes import add_provider, chat, provider_key, set_route, way

pytestmark = pytest.mark.django_db(transaction=True)

FAILURES = 3
COOLDOWN = 2.0
BREAKER_ENV = {"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_BREAKER_FAILURES": str(FAILURES),
               "COGNITUDE_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN)}


@pytest.fixture
def failing():
    upstream = FailingUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture
def breaker_gateway(live_world):
    gateway = start_gateway(BREAKER_ENV)
    yield gateway
    gateway.stop()


@pytest.fixture
def route(live_world, fake_upstream, failing):
    org = live_world.a.org
    primary = add_provider(org, "primary", failing.api_base)
    backup = add_provider(org, "backup", fake_upstream.api_base)
    set_route(org, "smart", (primary, "gpt-4o"), (backup, "gpt-4o-mini"))
    return primary, backup


def ask(gateway, world, n: int):
    return chat(gateway.url, world.a.raw_key, "smart", f"question {n} {time.monotonic()}")


def test_it_opens_skips_half_opens_and_closes(breaker_gateway, live_world, failing, route,
                                              fake_upstream):
    failing.mode = "500"
    failing_ones = [ask(breaker_gateway, live_world, n) for n in range(FAILURES)]
    opened_at = time.monotonic()
    skipping = [ask(breaker_gateway, live_world, n) for n in range(5)]

    assert [way(r) for r in failing_ones] == [("backup", "gpt-4o-mini", "2",
                                               "primary:gpt-4o=500")] * FAILURES
    # Open: not one more request reaches the failing target.
    assert failing.requests == FAILURES
    assert [way(r) for r in skipping] == [("backup", "gpt-4o-mini", "1",
                                           "primary:gpt-4o=open")] * 5
    assert all(r.status_code == 200 for r in skipping)

    # The cool-down over, one request probes; it fails, so the breaker opens again.
    time.sleep(max(0.0, COOLDOWN + 0.2 - (time.monotonic() - opened_at)))
    probe = ask(breaker_gateway, live_world, 10)
    reopened = ask(breaker_gateway, live_world, 11)
    reopened_at = time.monotonic()

    assert way(probe) == ("backup", "gpt-4o-mini", "2", "primary:gpt-4o=500")
    assert way(reopened)[3] == "primary:gpt-4o=open"
    assert failing.requests == FAILURES + 1

    # Next cool-down, the target has recovered: the probe answers and closes it.
    failing.mode = "ok"
    time.sleep(max(0.0, COOLDOWN + 0.2 - (time.monotonic() - reopened_at)))
    recovered = [ask(breaker_gateway, live_world, n) for n in range(20, 23)]

    assert [way(r) for r in recovered] == [("primary", "gpt-4o", "1", None)] * 3
    assert failing.requests == FAILURES + 1 + 3


def test_it_answers_503_when_every_target_is_open(breaker_gateway, live_world, failing):
    org = live_world.a.org
    only = add_provider(org, "only", failing.api_base)
    set_route(org, "smart", (only, "gpt-4o"))
    failing.mode = "503"

    for n in range(FAILURES):
        assert ask(breaker_gateway, live_world, n).status_code == 503
    started = time.monotonic()
    refused = ask(breaker_gateway, live_world, 99)

    assert time.monotonic() - started < 1
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "providers_unavailable"
    assert 1 <= int(refused.headers["retry-after"]) <= COOLDOWN
    assert way(refused) == (None, None, "0", "only:gpt-4o=open")
    assert failing.requests == FAILURES


def test_it_shares_the_breaker_state_between_gateway_processes(live_world, failing, route,
                                                               fake_upstream):
    _, backup = route
    failing.mode = "500"
    # A cooldown well past what the test takes: on a loaded CI run the 2 s one ran out
    # while the other process's answers were asked, and its half-open probe reached
    # the failing target.
    env = {**BREAKER_ENV, "COGNITUDE_BREAKER_COOLDOWN_SECONDS": "30"}
    one, other = start_gateway(env), start_gateway(env)
    try:
        # Both have served the route before, with the target healthy.
        failing.mode = "ok"
        assert way(ask(one, live_world, 0))[0] == "primary"
        assert way(ask(other, live_world, 1))[0] == "primary"
        failing.mode = "500"
        for n in range(FAILURES):
            assert way(ask(one, live_world, 10 + n))[3] == "primary:gpt-4o=500"
        reached = failing.requests
        time.sleep(1.2)  # the other's copy is at most a second old

        answers = [ask(other, live_world, 20 + n) for n in range(4)]
    finally:
        one.stop()
        other.stop()

    assert failing.requests == reached  # the other process never tried it
    assert [way(r) for r in answers] == [("backup", "gpt-4o-mini", "1",
                                          "primary:gpt-4o=open")] * 4
    assert fake_upstream.calls_with(provider_key(backup)) == FAILURES + 4

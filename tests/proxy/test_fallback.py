"""A route whose first target fails moves to the next, and says so: connect errors,
timeouts, 429 and 5xx fall back (per the route's retry_on), a 404 moves on, the
caller's 4xx never does; a stream falls back only before its first byte reached the
client. Over real sockets: the gateway under uvicorn, the fake upstream, an upstream
failing on demand, a closed port."""

import threading
import time

import openai
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.failing import FailingUpstream
from tests.proxy.helpers import client_for, wait_for_entries
from tests.proxy.routes import add_provider, chat, closed_port_base, provider_key, set_route, way

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def failing():
    upstream = FailingUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture
def two_targets(live_world, fake_upstream, failing):
    """Org A's route "smart": the failing upstream's gpt-4o, then the fake's gpt-4o-mini."""
    org = live_world.a.org
    primary = add_provider(org, "primary", failing.api_base)
    backup = add_provider(org, "backup", fake_upstream.api_base)
    set_route(org, "smart", (primary, "gpt-4o"), (backup, "gpt-4o-mini"))
    return primary, backup


@pytest.mark.parametrize("mode", ["500", "502", "503", "429"])
def test_it_falls_back_on_an_upstream_status(gateway, live_world, fake_upstream, failing,
                                             two_targets, mode):
    failing.mode = mode
    _, backup = two_targets

    response = chat(gateway.url, live_world.a.raw_key, "smart", f"status {mode}")

    assert response.status_code == 200
    assert way(response) == ("backup", "gpt-4o-mini", "2", f"primary:gpt-4o={mode}")
    assert response.headers["x-cognitude-route"] == "smart"
    # Each target was asked for its own upstream model.
    assert failing.models == ["gpt-4o"]
    assert fake_upstream.calls_with(provider_key(backup)) == 1
    assert response.json()["model"] == "gpt-4o-mini"


def test_it_falls_back_when_the_first_target_refuses_connections(gateway, live_world,
                                                                 fake_upstream):
    org = live_world.a.org
    dead = add_provider(org, "dead", closed_port_base())
    backup = add_provider(org, "backup", fake_upstream.api_base)
    set_route(org, "smart", (dead, "gpt-4o"), (backup, "gpt-4o-mini"))

    response = chat(gateway.url, live_world.a.raw_key, "smart", "anyone home?")

    assert response.status_code == 200
    assert way(response) == ("backup", "gpt-4o-mini", "2", "dead:gpt-4o=connect")
    assert fake_upstream.calls_with(provider_key(backup)) == 1


def test_it_falls_back_when_the_first_target_does_not_answer_in_time(gateway, live_world,
                                                                     failing, two_targets):
    failing.mode, failing.hang_seconds = "hang", 6  # the test gateway waits 3 s

    started = time.monotonic()
    response = chat(gateway.url, live_world.a.raw_key, "smart", "are you there?")

    assert response.status_code == 200
    assert way(response) == ("backup", "gpt-4o-mini", "2", "primary:gpt-4o=timeout")
    assert 2.5 < time.monotonic() - started < 6


def test_it_falls_back_when_a_json_answer_is_cut(gateway, live_world, failing, two_targets):
    failing.mode = "break"

    response = chat(gateway.url, live_world.a.raw_key, "smart", "cut me off")

    assert response.status_code == 200
    assert way(response) == ("backup", "gpt-4o-mini", "2", "primary:gpt-4o=connect")


def test_it_moves_on_from_a_404_and_answers_404_when_every_target_says_so(
        gateway, live_world, fake_upstream):
    org = live_world.a.org
    one = add_provider(org, "one", fake_upstream.api_base)
    two = add_provider(org, "two", fake_upstream.api_base)
    set_route(org, "smart", (one, "unknown-model"), (two, "gpt-4o-mini"))
    set_route(org, "nowhere", (one, "unknown-a"), (two, "unknown-b"))

    moved = chat(gateway.url, live_world.a.raw_key, "smart", "where is it?")
    missing = chat(gateway.url, live_world.a.raw_key, "nowhere", "where is it?")

    assert moved.status_code == 200
    assert way(moved) == ("two", "gpt-4o-mini", "2", "one:unknown-model=404")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert way(missing) == ("two", "unknown-b", "2", "one:unknown-a=404")


@pytest.mark.parametrize("mode", ["400", "401", "422"])
def test_it_never_retries_the_callers_4xx(gateway, live_world, fake_upstream, failing,
                                          two_targets, mode):
    failing.mode = mode
    _, backup = two_targets

    response = chat(gateway.url, live_world.a.raw_key, "smart", "a bad request")

    assert response.status_code == int(mode)
    assert response.json()["error"]["message"] == f"failing upstream: {mode}"
    assert way(response) == ("primary", "gpt-4o", "1", None)
    assert failing.requests == 1
    assert fake_upstream.calls_with(provider_key(backup)) == 0


def test_it_falls_back_only_on_what_the_route_retries_on(gateway, live_world, failing,
                                                         fake_upstream):
    org = live_world.a.org
    primary = add_provider(org, "primary", failing.api_base)
    backup = add_provider(org, "backup", fake_upstream.api_base)
    set_route(org, "smart", (primary, "gpt-4o"), (backup, "gpt-4o-mini"),
              retry_on=["connect", "timeout"])
    failing.mode = "503"

    response = chat(gateway.url, live_world.a.raw_key, "smart", "no 5xx fallback")

    assert response.status_code == 503
    assert way(response) == ("primary", "gpt-4o", "1", None)
    assert fake_upstream.calls_with(provider_key(backup)) == 0


def test_it_answers_the_last_failure_when_every_target_fails(gateway, live_world, failing):
    org = live_world.a.org
    dead = add_provider(org, "dead", closed_port_base())
    primary = add_provider(org, "primary", failing.api_base)
    set_route(org, "smart", (dead, "gpt-4o"), (primary, "gpt-4o"))
    failing.mode = "500"

    response = chat(gateway.url, live_world.a.raw_key, "smart", "all down")

    assert response.status_code == 500
    assert way(response) == ("primary", "gpt-4o", "2", "dead:gpt-4o=connect")
    assert response.headers["x-cognitude-cache"] == "MISS"


def test_it_caches_the_answer_under_the_route_name(gateway, live_world, fake_upstream,
                                                   failing, two_targets):
    _, backup = two_targets
    client = client_for(gateway.url, live_world.a.raw_key)
    first = client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "cache me"}])
    wait_for_entries(live_world.a.org, 1)

    second = client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "cache me"}])

    assert first.headers["x-cognitude-cache"] == "MISS"
    assert second.headers["x-cognitude-cache"] == "HIT"
    # A hit asked nobody: nothing to say about providers.
    assert second.headers["x-cognitude-attempts"] == "0"
    assert "x-cognitude-provider" not in second.headers
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert failing.requests == 1
    assert fake_upstream.calls_with(provider_key(backup)) == 1


def test_it_streams_from_the_second_target_when_the_first_breaks_before_any_byte(
        gateway, live_world, failing, two_targets):
    failing.mode = "break"
    client = client_for(gateway.url, live_world.a.raw_key)

    raw = client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "stream please"}], stream=True)
    chunks = list(raw.parse())

    assert raw.headers["x-cognitude-provider"] == "backup"
    assert raw.headers["x-cognitude-fallback"] == "primary:gpt-4o=connect"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(
        "Echo: stream please")


@pytest.mark.parametrize("mode", ["500", "429"])
def test_it_streams_from_the_second_target_when_the_first_answers_an_error(
        gateway, live_world, failing, two_targets, mode):
    failing.mode = mode

    response = chat(gateway.url, live_world.a.raw_key, "smart", "stream it", stream=True)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert way(response) == ("backup", "gpt-4o-mini", "2", f"primary:gpt-4o={mode}")
    assert response.text.endswith("data: [DONE]\n\n")


def test_it_does_not_fall_back_once_the_stream_has_begun(gateway, live_world, fake_upstream,
                                                         failing, two_targets):
    failing.mode = "break-1"
    _, backup = two_targets
    client = client_for(gateway.url, live_world.a.raw_key)

    raw = client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "stream, then break"}],
        stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in raw.parse():
            received.append(chunk)

    assert raw.headers["x-cognitude-provider"] == "primary"
    assert raw.headers["x-cognitude-attempts"] == "1"
    assert received[0].choices[0].delta.content == "from the "
    assert fake_upstream.calls_with(provider_key(backup)) == 0


def test_it_retries_a_single_target_after_its_retry_after(live_world, failing):
    # One target, one retry: the 429's Retry-After (1 s) is waited for, then it answers.
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_ROUTE_RETRIES": "1"})
    try:
        org = live_world.a.org
        only = add_provider(org, "only", failing.api_base)
        set_route(org, "smart", (only, "gpt-4o"))
        failing.mode, failing.retry_after = "429", 1

        def recover() -> None:
            while failing.requests == 0:
                time.sleep(0.01)
            failing.mode = "ok"

        threading.Thread(target=recover, daemon=True).start()
        started = time.monotonic()
        response = chat(gateway.url, live_world.a.raw_key, "smart", "retry me")
        elapsed = time.monotonic() - started
    finally:
        gateway.stop()

    assert response.status_code == 200
    assert way(response) == ("only", "gpt-4o", "2", "only:gpt-4o=429")
    assert failing.requests == 2
    assert 1.0 <= elapsed < 4


def test_it_does_not_wait_past_the_time_budget(live_world, failing):
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_ROUTE_RETRIES": "3",
                             "COGNITUDE_ROUTE_TIME_BUDGET_SECONDS": "2"})
    try:
        org = live_world.a.org
        only = add_provider(org, "only", failing.api_base)
        set_route(org, "smart", (only, "gpt-4o"))
        failing.mode, failing.retry_after = "429", 5  # longer than the budget

        started = time.monotonic()
        response = chat(gateway.url, live_world.a.raw_key, "smart", "no waiting")
        elapsed = time.monotonic() - started
    finally:
        gateway.stop()

    assert response.status_code == 429
    assert response.headers["retry-after"] == "5"
    assert failing.requests == 1
    assert elapsed < 1.5

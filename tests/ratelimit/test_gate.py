"""Limits as a client meets them: the official SDK and plain HTTP against live gateways
sharing the test Redis."""

import concurrent.futures
import contextlib
import math
import re
import threading
import time

import httpx
import openai
import orjson
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.ratelimit.conftest import LIMITS_ENV
from tests.ratelimit.helpers import (
    CHAT,
    burst,
    chat,
    peak_in_flight,
    post,
    records_of,
    set_limits,
    statuses,
)
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RESET = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


def seconds(reset: str) -> float:
    """An x-ratelimit-reset-* value (1s, 6m0s, 17ms) in seconds."""
    if reset.endswith("ms"):
        return int(reset[:-2]) / 1000
    hours, _, rest = reset.rpartition("h")
    minutes, _, secs = rest.rpartition("m")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs.rstrip("s"))


def assert_rpm_holds(responses, elapsed: float, limit: int) -> None:
    counts = statuses(responses)
    assert set(counts) <= {200, 429}, counts
    # The burst the limit allows, plus what it refills while the burst lasts.
    assert limit <= counts[200] <= limit + math.ceil(elapsed * limit / 60), (counts, elapsed)
    refused = next(r for r in responses if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == str(limit)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_it_admits_an_rpm_limit_across_two_workers_on_one_port(live_world, django_db_blocker):
    set_limits(live_world.a, requests_per_minute=60)
    with django_db_blocker.unblock():
        gateway = start_gateway(LIMITS_ENV, args=("--workers", "2"))
    try:
        started = time.monotonic()
        responses = burst(gateway.url, live_world.a.raw_key, [chat("rpm")] * 200)
        elapsed = time.monotonic() - started
    finally:
        gateway.stop()
    assert_rpm_holds(responses, elapsed, 60)


def test_it_admits_an_rpm_limit_across_two_gateways_sharing_redis(live_world,
                                                                   django_db_blocker):
    set_limits(live_world.a, requests_per_minute=60)
    with django_db_blocker.unblock():
        gateways = [start_gateway(LIMITS_ENV) for _ in range(2)]
    try:
        for gateway in gateways:  # warm, so that neither takes the whole burst by speed
            assert post(gateway.url, live_world.b.raw_key, chat("warm")).status_code == 200
        started = time.monotonic()
        # Every other request to each gateway: 100 each, 60 in all admitted, not 60 each.
        responses = burst([g.url for g in gateways], live_world.a.raw_key, [chat("rpm")] * 200)
        elapsed = time.monotonic() - started
    finally:
        for gateway in gateways:
            gateway.stop()
    assert_rpm_holds(responses, elapsed, 60)


def test_it_sends_openai_rate_limit_headers_that_count_down(limits_gateway, live_world):
    # 6000 tokens a minute come back at 100 a second; each request really uses ~320.
    set_limits(live_world.a, requests_per_minute=10, tokens_per_minute=6000)
    started = time.monotonic()
    seen = [post(limits_gateway.url, live_world.a.raw_key,
                 chat(f"headers {i} " + "x" * 1200)).headers for i in range(3)]
    elapsed = time.monotonic() - started
    assert [h["x-ratelimit-limit-requests"] for h in seen] == ["10"] * 3
    assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["9", "8", "7"]
    assert [h["x-ratelimit-limit-tokens"] for h in seen] == ["6000"] * 3
    remaining_tokens = [int(h["x-ratelimit-remaining-tokens"]) for h in seen]
    assert remaining_tokens[0] > remaining_tokens[1] > remaining_tokens[2]
    for headers in seen:
        assert RESET.match(headers["x-ratelimit-reset-requests"])
        assert RESET.match(headers["x-ratelimit-reset-tokens"])
    # Three requests of ten a minute: back to full 18 s (6 s each) after the first.
    assert 18 - elapsed - 0.1 <= seconds(seen[2]["x-ratelimit-reset-requests"]) <= 18


def test_it_gives_back_what_it_took_ahead_and_did_not_use(live_world, django_db_blocker):
    # 3,200 a day (one back every 27 s, so the counts below stay put): after the first
    # request a gateway takes 1/16 of what is left for the requests it expects in the
    # next 0.1 s (COGNITUDE_LIMITS_GRANT_SECONDS), and hands them out one by one.
    set_limits(live_world.a, requests_per_day=3200)
    with django_db_blocker.unblock():
        gateways = [start_gateway(LIMITS_ENV) for _ in range(2)]
    try:
        first, other = (g.url for g in gateways)
        seen = [post(first, live_world.a.raw_key, chat(f"ahead {i}")).headers
                for i in range(5)]
        time.sleep(1)  # each grant's 0.1 s are over: what it did not hand out is back
        after = post(other, live_world.a.raw_key, chat("the other gateway")).headers
    finally:
        for gateway in gateways:
            gateway.stop()
    remaining = [int(h["x-ratelimit-remaining-requests"]) for h in seen]
    assert remaining[0] == 3199
    # One fewer each (a grant's requests, and those of the next grant once one ends);
    # a refill tick may keep one equal.
    assert all(0 <= a - b <= 1 for a, b in zip(remaining, remaining[1:], strict=False)), remaining
    assert remaining[-1] <= 3196, remaining
    # Six used of 3,200: had a grant kept what it did not hand out (~190), the other
    # gateway would see about 3,000.
    assert 3193 <= int(after["x-ratelimit-remaining-requests"]) <= 3195


def test_it_sends_no_rate_limit_headers_when_no_limit_applies(limits_gateway, live_world):
    headers = post(limits_gateway.url, live_world.b.raw_key, chat("free")).headers
    assert not [name for name in headers if name.startswith("x-ratelimit")]


def test_it_lets_the_sdk_recover_after_retry_after(limits_gateway, live_world):
    set_limits(live_world.a, requests_per_minute=60)  # then one a second
    burst(limits_gateway.url, live_world.a.raw_key, [chat("fill")] * 60)
    # Spend until the next slot is a while away, so the SDK's first try is refused.
    while True:
        refused = post(limits_gateway.url, live_world.a.raw_key, chat("over"))
        if refused.status_code == 429 and int(refused.headers["retry-after-ms"]) > 300:
            break

    attempts = []
    http_client = httpx.Client(event_hooks={
        "response": [lambda response: attempts.append(response.status_code)]})
    client = openai.OpenAI(base_url=f"{limits_gateway.url}/v1",
                           api_key=live_world.a.raw_key, max_retries=2, http_client=http_client)
    started = time.monotonic()
    answer = client.chat.completions.create(model="gpt-4o-mini",
                                            messages=[{"role": "user", "content": "retry"}])
    assert answer.choices[0].message.content
    assert attempts == [429, 200]
    # It slept what Retry-After said (the SDK reads retry-after-ms first), no longer.
    assert 0.25 <= time.monotonic() - started < 5


def test_it_settles_tokens_with_the_real_usage(limits_gateway, live_world):
    # 600 a minute (10 a second back). Each request reserves its body's bytes / 4 plus
    # its max_tokens, about 165, and really uses about 20: unsettled, the fourth would
    # not fit.
    set_limits(live_world.a, tokens_per_minute=600)
    used, first = 0, None
    for i in range(8):
        body = orjson.dumps(chat(f"tokens {i}", max_tokens=150))
        response = httpx.post(limits_gateway.url + CHAT, content=body, timeout=30, headers={
            "Authorization": f"Bearer {live_world.a.raw_key}",
            "Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        first = first or time.monotonic()
        reserved = (len(body) + 3) // 4 + 150
        remaining = int(response.headers["x-ratelimit-remaining-tokens"])
        refilled = (time.monotonic() - first) * 10 + 1
        # What the earlier requests really used is spent, and only that.
        assert 600 - used - reserved - 1 <= remaining <= 600 - used - reserved + refilled, (
            i, remaining, used, reserved)
        usage = response.json()["usage"]
        used += usage["prompt_tokens"] + usage["completion_tokens"]
        time.sleep(0.05)  # the settlement goes out once the answer has


def test_it_holds_a_concurrency_limit_under_50_parallel_streams(limits_gateway, live_world,
                                                                fake_upstream):
    set_limits(live_world.a, concurrent_requests=5)
    with peak_in_flight(fake_upstream) as peak:
        responses = burst(limits_gateway.url, live_world.a.raw_key, [
            chat(f"stream {i} [[fault:chunk_delay_ms=300]]", stream=True) for i in range(50)])
    counts = statuses(responses)
    assert set(counts) <= {200, 429}, counts
    assert 5 <= counts[200] and counts.get(429, 0) >= 30
    assert peak[0] <= 5
    for response in responses:
        if response.status_code == 200:
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["error"]["type"] == "requests"
    # Every slot came back when its stream ended.
    again = burst(limits_gateway.url, live_world.a.raw_key,
                  [chat(f"after {i}", stream=True) for i in range(5)])
    assert statuses(again) == {200: 5}


def test_it_lets_cache_hits_through_a_concurrency_limit_they_do_not_hold(limits_gateway,
                                                                        live_world):
    # A hit is over in well under a millisecond and spends nothing upstream: it is
    # checked against the limit (below) but holds no slot.
    set_limits(live_world.a, concurrent_requests=1)
    assert post(limits_gateway.url, live_world.a.raw_key, chat("warm")).status_code == 200
    hits = burst(limits_gateway.url, live_world.a.raw_key, [chat("warm")] * 20)
    assert statuses(hits) == {200: 20}
    assert {r.headers["x-cognitude-cache"] for r in hits} == {"HIT"}


def test_it_refuses_a_hit_while_the_slots_are_taken(limits_gateway, live_world):
    set_limits(live_world.a, concurrent_requests=1)
    assert post(limits_gateway.url, live_world.a.raw_key, chat("cached")).status_code == 200

    def slow() -> httpx.Response:
        return post(limits_gateway.url, live_world.a.raw_key,
                    chat("slow [[fault:chunk_delay_ms=400]]", stream=True))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(slow)
        time.sleep(0.3)  # the stream has its slot
        hit = post(limits_gateway.url, live_world.a.raw_key, chat("cached"))
        assert holder.result().status_code == 200
    assert hit.status_code == 429, hit.text
    assert hit.json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-cognitude-cache" not in hit.headers
    # The slot came back with the stream's end, and the hit is served again.
    assert post(limits_gateway.url, live_world.a.raw_key, chat("cached")).status_code == 200


def test_it_never_lets_one_orgs_limits_throttle_another(limits_gateway, live_world):
    set_limits(live_world.a, requests_per_minute=5)
    a = burst(limits_gateway.url, live_world.a.raw_key, [chat("a")] * 10)
    b = burst(limits_gateway.url, live_world.b.raw_key, [chat("b")] * 10)
    assert statuses(a) == {200: 5, 429: 5}
    assert statuses(b) == {200: 10}


def test_it_holds_a_key_and_a_model_to_their_own_limits(limits_gateway, live_world):
    from organizations.services import api_key_create

    other = api_key_create(organization=live_world.a.org, name="other")
    set_limits(live_world.a, api_key=other.api_key, requests_per_minute=2)
    set_limits(live_world.a, model="gpt-4o", requests_per_minute=1)
    key = burst(limits_gateway.url, other.raw_key, [chat("k")] * 4)
    default_key = burst(limits_gateway.url, live_world.a.raw_key, [chat("d")] * 4)
    model = burst(limits_gateway.url, live_world.a.raw_key, [chat("m", model="gpt-4o")] * 3)
    assert statuses(key) == {200: 2, 429: 2}
    assert statuses(default_key) == {200: 4}
    assert statuses(model) == {200: 1, 429: 2}
    refused = next(r for r in key if r.status_code == 429).json()["error"]["message"]
    assert other.api_key.prefix in refused


def test_it_refuses_over_the_limit_before_the_cache_and_the_upstream(limits_gateway,
                                                                    live_world, fake_upstream):
    set_limits(live_world.a, requests_per_minute=1)
    assert post(limits_gateway.url, live_world.a.raw_key, chat("once")).status_code == 200
    calls = fake_upstream.calls_with(live_world.a.provider_key)
    refused = [post(limits_gateway.url, live_world.a.raw_key, chat(f"new {i}")) for i in range(3)]
    hit = post(limits_gateway.url, live_world.a.raw_key, chat("once"))
    assert [r.status_code for r in refused] == [429, 429, 429]
    assert hit.status_code == 429 and "x-cognitude-cache" not in hit.headers
    assert fake_upstream.calls_with(live_world.a.provider_key) == calls


def test_it_records_refusals_with_the_limit_that_refused(limits_gateway, live_world):
    set_limits(live_world.a, requests_per_minute=1)
    post(limits_gateway.url, live_world.a.raw_key, chat("first"))
    post(limits_gateway.url, live_world.a.raw_key, chat("second"))
    records = sorted(records_of(live_world.a.org, 2), key=lambda r: r.created_at)
    assert [(r.status, r.error_type) for r in records] == [(200, ""),
                                                          (429, "rate_limit_rpm")]
    assert records[1].model_requested == "gpt-4o-mini"
    assert records[1].cost == 0


def test_it_refuses_an_address_that_keeps_sending_bad_keys(django_db_blocker, live_world):
    with django_db_blocker.unblock():
        gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL,
                                 "COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE": "5"})
    try:
        bad = "cog_" + "x" * 38
        flood = [post(gateway.url, bad, chat("x"), **{"X-Forwarded-For": "203.0.113.7"})
                 for _ in range(8)]
        # Another address (through a trusted proxy) is not held to the first one's.
        other = post(gateway.url, live_world.a.raw_key, chat("ok"),
                     **{"X-Forwarded-For": "203.0.113.8"})
        blocked_good = post(gateway.url, live_world.a.raw_key, chat("ok"),
                            **{"X-Forwarded-For": "203.0.113.7"})
    finally:
        gateway.stop()
    codes = [r.status_code for r in flood]
    assert codes[:6] == [401] * 6 and codes[6:] == [429, 429]
    assert flood[7].json()["error"]["code"] == "rate_limit_exceeded"
    assert int(flood[7].headers["retry-after"]) >= 1
    assert other.status_code == 200
    assert blocked_good.status_code == 429


def test_it_counts_bad_keys_on_the_models_endpoint_too(django_db_blocker, live_world):
    with django_db_blocker.unblock():
        gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL,
                                 "COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE": "3"})
    try:
        flood = [httpx.get(gateway.url + "/v1/models", timeout=30, headers={
            "Authorization": f"Bearer cog_{'y' * 38}", "X-Forwarded-For": "203.0.113.9"})
            for _ in range(6)]
        # The address is held to it on every endpoint, whichever it flooded.
        chat_after = post(gateway.url, live_world.a.raw_key, chat("ok"),
                          **{"X-Forwarded-For": "203.0.113.9"})
    finally:
        gateway.stop()
    # As on every endpoint: the failure over the limit is the last 401, then refusals.
    assert [r.status_code for r in flood] == [401] * 4 + [429] * 2
    assert flood[5].json()["error"]["code"] == "rate_limit_exceeded"
    assert chat_after.status_code == 429


def test_it_gives_back_the_slots_of_a_process_that_died(live_world, django_db_blocker,
                                                       fake_upstream):
    set_limits(live_world.a, concurrent_requests=2)
    lease = 10  # seconds: long enough that the next gateway starts before it runs out
    env = {**LIMITS_ENV, "COGNITUDE_LIMITS_LEASE_SECONDS": str(lease)}
    with django_db_blocker.unblock():
        doomed = start_gateway(env)

    def hold(i: int) -> None:
        with contextlib.suppress(httpx.HTTPError):  # its gateway is killed mid-stream
            post(doomed.url, live_world.a.raw_key,
                 chat(f"held {i} [[fault:chunk_delay_ms=1000]]", stream=True))

    holders = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for holder in holders:
        holder.start()
    try:
        wait_until(lambda: fake_upstream.stats()["in_flight"] >= 2, timeout=10,
                   what="both streams in flight")
        taken = time.monotonic()
        doomed.process.kill()  # no settlement: its two leases stay taken
        doomed.process.wait()
        with django_db_blocker.unblock():
            gateway = start_gateway(env)
    finally:
        for holder in holders:
            holder.join()
    try:
        assert time.monotonic() - taken < lease  # (else the check below proves nothing)
        assert post(gateway.url, live_world.a.raw_key, chat("blocked")).status_code == 429
        # The leases run out and the slots are free again.
        wait_until(lambda: post(gateway.url, live_world.a.raw_key,
                                chat("after")).status_code == 200,
                   timeout=lease + 5, interval=0.2, what="the slots back")
        assert time.monotonic() - taken >= lease - 1
    finally:
        gateway.stop()

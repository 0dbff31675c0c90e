"""The circuit breakers against a real Redis: open after N consecutive failures, one
probe when the cool-down is over, closed by its success; shared by processes (here two
Breakers on one Redis, as two gateways have); kept locally with Redis away; and no
Redis call on the healthy path."""

import asyncio
import time

import pytest

from fakeupstream.testing import free_port
from routing.breakers import REFRESH_SECONDS, Breakers
from routing.shared import SharedRedis
from tests.conftest import TEST_REDIS_URL
from tests.live import start_redis

KEY = "41:gpt-4o"
COOLDOWN = 0.4


@pytest.fixture(autouse=True)
def breaker_settings(settings):
    settings.COGNITUDE_BREAKER_FAILURES = 3
    settings.COGNITUDE_BREAKER_COOLDOWN_SECONDS = COOLDOWN


def run(coroutine_function):
    return asyncio.run(coroutine_function())


def test_it_opens_after_n_consecutive_failures(clean_redis):
    async def scenario():
        breakers = Breakers(SharedRedis(TEST_REDIS_URL))
        await breakers.failure(KEY)
        await breakers.failure(KEY)
        closed = breakers.is_blocked(KEY)
        await breakers.failure(KEY)
        return closed, breakers.is_blocked(KEY), breakers.reopens_in(KEY)

    closed_after_two, open_after_three, reopens_in = run(scenario)

    assert not closed_after_two
    assert open_after_three
    assert 0 < reopens_in <= COOLDOWN


def test_it_forgets_failures_after_a_success(clean_redis):
    async def scenario():
        breakers = Breakers(SharedRedis(TEST_REDIS_URL))
        for _ in range(2):
            await breakers.failure(KEY)
        await breakers.success(KEY)
        for _ in range(2):
            await breakers.failure(KEY)
        return breakers.is_blocked(KEY)

    assert not run(scenario)
    assert clean_redis.hget("cognitude:{breakers}", KEY).startswith(b"2 ")


def test_it_lets_one_probe_through_after_the_cool_down_and_closes_on_its_success(clean_redis):
    async def scenario():
        one, other = Breakers(SharedRedis(TEST_REDIS_URL)), Breakers(SharedRedis(TEST_REDIS_URL))
        for _ in range(3):
            await one.failure(KEY)
        await other.refresh()
        open_for_other = other.is_blocked(KEY)
        await asyncio.sleep(COOLDOWN)
        half_open = (not one.is_blocked(KEY), one.needs_probe(KEY))
        claims = (await one.claim_probe(KEY), await other.claim_probe(KEY))
        await one.success(KEY)
        await asyncio.sleep(REFRESH_SECONDS)
        await other.refresh()
        return open_for_other, half_open, claims, other.is_blocked(KEY), other.needs_probe(KEY)

    open_for_other, half_open, claims, blocked_after, probe_after = run(scenario)

    assert open_for_other  # seen by the other process
    assert half_open == (True, True)
    assert claims == (True, False)  # one probe among all processes
    assert (blocked_after, probe_after) == (False, False)
    assert clean_redis.hget("cognitude:{breakers}", KEY) is None


def test_it_opens_again_when_the_probe_fails(clean_redis):
    async def scenario():
        breakers = Breakers(SharedRedis(TEST_REDIS_URL))
        for _ in range(3):
            await breakers.failure(KEY)
        await asyncio.sleep(COOLDOWN)
        claimed = await breakers.claim_probe(KEY)
        await breakers.failure(KEY)
        return claimed, breakers.is_blocked(KEY), breakers.reopens_in(KEY)

    claimed, blocked, reopens_in = run(scenario)

    assert claimed and blocked
    assert reopens_in > COOLDOWN / 2


def test_it_counts_the_failures_of_every_process_together(clean_redis):
    async def scenario():
        one, other = Breakers(SharedRedis(TEST_REDIS_URL)), Breakers(SharedRedis(TEST_REDIS_URL))
        await one.failure(KEY)
        await other.failure(KEY)
        await one.failure(KEY)
        await other.refresh()
        return one.is_blocked(KEY), other.is_blocked(KEY)

    assert run(scenario) == (True, True)


def test_it_keeps_the_state_locally_when_redis_is_away(settings):
    settings.COGNITUDE_REDIS_TIMEOUT = 0.05
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario():
        breakers = Breakers(SharedRedis(dead))
        started = time.monotonic()
        for _ in range(3):
            await breakers.failure(KEY)
        await breakers.refresh()
        blocked = breakers.is_blocked(KEY)
        await asyncio.sleep(COOLDOWN)
        claimed = await breakers.claim_probe(KEY)
        await breakers.success(KEY)
        return blocked, claimed, breakers.is_blocked(KEY), time.monotonic() - started

    blocked, claimed, blocked_after, elapsed = run(scenario)

    assert blocked and claimed and not blocked_after
    # One refused connection, then Redis is left alone (no wait on every call).
    assert elapsed < COOLDOWN + 1.0


def test_it_makes_no_redis_call_per_request_on_the_healthy_path():
    redis = start_redis()
    try:
        async def scenario():
            breakers = Breakers(SharedRedis(redis.url))
            # What a request does on a healthy route: refresh if due, read, succeed.
            started = time.monotonic()
            for _ in range(3_000):
                await breakers.refresh()
                assert not breakers.is_blocked(KEY)
                await breakers.success(KEY)
                await asyncio.sleep(0.001)
            return time.monotonic() - started

        elapsed = run(scenario)
        import redis as redis_lib

        stats = redis_lib.Redis.from_url(redis.url).info("commandstats")
    finally:
        redis.stop()

    refreshes = stats.get("cmdstat_hgetall", {}).get("calls", 0)
    assert 1 <= refreshes <= elapsed / REFRESH_SECONDS + 1
    assert "cmdstat_hdel" not in stats and "cmdstat_evalsha" not in stats

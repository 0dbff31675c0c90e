"""The limits Redis going away: fail open (served, held to a per-process bound) or fail
closed (503), never a wait past the timeout; and back by itself."""

import os
import signal
import time

import httpx
import pytest

from ratelimit.services import limit_policy_set
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway, start_redis
from tests.ratelimit.helpers import ACTOR, chat, post, set_limits
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 0.5  # COGNITUDE_LIMITS_REDIS_TIMEOUT's default
BREAKER = 1.0
# A loaded 2-core machine's headroom over the timeout.
HEADROOM = 1.5


@pytest.fixture
def own_limits_redis(django_db_blocker):
    """A gateway whose limits Redis is a redis-server of this test's own."""
    server = start_redis()
    with django_db_blocker.unblock():
        gateway = start_gateway({
            "REDIS_URL": TEST_REDIS_URL,
            "COGNITUDE_LIMITS_REDIS_URL": server.url,
            "COGNITUDE_LIMITS_CACHE_SECONDS": "0.2",
            "COGNITUDE_REDIS_BREAKER_SECONDS": str(BREAKER),
        })
    yield gateway, server
    gateway.stop()
    server.stop()


def timed(url: str, key: str, content: str):
    started = time.monotonic()
    response = post(url, key, chat(content))
    return response, time.monotonic() - started


def test_it_fails_open_with_the_local_bound_when_redis_dies(own_limits_redis, live_world):
    gateway, server = own_limits_redis
    set_limits(live_world.a, requests_per_minute=3)
    before = [post(gateway.url, live_world.a.raw_key, chat(f"before {i}")).status_code
              for i in range(4)]
    assert before == [200, 200, 200, 429]

    server.stop()
    answers = [timed(gateway.url, live_world.a.raw_key, f"after {i}") for i in range(5)]
    # This process holds the limit by itself now: 3 a minute, from its own memory.
    assert [r.status_code for r, _ in answers] == [200, 200, 200, 429, 429]
    assert max(elapsed for _, elapsed in answers) < TIMEOUT + HEADROOM
    assert answers[3][0].json()["error"]["code"] == "rate_limit_exceeded"

    health = httpx.get(gateway.url + "/health", timeout=5).json()
    assert health["status"] == "degraded"
    assert health["limits"]["status"] == "unavailable"


def test_it_fails_closed_with_503_within_the_timeout(own_limits_redis, live_world):
    gateway, server = own_limits_redis
    set_limits(live_world.b, requests_per_minute=100)
    limit_policy_set(organization=live_world.b.org, fail_closed=True, actor=ACTOR)
    assert post(gateway.url, live_world.b.raw_key, chat("up")).status_code == 200

    server.stop()
    response, elapsed = timed(gateway.url, live_world.b.raw_key, "down")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "limits_unavailable"
    assert elapsed < TIMEOUT + HEADROOM
    # An organization with no limits never waits on the limits Redis at all.
    assert post(gateway.url, live_world.a.raw_key, chat("no limits")).status_code == 200


def test_it_fails_closed_once_the_block_a_miss_took_is_over(own_limits_redis, live_world):
    gateway, server = own_limits_redis
    # Far from these, a miss takes a block (tokens, slots) for the misses of the next
    # 0.1 s; they draw from it without Redis, but not past its time.
    set_limits(live_world.b, tokens_per_minute=10_000_000, concurrent_requests=5000)
    limit_policy_set(organization=live_world.b.org, fail_closed=True, actor=ACTOR)
    assert post(gateway.url, live_world.b.raw_key, chat("block")).status_code == 200

    server.stop()
    time.sleep(0.3)
    response, elapsed = timed(gateway.url, live_world.b.raw_key, "after the block")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "limits_unavailable"
    assert elapsed < TIMEOUT + HEADROOM


def test_it_answers_within_the_timeout_when_redis_hangs(own_limits_redis, live_world):
    gateway, server = own_limits_redis
    set_limits(live_world.b, requests_per_minute=100)
    limit_policy_set(organization=live_world.b.org, fail_closed=True, actor=ACTOR)
    assert post(gateway.url, live_world.b.raw_key, chat("up")).status_code == 200

    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        response, elapsed = timed(gateway.url, live_world.b.raw_key, "hung")
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert response.status_code == 503
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + HEADROOM


def test_it_goes_back_to_redis_when_it_returns(own_limits_redis, live_world):
    gateway, server = own_limits_redis
    set_limits(live_world.a, requests_per_minute=2)
    port = server.port
    server.stop()
    assert post(gateway.url, live_world.a.raw_key, chat("local")).status_code == 200

    revived = start_redis(port)
    try:
        # Once the breaker lets it try again, the shared counters are Redis's again:
        # the new (empty) server's, whose key appears.
        import redis as redis_lib

        shared = redis_lib.Redis(host="127.0.0.1", port=port)

        def counted() -> bool:
            post(gateway.url, live_world.a.raw_key, chat("back"))
            return bool(shared.keys("rl:*"))

        wait_until(counted, timeout=BREAKER + 5, interval=0.2, what="limits back in Redis")
    finally:
        revived.stop()

"""Redis dies, hangs and comes back: requests keep succeeding, quickly."""

import time

import httpx
import pytest
import redis

from tests.live import start_gateway, start_redis
from tests.proxy.helpers import ask, client_for, wait_for_entries

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_redis():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def gateway_on_own_redis(own_redis, live_world):
    gateway = start_gateway({"REDIS_URL": own_redis.url,
                             "COGNITUDE_REDIS_BREAKER_SECONDS": "1"})
    yield gateway
    gateway.stop()


def test_it_serves_from_postgres_while_redis_is_dead_and_recovers(
        gateway_on_own_redis, own_redis, live_world, fake_upstream):
    gateway = gateway_on_own_redis
    client = client_for(gateway.url, live_world.a.raw_key, timeout=5)
    ask(client, "survive redis")
    wait_for_entries(live_world.a.org, 1)
    port = own_redis.port

    own_redis.stop()
    upstream_before = fake_upstream.calls_with(live_world.a.provider_key)
    for _ in range(5):
        started = time.monotonic()
        _, headers = ask(client, "survive redis")
        assert headers["x-cognitude-cache"] == "HIT"
        assert headers["x-cognitude-cache-tier"] == "postgres"
        assert time.monotonic() - started < 0.5
    # A new question still reaches the provider.
    assert ask(client, "new while redis is down")[1]["x-cognitude-cache"] == "MISS"
    assert fake_upstream.calls_with(live_world.a.provider_key) == upstream_before + 1
    health = httpx.get(f"{gateway.url}/health", timeout=5).json()
    assert health["status"] == "degraded"
    assert health["redis"]["status"] == "unavailable"

    revived = start_redis(port)
    try:
        deadline = time.monotonic() + 5
        tier = None
        while time.monotonic() < deadline:
            tier = ask(client, "survive redis")[1]["x-cognitude-cache-tier"]
            if tier == "redis":
                break
            time.sleep(0.2)
        assert tier == "redis"
        assert httpx.get(f"{gateway.url}/health", timeout=5).json()["status"] == "healthy"
    finally:
        revived.stop()


def test_it_does_not_wait_on_a_paused_redis(gateway_on_own_redis, own_redis, live_world):
    client = client_for(gateway_on_own_redis.url, live_world.a.raw_key, timeout=5)
    ask(client, "paused redis")
    wait_for_entries(live_world.a.org, 1)

    control = redis.Redis(host="127.0.0.1", port=own_redis.port)
    control.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    try:
        durations = []
        for _ in range(5):
            started = time.monotonic()
            _, headers = ask(client, "paused redis")
            durations.append(time.monotonic() - started)
            assert headers["x-cognitude-cache"] == "HIT"
        # The first request pays one Redis timeout (100 ms) and the breaker spares the
        # rest; 1 s is headroom for a loaded machine, well short of the 3 s pause.
        assert max(durations) < 1.0, durations
    finally:
        control.execute_command("CLIENT", "UNPAUSE")
        control.close()

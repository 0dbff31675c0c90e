"""GET /health: the seed's fields, plus the database and the broker, answered quickly
whatever state those services are in."""

import json
import os
import re
import signal
import socket
import time
import tomllib
import urllib.error
import urllib.request

import pytest

from fakeupstream.testing import free_port
from tests.conftest import TEST_REDIS_URL
from tests.live import HOST, PROJECT_DIR, start_gateway, start_redis

PROJECT = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672//"

pytestmark = pytest.mark.django_db

# /health gives Redis and the broker 0.8 s each and answers within its 2 s promise; a
# loaded 2-core machine gets the difference as headroom.
PROBE_BOUND = 1.5


def timed_health(client) -> tuple[float, int, dict]:
    started = time.monotonic()
    response = client.get("/health")
    return time.monotonic() - started, response.status_code, response.json()


@pytest.fixture
def services(settings):
    """The real Redis, no broker (tasks inline): the default test setup."""
    settings.REDIS_URL = TEST_REDIS_URL
    settings.CELERY_BROKER_URL = ""
    return settings


def test_it_is_healthy_with_the_seeds_fields(client, services, redis_client):
    uptime_before = redis_client.info("server")["uptime_in_seconds"]
    response = client.get("/health")
    uptime_after = redis_client.info("server")["uptime_in_seconds"]

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "Cognitude LLM Proxy"
    # The release's version, as packaged: not a second number that drifts from it.
    assert body["version"] == PROJECT["version"]
    redis = body["redis"]
    assert redis["status"] == "healthy"
    # The numbers of the Redis the gateway uses, read from it, not placeholders.
    assert isinstance(redis["connected_clients"], int) and redis["connected_clients"] >= 1
    assert re.fullmatch(r"\d+(\.\d+)?[BKMG]", redis["used_memory_human"])
    assert uptime_before <= redis["uptime_in_seconds"] <= uptime_after
    assert body["database"] == {"status": "healthy", "engine": "postgresql"}
    assert body["broker"]["status"] == "embedded"


def test_it_is_healthy_on_embedded_defaults(client, settings):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = ""

    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["redis"]["status"] == "embedded"
    assert body["broker"]["status"] == "embedded"


def test_it_is_degraded_quickly_when_redis_dies(client, services):
    redis_server = start_redis()
    try:
        services.REDIS_URL = redis_server.url
        assert client.get("/health").json()["status"] == "healthy"
    finally:
        redis_server.stop()

    elapsed, status, body = timed_health(client)

    assert status == 200
    assert body["status"] == "degraded"
    assert body["redis"]["status"] == "unavailable"
    assert body["database"]["status"] == "healthy"
    assert elapsed < PROBE_BOUND


def test_it_is_degraded_quickly_when_redis_hangs(client, services):
    redis_server = start_redis()
    services.REDIS_URL = redis_server.url
    # A stopped process still completes TCP handshakes (the kernel does) but never
    # answers: the probe must give up on its own.
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        elapsed, status, body = timed_health(client)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        redis_server.stop()

    assert status == 200
    assert body["status"] == "degraded"
    assert body["redis"]["status"] == "unavailable"
    assert elapsed < PROBE_BOUND


def test_it_is_degraded_when_the_broker_is_down(client, services):
    services.CELERY_BROKER_URL = f"amqp://guest:guest@{HOST}:{free_port()}//"

    elapsed, status, body = timed_health(client)

    assert status == 200
    assert body["status"] == "degraded"
    assert body["broker"]["status"] == "unavailable"
    assert body["redis"]["status"] == "healthy"
    # A refused connection is known at once: no waiting for the probe's deadline.
    assert elapsed < 0.5


def test_it_is_degraded_quickly_when_the_broker_hangs(client, services):
    # A socket that listens but never accepts: connecting neither fails nor finishes.
    with socket.socket() as black_hole:
        black_hole.bind((HOST, 0))
        black_hole.listen(16)
        services.CELERY_BROKER_URL = f"amqp://guest:guest@{HOST}:{black_hole.getsockname()[1]}//"

        elapsed, status, body = timed_health(client)

    assert status == 200
    assert body["status"] == "degraded"
    assert body["broker"]["status"] == "unavailable"
    assert elapsed < PROBE_BOUND


def test_it_is_healthy_with_a_reachable_broker(client, services):
    services.CELERY_BROKER_URL = TEST_BROKER_URL

    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["broker"]["status"] == "healthy"
    assert body["status"] == "healthy"


def get_health_over_http(url: str) -> tuple[float, int, dict]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return time.monotonic() - started, status, json.loads(raw)


def assert_degraded_within_two_seconds(database_url: str) -> None:
    gateway = start_gateway({"DATABASE_URL": database_url, "REDIS_URL": TEST_REDIS_URL})
    try:
        elapsed, status, body = get_health_over_http(gateway.url)
    finally:
        gateway.stop()

    # Degraded, not unhealthy: the gateway serves the keys it knows without PostgreSQL.
    assert status == 200
    assert body["status"] == "degraded"
    assert body["service"] == "Cognitude LLM Proxy"
    assert body["database"]["status"] == "unavailable"
    assert body["redis"]["status"] == "healthy"
    assert elapsed < 2.0


def test_it_is_degraded_quickly_when_the_database_is_unreachable():
    assert_degraded_within_two_seconds(f"postgres://postgres@{HOST}:{free_port()}/x")


def test_it_is_degraded_quickly_when_the_database_hangs():
    # A socket that listens but never accepts: connecting neither fails nor finishes.
    with socket.socket() as black_hole:
        black_hole.bind((HOST, 0))
        black_hole.listen(16)
        port = black_hole.getsockname()[1]
        assert_degraded_within_two_seconds(f"postgres://postgres@{HOST}:{port}/x")

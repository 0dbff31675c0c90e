"""PostgreSQL stopped while traffic flows (a private cluster of the test's own, never
the machine's): keys seen lately keep working from memory, hits come from Redis,
misses go upstream, a key never seen gets a quick 503, /health says what is down; once
the database is back every answered request is recorded once, every new answer is in
the cold tier once, and a key revoked meanwhile is refused."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from analytics.models import RequestLog
from caching.models import CacheEntry
from organizations.models import ApiKey
from organizations.services import CreatedApiKey, api_key_create
from tests import live
from tests.conftest import TEST_REDIS_URL, World
from tests.live import Gateway, start_gateway
from tests.pgcluster import PgCluster, pg_cluster_create
from tests.workers import (
    CeleryProcess,
    proxy_to,
    start_worker,
    url_through,
    vhost_create,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

# How long the gateway trusts its memory of a key while the database answers.
KEY_CACHE_SECONDS = 1.0
# How long past that the hung-database test trusts it while the database is away.
STALE_SECONDS = 3.0


@dataclass
class Outage:
    cluster: PgCluster
    database_url: str
    gateway: Gateway
    worker: CeleryProcess
    admin: CreatedApiKey  # org A's, to revoke the other one
    doomed: CreatedApiKey  # org A's, revoked just before the database goes

    def rows(self, sql: str, params: list) -> list[tuple]:
        with psycopg.connect(self.database_url, connect_timeout=2) as connection:
            return connection.execute(sql, params).fetchall()


@pytest.fixture
def outage(live_world: World, tmp_path: Path) -> Iterator[Outage]:
    """A gateway and a worker on a private cluster holding a copy of the live world."""
    org = live_world.a.org
    admin = api_key_create(organization=org, name="admin", scope=ApiKey.Scope.ADMIN)
    doomed = api_key_create(organization=org, name="doomed")
    cluster = pg_cluster_create()
    vhost = vhost_create()
    worker = gateway = None
    try:
        url = cluster.copy_database(live.test_database_url(), "cog")
        worker = start_worker(vhost.url, {"DATABASE_URL": url})
        gateway = start_gateway({
            "DATABASE_URL": url,
            "REDIS_URL": TEST_REDIS_URL,
            "CELERY_BROKER_URL": vhost.url,
            "COGNITUDE_SPOOL_DIR": str(tmp_path),
            "COGNITUDE_API_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
        })
        yield Outage(cluster, url, gateway, worker, admin, doomed)
    finally:
        if gateway is not None:
            gateway.stop()
        if worker is not None:
            worker.kill()
        cluster.destroy()
        vhost.delete()


def chat(gateway: Gateway, raw_key: str, text: str) -> tuple[httpx.Response, float]:
    """One chat completion; the answer and how long it took (s)."""
    started = time.monotonic()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=orjson.dumps({"model": "gpt-4o-mini",
                              "messages": [{"role": "user", "content": text}]}),
        headers={"Authorization": f"Bearer {raw_key}"}, timeout=10)
    return response, time.monotonic() - started


@pytest.mark.xdist_group("broker")  # its worker needs RabbitMQ up (the broker tests stop it)
def test_it_serves_known_keys_through_a_database_outage_and_records_everything_once(
        outage: Outage, live_world: World) -> None:
    org, admin, doomed = live_world.a.org, outage.admin, outage.doomed
    known, stranger = live_world.a.raw_key, live_world.b.raw_key
    answered: list[str] = []

    def ok(raw_key: str, text: str, cache: str) -> float:
        response, took = chat(outage.gateway, raw_key, text)
        assert response.status_code == 200, response.text
        assert response.headers["x-cognitude-cache"] == cache
        answered.append(response.headers["x-request-id"])
        return took

    ok(known, "remembered", "MISS")
    ok(known, "remembered", "HIT")
    ok(doomed.raw_key, "doomed before", "MISS")
    # Revoked just before the database goes: the gateway cannot learn it until it is back.
    revoked = httpx.post(f"{outage.gateway.url}/api/keys/{doomed.api_key.pk}/revoke",
                         headers={"Authorization": f"Bearer {admin.raw_key}"}, timeout=5)
    assert revoked.status_code == 200, revoked.text

    outage.cluster.stop()
    time.sleep(KEY_CACHE_SECONDS + 0.1)  # past what the gateway trusts without asking
    timings = {
        "hit": ok(known, "remembered", "HIT"),
        "misses": [ok(known, f"new while down {i}", "MISS") for i in range(3)],
        "revoked, not yet known": ok(doomed.raw_key, "doomed during", "MISS"),
    }
    refused, took = chat(outage.gateway, stranger, "never seen")
    timings["never seen"] = took
    # Feedback is a write: it waits for no database either.
    feedback = httpx.post(f"{outage.gateway.url}/v1/feedback",
                          json={"request_id": answered[0], "rating": "up"},
                          headers={"Authorization": f"Bearer {known}"}, timeout=5)
    listed = httpx.get(f"{outage.gateway.url}/api/keys",
                       headers={"Authorization": f"Bearer {admin.raw_key}"}, timeout=5)
    stats = httpx.get(f"{outage.gateway.url}/cache/stats",
                      headers={"Authorization": f"Bearer {known}"}, timeout=5)
    started = time.monotonic()
    health = httpx.get(f"{outage.gateway.url}/health", timeout=5)
    timings["health"] = time.monotonic() - started
    print("during the outage:", timings, refused.status_code, refused.text,
          health.status_code, health.text)

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "database_unavailable"
    assert feedback.status_code == 503, feedback.text
    assert feedback.json()["error"]["code"] == "database_unavailable"
    assert listed.status_code == 503, listed.text  # the management API says so too
    assert listed.json()["error"]["code"] == "database_unavailable"
    assert stats.status_code == 503, stats.text  # and the cache endpoints
    assert stats.json()["error"]["code"] == "database_unavailable"
    assert int(stats.headers["retry-after"]) >= 1
    assert took < 1.0
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["database"]["status"] == "unavailable"
    assert timings["health"] < 2.0
    assert max(timings["misses"]) < 1.0 and timings["hit"] < 0.5

    outage.cluster.start()
    back = time.monotonic()
    table = RequestLog._meta.db_table

    def recorded() -> list[tuple]:
        return outage.rows(f"SELECT request_id, count(*) FROM {table} "
                           "WHERE request_id = ANY(%s) GROUP BY request_id", [answered])

    wait_until(lambda: len(recorded()) == len(answered), timeout=30,
               what="every answered request's record")
    print("records landed", time.monotonic() - back, "s after the database came back")
    assert all(count == 1 for _, count in recorded())
    # The worker retried its batches through the outage, and is still the same process.
    assert any("retry" in line.lower() for line in outage.worker.log)
    assert outage.worker.process.poll() is None

    def entries() -> list[tuple]:
        return outage.rows(f"SELECT key_hash, hits FROM {CacheEntry._meta.db_table} "
                           "WHERE organization_id = %s", [org.pk])

    # One entry per distinct question (six: their tasks retry on their own schedule);
    # the one asked three times was hit twice.
    wait_until(lambda: len(entries()) == 6, timeout=30, what="six cold-tier entries")
    assert sorted(hits for _, hits in entries()) == [0, 0, 0, 0, 0, 2]

    # The revocation is seen once the gateway may ask the database again.
    wait_until(lambda: chat(outage.gateway, doomed.raw_key, "doomed after")[0].status_code
               == 401, timeout=10, interval=0.2, what="the revoked key to be refused")
    print("revocation seen", time.monotonic() - back, "s after the database came back")
    response, _ = chat(outage.gateway, stranger, "never seen")
    assert response.status_code == 200, response.text


def test_it_waits_on_a_hung_database_once_per_breaker_window(live_world: World) -> None:
    # A database that takes connections and queries and never answers (a frozen proxy
    # in front of the test database): the worst case, where nothing is refused.
    database = proxy_to(live.test_database_url())
    gateway = start_gateway({
        "DATABASE_URL": url_through(live.test_database_url(), database),
        "REDIS_URL": TEST_REDIS_URL,
        "COGNITUDE_API_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
        "COGNITUDE_DATABASE_TIMEOUT": "0.5",
        "COGNITUDE_DATABASE_BREAKER_SECONDS": "5",
        "COGNITUDE_AUTH_STALE_SECONDS": str(STALE_SECONDS),
    })
    known = live_world.a.raw_key
    try:
        checked = time.monotonic()  # the key's last check, give or take its request
        for text in ("before", "before"):
            assert chat(gateway, known, text)[0].status_code == 200
        database.freeze()
        time.sleep(KEY_CACHE_SECONDS + 0.1)
        first, first_took = chat(gateway, known, "the one that waits")
        rest = [chat(gateway, known, f"after it {i}") for i in range(3)]
        stranger, stranger_took = chat(gateway, live_world.b.raw_key, "never seen")
        # Past the stale window the key's memory is too old to trust.
        time.sleep(max(0.0, checked + KEY_CACHE_SECONDS + STALE_SECONDS + 0.6
                       - time.monotonic()))
        too_old, _ = chat(gateway, known, "too long after")
    finally:
        database.thaw()
        gateway.stop()
        database.cut()
    print("hung database:", first_took, [took for _, took in rest], stranger_took)
    # The first request past the key's memory waits out the timeout, then is served
    # from memory; the breaker spares every later one the wait.
    assert first.status_code == 200, first.text
    assert 0.4 < first_took < 1.5
    assert all(response.status_code == 200 for response, _ in rest)
    assert max(took for _, took in rest) < 0.4
    assert stranger.status_code == 503, stranger.text
    assert stranger.json()["error"]["code"] == "database_unavailable"
    assert stranger.headers["retry-after"] == "5"
    assert stranger_took < 0.4
    assert too_old.status_code == 503, too_old.text

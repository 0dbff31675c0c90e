"""The event pipeline with the real broker and a real Celery worker: every request
becomes exactly one RequestLog row through broker outages, worker crashes, a database
that refuses connections, duplicate deliveries and shutdowns."""

import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from analytics.models import RequestLog
from analytics.spool import Batch, Spool, batch_new, batches_read
from analytics.tasks import request_logs_prune
from cognitude.celery import app
from fakeupstream.testing import free_port
from tests import live
from tests.analytics.test_metrics import scrape, value
from tests.conftest import TEST_REDIS_URL
from tests.live import HOST, Gateway, start_gateway
from tests.proxy.helpers import ask, client_for
from tests.workers import (
    CeleryProcess,
    broker_start,
    broker_stop,
    proxy_to,
    start_celery,
    start_worker,
    url_through,
    vhost_create,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

STORE = "analytics.tasks.request_logs_store"
# The fake upstream answers in milliseconds; a request that waited on the broker
# would take at least the publish timeout (COGNITUDE_PUBLISH_TIMEOUT, 1 s).
NORMAL_SECONDS = 0.9


@pytest.fixture
def vhost():
    created = vhost_create()
    yield created
    created.delete()


@pytest.fixture
def worker(vhost):
    started = start_worker(vhost.url)
    yield started
    started.kill()  # a warm shutdown takes seconds; the vhost and its queue go anyway


def pipeline_gateway(broker_url: str, spool_dir: Path, **env: str) -> Gateway:
    return start_gateway({
        "REDIS_URL": TEST_REDIS_URL,
        "CELERY_BROKER_URL": broker_url,
        "COGNITUDE_SPOOL_DIR": str(spool_dir),
        "COGNITUDE_SPOOL_RETRY_SECONDS": "0.2",
        **env,
    })


def send(client, text: str) -> str:
    """One request, which must succeed in normal time; returns its request id."""
    started = time.monotonic()
    _, headers = ask(client, text)
    assert time.monotonic() - started < NORMAL_SECONDS
    return headers["x-request-id"]


def wait_for_rows(request_ids: list[str], *, timeout: float) -> None:
    wait_until(lambda: RequestLog.objects.filter(request_id__in=request_ids).count()
               == len(request_ids), timeout=timeout, what=f"{len(request_ids)} rows")


def spooled(spool_dir: Path) -> list[Batch]:
    return [batch for path in spool_dir.glob("*.jsonl") for batch in batches_read(path)]


def successes(worker: CeleryProcess, task_id: str) -> int:
    return sum(f"{STORE}[{task_id}] succeeded" in line for line in worker.log)


def test_it_spools_while_the_broker_is_down_and_lands_every_event_once(
        live_world, vhost, worker, tmp_path):
    gateway = pipeline_gateway(vhost.url, tmp_path)
    client = client_for(gateway.url, live_world.a.raw_key)
    try:
        ids = [send(client, f"before the outage {i}") for i in range(3)]
        wait_for_rows(ids, timeout=10)
        broker_stop()
        try:
            ids += [send(client, f"during the outage {i}") for i in range(20)]
            wait_until(lambda: sum(len(b.events) for b in spooled(tmp_path)
                                   if b.kind == "request_log") == 20,
                       timeout=5, what="the outage's events in the spool")
            assert value(scrape(gateway.url), "cognitude_event_spool_depth") >= 20
        finally:
            broker_start()
        ids += [send(client, f"after the outage {i}") for i in range(3)]
        wait_for_rows(ids, timeout=30)
        wait_until(lambda: not spooled(tmp_path), timeout=5, what="the spool to empty")
    finally:
        gateway.stop()
    rows = RequestLog.objects.filter(organization=live_world.a.org)
    assert sorted(rows.values_list("request_id", flat=True)) == sorted(ids)


def test_it_spools_while_the_broker_hangs_and_lands_every_event_once(
        live_world, vhost, worker, tmp_path):
    broker = proxy_to(vhost.url)
    gateway = pipeline_gateway(url_through(vhost.url, broker), tmp_path)
    client = client_for(gateway.url, live_world.a.raw_key)
    try:
        ids = [send(client, f"before the hang {i}") for i in range(2)]
        wait_for_rows(ids, timeout=10)
        broker.freeze()  # connections open, nothing answered: the worst case for a client
        ids += [send(client, f"during the hang {i}") for i in range(10)]
        wait_until(lambda: sum(len(b.events) for b in spooled(tmp_path)
                               if b.kind == "request_log") == 10,
                   timeout=5, what="the hang's events in the spool")
        broker.thaw()
        wait_for_rows(ids, timeout=20)
        wait_until(lambda: not spooled(tmp_path), timeout=5, what="the spool to empty")
    finally:
        gateway.stop()
        broker.thaw()
        broker.cut()
    rows = RequestLog.objects.filter(organization=live_world.a.org)
    assert sorted(rows.values_list("request_id", flat=True)) == sorted(ids)


def test_it_redelivers_a_batch_whose_worker_was_killed(live_world, vhost, tmp_path):
    first = start_worker(vhost.url)
    gateway = pipeline_gateway(vhost.url, tmp_path)
    # The test holds a lock that makes the worker's INSERT wait: the batch is mid-flight.
    # (A second connection watches: pg_stat_activity is a snapshot within a transaction.)
    blocker = psycopg.connect(live.test_database_url())
    watcher = psycopg.connect(live.test_database_url(), autocommit=True)
    try:
        blocker.execute("LOCK TABLE analytics_requestlog IN SHARE ROW EXCLUSIVE MODE")
        client = client_for(gateway.url, live_world.a.raw_key)
        ids = [send(client, f"in flight {i}") for i in range(3)]
        waiting = wait_until(lambda: watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO \"analytics_requestlog\"%'").fetchall(),
            timeout=10, what="the worker's INSERT to wait on the lock")
        first.kill()
        # The killed worker's half-done INSERT must not be what lands the rows.
        for (pid,) in waiting:
            watcher.execute("SELECT pg_terminate_backend(%s)", [pid])
        second = start_worker(vhost.url)
        blocker.commit()
        try:
            wait_for_rows(ids, timeout=15)
        finally:
            second.kill()
    finally:
        blocker.close()
        watcher.close()
        gateway.stop()
        first.kill()
    assert RequestLog.objects.filter(organization=live_world.a.org).count() == 3


def test_it_loses_nothing_while_postgresql_refuses_the_worker(live_world, vhost, tmp_path):
    database = proxy_to(live.test_database_url())
    worker = start_worker(vhost.url,
                          {"DATABASE_URL": url_through(live.test_database_url(), database)})
    gateway = pipeline_gateway(vhost.url, tmp_path)
    client = client_for(gateway.url, live_world.a.raw_key)
    try:
        ids = [send(client, f"database up {i}") for i in range(2)]
        wait_for_rows(ids, timeout=10)
        database.cut()
        ids += [send(client, f"database down {i}") for i in range(5)]
        wait_until(lambda: any(f"{STORE}[" in line and "retry" in line.lower()
                               for line in worker.log),
                   timeout=10, what="the task to retry")
        time.sleep(2)  # a few seconds of refusals, retried with backoff
        database.restore()
        wait_for_rows(ids, timeout=30)
    finally:
        gateway.stop()
        worker.kill()
        database.cut()
    assert RequestLog.objects.filter(organization=live_world.a.org).count() == 7


def spool_requests(world, spool_dir: Path, count: int) -> tuple[list[str], Batch]:
    """Requests through a gateway whose broker never answers, stopped (SIGTERM) after
    them: their events stay in its spool file. Returns their ids and their batch."""
    dead_broker = f"amqp://guest:guest@{HOST}:{free_port()}//"
    gateway = pipeline_gateway(dead_broker, spool_dir, COGNITUDE_EVENT_FLUSH_SECONDS="30")
    try:
        client = client_for(gateway.url, world.a.raw_key)
        ids = [send(client, f"spooled {uuid.uuid4().hex}") for _ in range(count)]
    finally:
        gateway.stop()
    (batch,) = [b for b in spooled(spool_dir) if b.kind == "request_log"]
    assert sorted(e["request_id"] for e in batch.events) == sorted(ids)
    return ids, batch


def test_it_hands_a_dead_processs_spool_to_the_next_process(
        live_world, vhost, worker, tmp_path):
    ids, batch = spool_requests(live_world, tmp_path, 4)
    (orphan,) = tmp_path.glob("*.jsonl")
    copy = orphan.read_bytes()
    heir = pipeline_gateway(vhost.url, tmp_path)
    try:
        ids.append(send(client_for(heir.url, live_world.a.raw_key), "the heir's own"))
        wait_for_rows(ids, timeout=15)
        wait_until(lambda: successes(worker, batch.id) == 1, timeout=5, what="the batch")
        # A crash between publishing and rewriting the spool leaves the batch there to
        # be replayed again: delivered twice, stored once.
        (tmp_path / "crashed-1.jsonl").write_bytes(copy)
        wait_until(lambda: successes(worker, batch.id) == 2, timeout=15,
                   what="the batch delivered a second time")
    finally:
        heir.stop()
    assert not spooled(tmp_path)
    assert RequestLog.objects.filter(organization=live_world.a.org).count() == 5


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # this process
def test_it_stores_the_same_event_delivered_twice_once(live_world, vhost, worker, tmp_path):
    ids, batch = spool_requests(live_world, tmp_path, 2)
    task_ids = [uuid.uuid4().hex, uuid.uuid4().hex]
    with app.connection_for_write(vhost.url) as connection:
        for task_id in task_ids:
            app.send_task(STORE, args=[batch.events], task_id=task_id, connection=connection)
    wait_until(lambda: all(successes(worker, t) == 1 for t in task_ids), timeout=10,
               what="both deliveries")
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(ids)


def test_it_flushes_the_buffer_when_the_gateway_stops(live_world, vhost, worker, tmp_path):
    # Nothing flushes on its own within the test: only the shutdown can store these.
    gateway = pipeline_gateway(vhost.url, tmp_path, COGNITUDE_EVENT_FLUSH_SECONDS="60")
    client = client_for(gateway.url, live_world.a.raw_key)
    ids = [send(client, f"last words {i}") for i in range(5)]
    assert not RequestLog.objects.filter(request_id__in=ids).exists()
    gateway.stop()  # SIGTERM
    wait_for_rows(ids, timeout=10)
    assert not spooled(tmp_path)


def test_it_prunes_request_records_past_retention(world, settings):
    settings.COGNITUDE_REQUEST_LOG_RETENTION_DAYS = 30
    now = timezone.now()
    for request_id, age in (("old", 31), ("older", 400), ("recent", 29)):
        RequestLog.objects.create(
            request_id=request_id, organization=world.a.org, endpoint="chat/completions",
            cache_outcome="miss", status=200, latency_ms=1.0,
            created_at=now - timedelta(days=age),
        )
    assert request_logs_prune() == 2
    assert list(RequestLog.objects.values_list("request_id", flat=True)) == ["recent"]


def test_it_schedules_retention_in_beat():
    (entry,) = [e for e in app.conf.beat_schedule.values()
                if e["task"] == "analytics.tasks.request_logs_prune"]
    assert entry["task"] in app.tasks


def test_it_starts_beat_with_the_environment_alone(vhost):
    beat = start_celery(["beat"], {"CELERY_BROKER_URL": vhost.url,
                                   "DATABASE_URL": live.test_database_url(),
                                   "PATH": "/usr/bin:/bin"},
                        ready="beat: Starting")
    beat.kill()


def test_it_keeps_what_a_failed_replay_did_not_publish(tmp_path):
    spool = Spool(tmp_path)
    first, second, third = (batch_new("request_log", [{"n": n}]) for n in range(3))
    spool.append([first, second, third])
    published = []

    def broker_fails_on_the_second(batch: Batch) -> None:
        if batch.id == second.id:
            raise ConnectionError("the broker went away")
        published.append(batch.id)

    with pytest.raises(ConnectionError):
        spool.replay(broker_fails_on_the_second)
    assert published == [first.id]
    assert [b.id for b in batches_read(spool.path)] == [second.id, third.id]
    assert spool.events == 2

    spool.replay(lambda batch: published.append(batch.id))
    assert published == [first.id, second.id, third.id]
    assert not spool.path.exists() and spool.events == 0


def test_it_adopts_a_dead_processs_spool_without_its_torn_last_line(tmp_path):
    whole = batch_new("request_log", [{"n": 1}])
    (tmp_path / "otherhost-7.jsonl").write_bytes(whole.line() + whole.line()[:20])
    spool = Spool(tmp_path)
    spool.adopt_orphans()
    assert [b.id for b in batches_read(spool.path)] == [whole.id]
    assert list(tmp_path.glob("*.jsonl")) == [spool.path]


def test_it_adopts_a_spool_left_under_its_own_name_by_a_dead_process(tmp_path):
    spool = Spool(tmp_path)
    left = batch_new("request_log", [{"n": 1}])
    # A restarted container's process often gets the pid its predecessor had.
    spool.path.write_bytes(left.line())
    spool.adopt_orphans()
    assert [b.id for b in batches_read(spool.path)] == [left.id]
    assert len(spool) == 1 and spool.events == 1
    assert list(tmp_path.glob("*.jsonl")) == [spool.path]

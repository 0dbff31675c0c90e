"""The event pipeline with the real broker and a real Celery worker: every request
becomes exactly one RequestLog row through broker outages, worker crashes, a database
that refuses connections, duplicate deliveries, shutdowns and bad events; a spool is
replayed only into its own deployment's database."""

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from kombu import Connection

from analytics.models import RequestLog
from caching.models import CacheEntry
from cognitude.celery import app
from fakeupstream.testing import free_port
from pipeline.spool import Batch
from tests import live
from tests.analytics.test_metrics import scrape, value
from tests.live import HOST, Gateway
from tests.pipeline.helpers import (
    PUBLISH_TIMEOUT_SECONDS,
    STORE,
    pipeline_gateway,
    send,
    spooled,
    successes,
    wait_for_rows,
)
from tests.proxy.helpers import client_for, wait_for_entries
from tests.workers import (
    broker_start,
    broker_stop,
    proxy_to,
    start_worker,
    url_through,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
                   timeout=5 + 2 * PUBLISH_TIMEOUT_SECONDS, what="the hang's events in the spool")
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


def post_chat(gateway: Gateway, raw_key: str, body: dict) -> httpx.Response:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=orjson.dumps(body),
                          headers={"Authorization": f"Bearer {raw_key}"}, timeout=5)
    assert response.status_code == 200, response.text
    return response


def test_it_keeps_a_batch_whole_when_one_tenant_sends_a_nul(
        live_world, vhost, worker, tmp_path, redis_client):
    secret = f"tenant-secret-{uuid.uuid4().hex[:8]}"
    nul_content = {"model": "gpt-4o-mini",
                   "messages": [{"role": "user", "content": f"{secret}\u0000 erase them"}]}
    nul_model = {"model": "gpt-4o-mini\u0000x",
                 "messages": [{"role": "user", "content": f"{secret} by name"}]}
    # Flushed once, at shutdown: every event below travels in one batch of its kind.
    gateway = pipeline_gateway(vhost.url, tmp_path / "first", COGNITUDE_EVENT_FLUSH_SECONDS="60")
    try:
        innocent = client_for(gateway.url, live_world.b.raw_key)
        ids = [send(innocent, f"innocent {i}") for i in range(15)]
        answer = post_chat(gateway, live_world.a.raw_key, nul_content)
        named = post_chat(gateway, live_world.a.raw_key, nul_model)
        ids += [send(innocent, f"innocent {i}") for i in range(15, 30)]
    finally:
        gateway.stop()
    attacker_ids = [answer.headers["x-request-id"], named.headers["x-request-id"]]
    wait_for_rows(ids + attacker_ids, timeout=15)
    assert len(wait_for_entries(live_world.b.org, 30, timeout=10)) == 30
    assert len(wait_for_entries(live_world.a.org, 2, timeout=10)) == 2
    assert (RequestLog.objects.get(request_id=attacker_ids[1]).model_requested
            == "gpt-4o-mini\ufffdx")
    assert CacheEntry.objects.filter(organization=live_world.a.org,
                                     model="gpt-4o-mini\ufffdx").exists()
    assert secret not in "".join(worker.log)

    # From the cold tier, the answer is the upstream's bytes, NUL and all.
    redis_client.flushdb()
    again = pipeline_gateway(vhost.url, tmp_path / "again")
    try:
        hit = post_chat(again, live_world.a.raw_key, nul_content)
    finally:
        again.stop()
    assert hit.headers["x-cognitude-cache-tier"] == "postgres"
    assert hit.content == answer.content
    assert b"\\u0000" in hit.content


def test_it_keeps_event_contents_out_of_what_the_worker_logs_of_a_task(
        live_world, vhost, tmp_path):
    secret = f"tenant-secret-{uuid.uuid4().hex[:8]}"
    gateway = pipeline_gateway(vhost.url, tmp_path)  # no worker: the batches stay queued
    try:
        send(client_for(gateway.url, live_world.a.raw_key), secret)
    finally:
        gateway.stop()
    with Connection(vhost.url) as connection:
        channel = connection.default_channel
        messages = [channel.basic_get(queue="celery", no_ack=True) for _ in range(2)]
    by_task = {m.headers["task"]: m for m in messages if m is not None}
    assert set(by_task) == {STORE, "caching.tasks.cache_entries_store"}
    entries = by_task["caching.tasks.cache_entries_store"]
    assert secret.encode() in entries.body  # the task gets the events...
    # ...and the worker's logs, events and monitoring show only this for its arguments.
    assert entries.headers["argsrepr"] == "(1 cache_entry events)"
    assert by_task[STORE].headers["argsrepr"] == "(1 request_log events)"


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


@dataclass
class Deployment:
    """Another deployment's database: migrated from nothing, so with an identity of its
    own, and an organization of its own."""

    url: str
    raw_key: str

    def records(self) -> int:
        with psycopg.connect(self.url) as connection:
            return connection.execute("SELECT count(*) FROM analytics_requestlog").fetchone()[0]


@pytest.fixture
def other_deployment(live_world, fake_upstream):
    name = f"{live.test_database_url().rpartition('/')[2]}_other_{uuid.uuid4().hex[:8]}"
    admin = live.test_database_url().rpartition("/")[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = live.test_database_url().rpartition("/")[0] + f"/{name}"
    env = {**os.environ, "DATABASE_URL": url, "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "true"}
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=live.PROJECT_DIR,
                       env=env, check=True, timeout=120)
        # Its organization has the id that org A has here: somebody else all the same.
        made = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from organizations.models import Organization\n"
             "from organizations.services import api_key_create, provider_credential_set\n"
             f"org = Organization.objects.create(pk={live_world.a.org.pk}, name='Other', "
             "slug='other')\n"
             "provider_credential_set(organization=org, kind='openai', "
             f"base_url='{fake_upstream.api_base}', api_key='sk-other')\n"
             "print(api_key_create(organization=org, name='k').raw_key)"],
            cwd=live.PROJECT_DIR, env=env, check=True, timeout=60, capture_output=True,
            text=True)
        yield Deployment(url, made.stdout.split()[-1])
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_it_replays_a_spool_only_into_the_database_it_was_written_for(
        live_world, other_deployment, vhost, worker, tmp_path):
    ids, _ = spool_requests(live_world, tmp_path, 3)
    (orphan,) = tmp_path.glob("*.jsonl")
    content = orphan.read_bytes()
    # A process of the other deployment given this spool directory (a shared volume, a
    # copied disk): tasks inline, into its own database.
    stranger = pipeline_gateway("", tmp_path, DATABASE_URL=other_deployment.url)
    try:
        send(client_for(stranger.url, other_deployment.raw_key), "the stranger's own")
        wait_until(lambda: other_deployment.records() == 1, timeout=10,
                   what="the stranger's own record")
        time.sleep(0.5)  # ten flushes, each of which would have adopted the orphan
    finally:
        stranger.stop()
    assert other_deployment.records() == 1
    assert orphan.read_bytes() == content

    heir = pipeline_gateway(vhost.url, tmp_path)  # this deployment's: it replays them
    try:
        ids.append(send(client_for(heir.url, live_world.a.raw_key), "the heir's own"))
        wait_for_rows(ids, timeout=15)
    finally:
        heir.stop()
    assert not spooled(tmp_path)


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

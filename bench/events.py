"""Pipeline benchmark: how many request events a Celery worker writes into PostgreSQL.

    .venv/bin/python bench/events.py [--events N] [--pool prefork|threads|solo] [--concurrency C]

Publishes N request events in batches of 500 through the real broker, with the
gateway's own Publisher, to a worker this script starts (`celery -A cognitude worker`),
and times until every row exists. The broker is a throwaway RabbitMQ vhost made with
rabbitmqctl (so no other worker on this machine takes the messages), unless
CELERY_BROKER_URL names one. DATABASE_URL defaults to the cognitude_bench database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from run import ensure_database  # noqa: E402 (bench/ is on the path as a script)

DATABASE_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/cognitude_bench"
RABBITMQ_DEFAULT = "amqp://guest:guest@127.0.0.1:5672/"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def start_worker(env: dict[str, str], pool: str, concurrency: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cognitude", "worker", "-P", pool,
         "-c", str(concurrency), "--loglevel", "INFO", "-n", f"bench-{uuid.uuid4().hex[:8]}@%h",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            if " ready." in line:
                ready.set()
            if "ERROR" in line or "Traceback" in line:
                print("worker:", line, end="", file=sys.stderr)

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(30):
        process.kill()
        raise SystemExit("the worker did not start")
    return process


def events_for(org_id: int, api_key_id: int, count: int) -> list:
    """Request events as the gateway emits them (proxy.record.Record.emit)."""
    from analytics.events import RequestEvent
    from caching.outcomes import CacheOutcome

    now = time.time()
    return [RequestEvent(
        request_id=uuid.uuid4().hex, org_id=org_id, api_key_id=api_key_id,
        endpoint="chat/completions", model_requested="gpt-4o-mini",
        model_used="gpt-4o-mini", provider="openai", cache_outcome=CacheOutcome.MISS,
        cache_bypassed=False, cache_key=uuid.uuid4().hex * 2, status=200,
        error_type="", prompt_tokens=20, completion_tokens=12, latency_ms=3.2,
        upstream_latency_ms=2.9, streamed=False, created_at=now,
    ) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    os.environ.setdefault("DATABASE_URL", DATABASE_URL_DEFAULT)
    vhost = None
    if not os.environ.get("CELERY_BROKER_URL"):
        vhost = f"cognitude-bench-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        parts = urlsplit(RABBITMQ_DEFAULT)
        os.environ["CELERY_BROKER_URL"] = urlunsplit((*parts[:2], "/" + vhost, "", ""))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")
    ensure_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command

    from analytics.events import RequestEvent
    from analytics.models import RequestLog
    from organizations.services import api_key_create, organization_create
    from pipeline.buffer import MAX_BATCH, Publisher
    from pipeline.spool import batch_new

    call_command("migrate", verbosity=0)
    org = organization_create(name=f"events bench {uuid.uuid4().hex[:6]}")
    api_key = api_key_create(organization=org, name="bench").api_key
    worker = start_worker(dict(os.environ), args.pool, args.concurrency)
    try:
        events = events_for(org.id, api_key.id, args.events)
        publisher = Publisher(timeout=1.0)
        started = time.perf_counter()
        for start in range(0, len(events), MAX_BATCH):
            publisher.publish(batch_new(RequestEvent.KIND, events[start:start + MAX_BATCH]))
        published = time.perf_counter() - started
        rows = RequestLog.objects.filter(organization=org)
        while (stored := rows.count()) < args.events:
            if time.perf_counter() - started > 300:
                raise SystemExit(f"only {stored} of {args.events} rows after 300 s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        publisher.close()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if vhost:
            rabbitmqctl("delete_vhost", vhost)
    print(f"published {args.events} events in {published:.2f} s "
          f"({args.events / published:,.0f}/s)")
    print(f"all {args.events} rows in PostgreSQL after {elapsed:.2f} s: "
          f"{args.events / elapsed:,.0f} events/s "
          f"(worker: -P {args.pool} -c {args.concurrency})")
    RequestLog.objects.filter(organization=org).delete()
    org.delete()


if __name__ == "__main__":
    main()

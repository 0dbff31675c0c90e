"""Driving the event pipeline from tests: gateways with a broker and a spool of their
own, and what they left behind."""

import time
from pathlib import Path

from analytics.models import RequestLog
from pipeline.spool import Batch, batches_read
from tests.conftest import TEST_REDIS_URL
from tests.live import Gateway, start_gateway
from tests.proxy.helpers import ask
from tests.workers import CeleryProcess, wait_until

STORE = "analytics.tasks.request_logs_store"
# A request that waited on the broker would take at least the publish timeout, which
# these gateways set well above what a request takes on a loaded machine (a fresh
# gateway's first request took over 0.9 s on a CI run, with the default 1 s timeout).
PUBLISH_TIMEOUT_SECONDS = 3.0
NORMAL_SECONDS = 2.0


def pipeline_gateway(broker_url: str, spool_dir: Path, **env: str) -> Gateway:
    return start_gateway({
        "REDIS_URL": TEST_REDIS_URL,
        "CELERY_BROKER_URL": broker_url,
        "COGNITUDE_SPOOL_DIR": str(spool_dir),
        "COGNITUDE_SPOOL_RETRY_SECONDS": "0.2",
        "COGNITUDE_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT_SECONDS),
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

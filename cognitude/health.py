"""GET /health: the seed's shape, plus the database and the broker.

Each probe runs in its own thread with a deadline, so a hung service makes the
answer `degraded`, never slow.
"""

import threading
import time
from concurrent.futures import Future

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection

from caching.health import hot_tier_health
from ratelimit.health import limits_health


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"status": "healthy", "engine": connection.vendor}
    finally:
        connection.close()  # this thread's own connection; the thread ends now


def _broker() -> dict:
    if not settings.CELERY_BROKER_URL:
        return {"status": "embedded", "detail": "tasks run inline (CELERY_BROKER_URL not set)"}
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as broker:
        # One attempt: kombu sleeps 2 s (interval_start) before any retry.
        broker.ensure_connection(max_retries=0, timeout=1)
        return {"status": "healthy", "transport": broker.transport_cls}


def _start(fn) -> Future:
    # A thread per probe, not a pool: a hung service must not starve later probes.
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_result({"status": "unavailable", "error": type(exc).__name__})

    threading.Thread(target=run, daemon=True).start()
    return future


def _wait(future: Future, until: float) -> dict:
    try:
        return future.result(timeout=max(0.0, until - time.monotonic()))
    except TimeoutError:
        return {"status": "unavailable", "error": "timeout"}


def health(request: HttpRequest) -> JsonResponse:
    started = time.monotonic()
    database, redis, broker = _start(_database), _start(hot_tier_health), _start(_broker)
    limits = _start(limits_health)
    parts = {
        "redis": _wait(redis, started + 0.8),
        "broker": _wait(broker, started + 0.8),
        "limits": _wait(limits, started + 0.8),
        "database": _wait(database, started + 1.5),
    }
    # The gateway serves without any one of them (PostgreSQL down: keys it knows, hits
    # and misses; README "PostgreSQL down"), so none makes it unhealthy: a load balancer
    # taking every process out because the shared database blinked would turn a
    # degraded service into none.
    if any(parts[name]["status"] == "unavailable" for name in parts):
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    return JsonResponse({
        "status": status,
        "service": "Cognitude LLM Proxy",
        "version": settings.COGNITUDE_VERSION,
        **parts,
    }, status=code)

"""The event buffer: the request path hands events here and returns at once.

`emit()` is a deque append (thread-safe, microseconds, never blocks). A background
thread drains the buffer every COGNITUDE_EVENT_FLUSH_SECONDS (sooner when a batch
fills) and hands each kind's batch to its Celery task. Under the embedded defaults
the tasks run inline in that thread, so the request path never waits for a database.
"""

import atexit
import logging
import threading
from collections import deque
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger("cognitude.analytics")

# Event kind -> the Celery task that stores a batch of them.
TASKS: dict[str, str] = {
    "cache_entry": "caching.tasks.cache_entries_store",
    "cache_hit": "caching.tasks.cache_hits_record",
    "request_log": "analytics.tasks.request_logs_store",
}

MAX_BATCH = 500


class EventBuffer:
    def __init__(self, *, flush_seconds: float) -> None:
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._flush_seconds = flush_seconds
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def emit(self, kind: str, event: dict[str, Any]) -> None:
        self._events.append((kind, event))
        if self._thread is None:
            self._start()
        if len(self._events) >= MAX_BATCH:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="event-flusher", daemon=True
                )
                self._thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send everything buffered now (called by the flusher and at shutdown)."""
        with self._lock:
            batches: dict[str, list[dict[str, Any]]] = {}
            while self._events:
                kind, event = self._events.popleft()
                batches.setdefault(kind, []).append(event)
            for kind, events in batches.items():
                for start in range(0, len(events), MAX_BATCH):
                    self._send(kind, events[start:start + MAX_BATCH])

    def _send(self, kind: str, events: list[dict[str, Any]]) -> None:
        try:
            import_string(TASKS[kind]).delay(events)
        except Exception:
            logger.exception("could not hand %d %s event(s) to their task", len(events), kind)

    def __len__(self) -> int:
        return len(self._events)


buffer = EventBuffer(flush_seconds=settings.COGNITUDE_EVENT_FLUSH_SECONDS)


def emit(kind: str, event: dict[str, Any]) -> None:
    buffer.emit(kind, event)

"""The event buffer: the request path hands events here and returns at once.

`emit(event)` is a deque append (thread-safe, microseconds, never blocks). A background
thread drains the buffer every COGNITUDE_EVENT_FLUSH_SECONDS (sooner when a batch
fills) and publishes each kind's batch to the Celery task registered for it
(pipeline.registry), with short timeouts. A batch the broker does not confirm goes to
the local spool (pipeline/spool.py) and is replayed, in order, when the broker takes
messages again. Under the embedded defaults the tasks run inline in that thread, so the
request path never waits for a database.

The flusher also shows each kind's observer (its app's metrics) the events it sends, so
the request path pays nothing for them.
"""

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from amqp.exceptions import MessageNacked
from celery import Task
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils.module_loading import import_string
from kombu import Connection
from kombu.exceptions import OperationalError as KombuOperationalError

from cognitude.celery import app
from pipeline import metrics, registry
from pipeline.services import database_identity_get
from pipeline.spool import Batch, Spool, batch_new

logger = logging.getLogger("cognitude.pipeline")

MAX_BATCH = 2000


def _transport_options(timeout: float) -> dict[str, Any]:
    """Bound every wait on the broker. Celery's defaults block delay() for 20-100 s on a
    hung broker; these make a publish give up after about `timeout` instead."""
    options: dict[str, Any] = {"max_retries": 0, "connect_retries_timeout": timeout}
    if app.conf.broker_url.startswith(("redis", "rediss")):
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    else:
        # confirm_publish: the broker acknowledges each message once it has it (on disk,
        # for a durable queue); without it a message in a dying broker's socket
        # buffer is lost and we would never know.
        options.update(confirm_publish=True, read_timeout=timeout, write_timeout=timeout)
    return options


class BrokerUnavailable(Exception):
    """The broker did not take a batch in time: down, hung, or refusing it."""


class Publisher:
    """Hands batches to their tasks through the broker, on a connection of its own."""

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._connection: Connection | None = None

    def publish(self, batch: Batch) -> None:
        """Return once the broker has the batch; raise BrokerUnavailable if it does not
        take it in time. Under the embedded defaults the task runs here and now, and
        its own exceptions propagate."""
        task = import_string(registry.kind_named(batch.kind).task)
        if app.conf.task_always_eager:
            # As a worker would receive them: serialised, not the objects themselves.
            task.apply_async((orjson.loads(orjson.dumps(batch.events)),), task_id=batch.id)
            return
        fresh = self._connection is None
        try:
            self._send(task, batch)
        except BrokerUnavailable:
            if fresh:
                raise
            # A connection kept from an earlier flush may have gone stale (broker
            # restarted, idle TCP dropped): one more try on a new one.
            self._send(task, batch)

    def _send(self, task: Task, batch: Batch) -> None:
        if self._connection is None:
            self._connection = app.connection_for_write(
                connect_timeout=self._timeout, heartbeat=0,
                transport_options=_transport_options(self._timeout),
            )
        broker_errors = (KombuOperationalError, OSError, MessageNacked,
                         *self._connection.connection_errors,
                         *self._connection.channel_errors)
        try:
            task.apply_async((batch.events,), task_id=batch.id, connection=self._connection,
                             retry=False, timeout=self._timeout,
                             confirm_timeout=self._timeout,
                             # What the worker's logs and monitoring show for the
                             # arguments: the events hold tenants' content.
                             argsrepr=f"({len(batch.events)} {batch.kind} events)")
        except broker_errors as exc:
            self.close()
            raise BrokerUnavailable(str(exc)) from exc

    def close(self) -> None:
        """Let go of the connection without a word to the broker: a hung broker would
        keep a polite close() waiting for its answer."""
        if self._connection is not None:
            self._connection.collect()
            self._connection = None


class EventBuffer:
    """The events of this process on their way to the broker, and the thread that sends
    them. `flush()` is the one place batches leave: published, or spooled."""

    def __init__(self, *, flush_seconds: float, retry_seconds: float, publisher: Publisher,
                 spool: Spool, database_identity: Callable[[], str]) -> None:
        self._events: deque[Any] = deque()
        self._database_identity = database_identity
        self._identity_failed = False  # said once, not at every flush
        self._flush_seconds = flush_seconds
        self._retry_seconds = retry_seconds
        self._publisher = publisher
        self._spool = spool
        # Until then, batches go straight to the spool: the broker failed recently and
        # each try against a hung one costs the flusher a publish timeout.
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def emit(self, event: Any) -> None:
        self._events.append(event)
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
            try:
                self.flush()
            except Exception:  # the flusher must outlive any one bad flush
                logger.exception("the event flush failed")

    def flush(self) -> None:
        """Publish or spool everything buffered now (the flusher, and at shutdown)."""
        with self._lock:
            metrics.buffer_depth(len(self._events))
            batches = self._drain()
            if self._spool.database is None:
                self._identify()
            if time.monotonic() >= self._retry_at:
                self._spool.adopt_orphans()
                self._replay()
            if len(self._spool) or time.monotonic() < self._retry_at:
                self._spool_batches(batches)  # behind the spooled ones, to keep the order
            else:
                self._publish(batches)
            metrics.spool_depth(self._spool.events)

    def _identify(self) -> None:
        """Learn which database this process writes to, once: the spool stamps its lines
        with it and adopts only files of the same one. Here, in the flusher, so that no
        request waits on it; tried again each flush while the database is unreachable."""
        try:
            self._spool.database = self._database_identity()
        except DatabaseError:
            if not self._identity_failed:
                logger.warning("could not read the database identity; the spool adopts "
                               "no other process's file until it can", exc_info=True)
            self._identity_failed = True
        finally:
            # Unless the tasks run inline here, this thread has no other use for it.
            connection.close()

    def _drain(self) -> list[Batch]:
        by_type: dict[type, list[Any]] = {}
        while self._events:
            event = self._events.popleft()
            by_type.setdefault(type(event), []).append(event)
        batches = []
        for event_type, events in by_type.items():
            kind = registry.kind_of(event_type)
            if kind.observe is not None:
                kind.observe(events)
            batches += [batch_new(kind.name, events[start:start + MAX_BATCH])
                        for start in range(0, len(events), MAX_BATCH)]
        return batches

    def _replay(self) -> None:
        if not len(self._spool):
            return
        try:
            self._spool.replay(self._deliver)
        except BrokerUnavailable:
            self._broker_failed(len(self._spool))
        else:
            logger.info("replayed the event spool")

    def _publish(self, batches: list[Batch]) -> None:
        for done, batch in enumerate(batches):
            try:
                self._deliver(batch)
            except BrokerUnavailable:
                self._broker_failed(len(batches) - done)
                self._spool_batches(batches[done:])
                return

    def _deliver(self, batch: Batch) -> None:
        """Publish one batch; raise BrokerUnavailable when it should wait in the spool.

        Any other failure is this batch's alone (under the embedded defaults, its task
        failing inline): it is logged and dropped, never left to block the batches
        behind it in the spool forever."""
        try:
            self._publisher.publish(batch)
        except BrokerUnavailable:
            raise
        except Exception:
            logger.exception("dropped %d %s event(s): their task failed",
                             len(batch.events), batch.kind)
            metrics.events_dropped(batch.kind, len(batch.events))
        else:
            metrics.events_published(batch.kind, len(batch.events))

    def _broker_failed(self, pending: int) -> None:
        logger.warning("the broker did not take %d event batch(es); spooling until it does",
                       pending, exc_info=True)
        self._retry_at = time.monotonic() + self._retry_seconds

    def _spool_batches(self, batches: list[Batch]) -> None:
        self._spool.append(batches)
        for batch in batches:
            metrics.events_spooled(batch.kind, len(batch.events))

    def __len__(self) -> int:
        return len(self._events)


buffer = EventBuffer(
    flush_seconds=settings.COGNITUDE_EVENT_FLUSH_SECONDS,
    retry_seconds=settings.COGNITUDE_SPOOL_RETRY_SECONDS,
    publisher=Publisher(timeout=settings.COGNITUDE_PUBLISH_TIMEOUT),
    spool=Spool(settings.COGNITUDE_SPOOL_DIR),
    database_identity=database_identity_get,
)


def emit(event: Any) -> None:
    """Hand an event of a registered kind to the pipeline; returns at once."""
    buffer.emit(event)

"""Prometheus metrics of the event pipeline: the buffer, the spool, the publishing, and
what the tasks stored or set aside. (The /metrics view serves them with the others.)"""

from prometheus_client import Counter, Gauge

from pipeline import registry

BUFFER_DEPTH = Gauge("cognitude_event_buffer_depth",
                     "Events waiting in the in-process buffer at the last flush",
                     multiprocess_mode="livesum")
SPOOL_DEPTH = Gauge("cognitude_event_spool_depth",
                    "Events in the local spool, waiting for the broker",
                    multiprocess_mode="livesum")
EVENTS_PUBLISHED = Counter("cognitude_events_published", "Events handed to the broker",
                           ["kind"])
EVENTS_SPOOLED = Counter("cognitude_events_spooled",
                         "Events written to the local spool because the broker did not take them",
                         ["kind"])
EVENTS_DROPPED = Counter("cognitude_events_dropped",
                         "Events given up on: their batch could not be stored (see the log)",
                         ["kind"])
EVENTS_WRITTEN = Counter("cognitude_events_written",
                         "Events stored by the pipeline's tasks (a redelivered event counts "
                         "again; its row does not repeat)", ["task"])
EVENTS_DEAD_LETTERED = Counter(
    "cognitude_events_dead_lettered",
    "Events set aside as dead letters: their task could not store them (see the admin)",
    ["kind"])


def buffer_depth(events: int) -> None:
    BUFFER_DEPTH.set(events)


def spool_depth(events: int) -> None:
    SPOOL_DEPTH.set(events)


def events_published(kind: str, count: int) -> None:
    EVENTS_PUBLISHED.labels(kind).inc(count)


def events_spooled(kind: str, count: int) -> None:
    EVENTS_SPOOLED.labels(kind).inc(count)


def events_dropped(kind: str, count: int) -> None:
    EVENTS_DROPPED.labels(kind).inc(count)


def events_dead_lettered(kind: str, count: int) -> None:
    EVENTS_DEAD_LETTERED.labels(kind).inc(count)


def count_written(sender, result, **kwargs) -> None:
    """Celery's task_success: the pipeline's tasks return how many events they stored.
    Counted in the process that ran them (the worker, or the web process under the
    embedded defaults)."""
    if sender.name in registry.tasks() and isinstance(result, int):
        EVENTS_WRITTEN.labels(sender.name).inc(result)

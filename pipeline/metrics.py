"""Prometheus metrics of the event pipeline."""

from prometheus_client import Counter

EVENTS_DEAD_LETTERED = Counter(
    "cognitude_events_dead_lettered",
    "Events set aside as dead letters: their task could not store them (see the admin)",
    ["kind"])


def events_dead_lettered(kind: str, count: int) -> None:
    EVENTS_DEAD_LETTERED.labels(kind).inc(count)

"""Which task consumes each kind of event. Each app registers its own kinds from its
AppConfig.ready(), so that the pipeline names no app:

    register(RequestEvent, task="analytics.tasks.request_logs_store")

An event class names its kind in `KIND`, the name written down with its events (spool
lines, metrics' labels, dead letters), so that it outlives a renamed class. `observe`,
if given, sees every batch of the kind as it leaves the process (in the flusher thread,
off the request path).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    event: type
    task: str  # the dotted path of the Celery task that stores a batch
    observe: Callable[[Sequence[Any]], None] | None = None


_by_event: dict[type, Kind] = {}
_by_name: dict[str, Kind] = {}


def register(event: type, *, task: str,
             observe: Callable[[Sequence[Any]], None] | None = None) -> None:
    registered = Kind(event.KIND, event, task, observe)
    if _by_name.get(registered.name, registered) != registered:
        raise ValueError(f"event kind {registered.name!r} is registered twice")
    _by_event[event] = _by_name[registered.name] = registered


def kind_of(event_type: type) -> Kind:
    return _by_event[event_type]


def kind_named(name: str) -> Kind:
    return _by_name[name]


def tasks() -> frozenset[str]:
    """The tasks that store events."""
    return frozenset(kind.task for kind in _by_name.values())

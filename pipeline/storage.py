"""How the pipeline's tasks read and write a batch: never failing it as a whole for one
bad event.

A batch holds many organizations' events. One malformed event (a broken producer) or
one the database refuses (a value it cannot hold, a row that breaks a constraint) must
not cost the others their rows: `events_load` sets aside what does not load, and
`batch_store` writes the batch and, when that fails for such a reason, each half on its
own, down to the events that fail alone, which it sets aside. Set aside means kept as a
dead letter (pipeline.models.DeadLetter), counted in /metrics and logged without the
event's content.
"""

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
from django.db import DataError, IntegrityError, transaction

from pipeline import metrics
from pipeline.models import DeadLetter

logger = logging.getLogger("cognitude.pipeline")

E = TypeVar("E")

# What one event can cause. A database that is unreachable (OperationalError) is not
# the event's fault: it propagates, and the task retries the batch.
_EVENT_ERRORS = (DataError, IntegrityError, KeyError, TypeError, ValueError)

# PostgreSQL's text and jsonb cannot hold NUL; JSON and Python strings can, so a client
# may send it. It is stored as U+FFFD, the character for "there was something here".
_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def storable_text(value: str) -> str:
    """`value` as a text column can hold it."""
    return value.replace(_NUL, _REPLACEMENT) if _NUL in value else value


def storable_json(value: Any) -> Any:
    """`value` (parsed JSON) as a jsonb column can hold it: NUL replaced in every string
    and every key."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    if isinstance(value, dict):
        return {storable_text(key): storable_json(item) for key, item in value.items()}
    return value


def events_load(event_type: type[E], events: Iterable[dict[str, Any]]) -> list[E]:
    """The events of a delivered batch (their serialised fields) as `event_type`, by
    its `from_wire`; those that do not load are set aside."""
    loaded = []
    for data in events:
        try:
            loaded.append(event_type.from_wire(data))
        except (KeyError, TypeError, ValueError) as exc:
            _set_aside(event_type.KIND, data, exc)
    return loaded


def batch_store(*, kind: str, events: Sequence[E], store: Callable[[Sequence[E]], int]) -> int:
    """`store(events)` in a transaction, returning what it returns (rows written); if an
    event makes it fail, the events that can be stored are, and each one that cannot is
    set aside."""
    try:
        with transaction.atomic():
            return store(events)
    except _EVENT_ERRORS as exc:
        if len(events) == 1:
            _set_aside(kind, events[0], exc)
            return 0
    middle = len(events) // 2
    return (batch_store(kind=kind, events=events[:middle], store=store)
            + batch_store(kind=kind, events=events[middle:], store=store))


def _set_aside(kind: str, event: Any, exc: Exception) -> None:
    raw = orjson.dumps(event)  # the event's one serialisation (a dataclass, or its fields)
    letter, new = DeadLetter.objects.get_or_create(
        digest=hashlib.sha256(raw).hexdigest(),
        defaults={"kind": kind, "event": raw, "error": type(exc).__name__})
    if new:
        metrics.events_dead_lettered(kind, 1)
    # The class alone: a database's message quotes the value it refused.
    logger.error("set aside a %s event that could not be stored (%s); kept as dead "
                 "letter %d", kind, type(exc).__name__, letter.pk)

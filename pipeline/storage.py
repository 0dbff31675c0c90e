"""How the pipeline's tasks write a batch: never failing it as a whole for one bad event.

A batch holds many organizations' events. The database refusing one of them (a value
it cannot hold, a row that breaks a constraint) or one malformed event (an older or a
broken producer) must not cost the others their rows: `batch_store` writes the batch,
and when that fails for such a reason it writes each half on its own, down to the
events that fail alone, which it sets aside as dead letters.
"""

import logging
from collections.abc import Callable, Sequence
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


def batch_store(*, kind: str, events: Sequence[E], store: Callable[[Sequence[E]], int],
                serialise: Callable[[E], bytes] = orjson.dumps) -> int:
    """`store(events)` in a transaction, returning what it returns (rows written); if an
    event makes it fail, the events that can be stored are, and each one that cannot is
    kept as a dead letter (its bytes from `serialise`)."""
    try:
        with transaction.atomic():
            return store(events)
    except _EVENT_ERRORS as exc:
        if len(events) == 1:
            _set_aside(kind, events[0], exc, serialise)
            return 0
    middle = len(events) // 2
    return (batch_store(kind=kind, events=events[:middle], store=store, serialise=serialise)
            + batch_store(kind=kind, events=events[middle:], store=store,
                          serialise=serialise))


def _set_aside(kind: str, event: Any, exc: Exception, serialise: Callable[[Any], bytes]) -> None:
    letter = DeadLetter.objects.create(kind=kind, event=serialise(event),
                                       error=type(exc).__name__)
    metrics.events_dead_lettered(kind, 1)
    # The class alone: a database's message quotes the value it refused.
    logger.error("set aside a %s event the database could not store (%s); kept as dead "
                 "letter %d", kind, type(exc).__name__, letter.pk)

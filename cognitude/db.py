"""The database from the /v1 event loop.

The ORM is synchronous. Django's own sync_to_async funnels every call through one
thread; a small pool of our own lets key checks overlap, each thread keeping its own
persistent connection. The one plain-SQL read every miss makes (the cold tier) runs
on the loop itself, on PostgreSQL: `fetch_one`.

Both go through one breaker: a call that finds PostgreSQL unreachable (refused, dropped,
shutting down, or not answering in time) raises DatabaseUnavailable, and for
COGNITUDE_DATABASE_BREAKER_SECONDS after it every call raises it at once, without
trying, so that while the database is down no request pays a connect timeout; the
first call after that tries again. Callers decide what to do without it: the key check
and the limits serve what they remember (COGNITUDE_AUTH_STALE_SECONDS), the cold tier
answers "not here", and what cannot be answered is a 503.
"""

import asyncio
import gc
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import TypeVar

import psycopg
from django.conf import settings
from django.db import Error as DatabaseError
from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")

logger = logging.getLogger("cognitude.db")

_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db")


class DatabaseUnavailable(OperationalError):
    """PostgreSQL did not answer just now, or failed recently enough that the breaker
    did not ask it. An OperationalError, so code that handles those handles this."""


# SQLSTATEs that mean "no server to talk to": class 08 (connection exceptions), and the
# server shutting down or not yet accepting connections. Any other error (a deadlock, a
# cancelled statement) comes from a database that answers.
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})


class _Breaker:
    """Closed: every call tries. After a failure, open for BREAKER seconds: calls raise
    at once. Then one call (the probe) tries while the others still raise at once, so
    that a hung database keeps one request waiting, not all of them; its answer
    closes or reopens the breaker. Used from the event loop only."""

    __slots__ = ("open_until", "probing")

    def __init__(self) -> None:
        self.open_until = 0.0  # 0: closed
        self.probing = False

    def admit(self) -> bool:
        """Raise DatabaseUnavailable unless this call may try; True for the probe."""
        if not self.open_until:
            return False
        if self.probing or time.monotonic() < self.open_until:
            raise DatabaseUnavailable("the database failed moments ago; not asked again yet")
        self.probing = True
        return True

    def answered(self, probe: bool) -> None:
        if probe:
            self.probing, self.open_until = False, 0.0
            logger.warning("the database answers again")

    def failed(self, exc: BaseException) -> DatabaseUnavailable:
        seconds = settings.COGNITUDE_DATABASE_BREAKER_SECONDS
        if not self.open_until:
            logger.warning("the database is unreachable (%s: %s); calls skip it for %s s "
                           "at a time until it answers", type(exc).__name__, exc, seconds)
        self.probing = False
        self.open_until = time.monotonic() + seconds
        return DatabaseUnavailable(f"the database is unreachable: {exc}")

    def judged(self, exc: BaseException, probe: bool) -> BaseException:
        """What a call that raised `exc` raises: DatabaseUnavailable if the database
        was not there (opening the breaker), else `exc` itself."""
        if isinstance(exc, DatabaseUnavailable) or not database_unreachable(exc):
            self.answered(probe)  # an error, but from a database that answers
            return exc
        return self.failed(exc)

    def abandoned(self, probe: bool) -> None:
        """The probe was cancelled before any answer: the next call probes instead."""
        if probe:
            self.probing = False


_breaker = _Breaker()


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database is not there (refused, dropped, shutting down,
    timed out, or the breaker says so), not that it refused a statement."""
    if isinstance(exc, (DatabaseUnavailable, TimeoutError, InterfaceError,
                        psycopg.InterfaceError)):
        return True
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if not isinstance(cause, psycopg.OperationalError):
        return False  # SQLite's errors, or none of psycopg's: not an outage
    state = cause.sqlstate
    return state is None or state.startswith("08") or state in _SHUTDOWN_STATES


# What a call may raise when the database is not there (and, some of them, when it is).
_CALL_ERRORS = (OperationalError, InterfaceError, TimeoutError, psycopg.OperationalError,
                psycopg.InterfaceError)


async def _through_breaker(call: Callable[[], Awaitable[T]]) -> T:
    """`await call()` if the breaker lets it try (`call` starts nothing before)."""
    probe = _breaker.admit()
    try:
        result = await call()
    except _CALL_ERRORS as exc:
        raised = _breaker.judged(exc, probe)
        if raised is exc:
            raise
        raise raised from exc
    except BaseException:
        _breaker.abandoned(probe)
        raise
    _breaker.answered(probe)
    return result


def _with_live_connection(fn: Callable[..., T], *args, **kwargs) -> T:
    # No request cycle runs in these threads, so Django never checks their connections.
    # A health-check query per call would double the cost of a cold-tier lookup; instead
    # a call that fails on a dropped connection is retried once on a fresh one.
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
        return fn(*args, **kwargs)


def db_threads_stop() -> None:
    """End the database threads and close their connections, and the loops' read
    connections. For shutdown."""
    while _slots:
        _hang_up(_slots.popitem()[1])
    _executor.shutdown(wait=True)
    # A finished thread's connection sits in a reference cycle until the collector
    # frees (and so closes) it.
    gc.collect()


async def run_in_db_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` in a database thread. Raises DatabaseUnavailable when
    PostgreSQL is unreachable, or was within the breaker's window."""
    return await _through_breaker(partial(_in_thread, fn, *args, **kwargs))


async def read_in_db_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """run_in_db_thread for the request path's reads (a key, a snapshot of limits):
    given up after COGNITUDE_DATABASE_TIMEOUT, so that a hung database costs a request
    that long, not forever (the thread finishes by itself when it can)."""
    return await _through_breaker(partial(_bounded, partial(_in_thread, fn, *args, **kwargs)))


def _in_thread(fn: Callable[..., T], *args, **kwargs) -> Awaitable[T]:
    return asyncio.get_running_loop().run_in_executor(
        _executor, partial(_with_live_connection, fn, *args, **kwargs))


async def _bounded(call: Callable[[], Awaitable[T]]) -> T:
    # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its own.
    async with asyncio.timeout(_read_timeout()):
        return await call()


# --- Plain-SQL reads on the event loop (PostgreSQL) -----------------------------------

# A cold-tier lookup through a database thread cost ~330 µs of CPU, an async query on
# the loop ~80-200 µs (same machine, same query): the thread hop was most of it.
_LOOP_CONNECTIONS = 4


class _Slot:
    __slots__ = ("connection", "lock")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.connection: psycopg.AsyncConnection | None = None


# The server has one loop; Django's sync paths and tests make short-lived ones, so only
# the last few keep their connections.
_slots: "OrderedDict[asyncio.AbstractEventLoop, list[_Slot]]" = OrderedDict()
_MAX_LOOPS = 4


def _hang_up(slots: list[_Slot]) -> None:
    """Close connections without their loop (which may be gone): libpq's own close."""
    for slot in slots:
        if slot.connection is not None:
            slot.connection.pgconn.finish()
            slot.connection = None


@cache
def _is_postgresql() -> bool:
    # Once: Django's connection proxy costs a few µs a lookup, 3% of a miss's CPU.
    return connection.vendor == "postgresql"


def _connect_params() -> dict:
    params = connection.get_connection_params()
    # Django's own cursor class and adapters belong to its connections.
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


async def _fetch_one_on(slot: _Slot, sql: str, params: list) -> tuple | None:
    async with slot.lock:
        if slot.connection is None or slot.connection.closed:
            slot.connection = await psycopg.AsyncConnection.connect(
                **_connect_params(), autocommit=True)
        try:
            cursor = await slot.connection.execute(sql, params)
            return await cursor.fetchone()
        except BaseException:
            # Broken, or cancelled mid-query (a timeout): never reuse it.
            dropped, slot.connection = slot.connection, None
            await dropped.close()
            raise


async def fetch_one(sql: str, params: list) -> tuple | None:
    """One row of a plain-SQL read, from the /v1 event loop.

    On PostgreSQL through a few autocommit connections of the loop's own, with no thread
    hop; elsewhere (SQLite, the embedded defaults) in a database thread. Gives up after
    COGNITUDE_DATABASE_TIMEOUT (connecting included), so a hung database costs one
    request that long per breaker window, not forever: DatabaseUnavailable."""
    if not _is_postgresql():
        return await run_in_db_thread(_fetch_one_sync, sql, params)
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = [_Slot() for _ in range(_LOOP_CONNECTIONS)]
        while len(_slots) > _MAX_LOOPS:
            _hang_up(_slots.popitem(last=False)[1])
    slot = next((s for s in slots if not s.lock.locked()), None) or random.choice(slots)
    # The breaker inline, not through _through_breaker: every miss runs this.
    probe = _breaker.admit()
    try:
        # asyncio.timeout, not wait_for: wait_for wraps the query in a task of its own.
        async with asyncio.timeout(_read_timeout()):
            row = await _fetch_one_on(slot, sql, params)
    except _CALL_ERRORS as exc:
        raised = _breaker.judged(exc, probe)
        if raised is exc:
            raise
        raise raised from exc
    except BaseException:
        _breaker.abandoned(probe)
        raise
    _breaker.answered(probe)
    return row


@cache
def _read_timeout() -> float:
    # Once: a settings lookup per miss shows in its profile.
    return settings.COGNITUDE_DATABASE_TIMEOUT


def _fetch_one_sync(sql: str, params: list) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


async def loop_connections_close() -> None:
    """Close this loop's read connections. For shutdown."""
    for slot in _slots.pop(asyncio.get_running_loop(), []):
        if slot.connection is not None:
            await slot.connection.close()

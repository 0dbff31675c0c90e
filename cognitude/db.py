"""The database from the /v1 event loop.

The ORM is synchronous. Django's own sync_to_async funnels every call through one
thread; a small pool of our own lets key checks overlap, each thread keeping its own
persistent connection. The one plain-SQL read every miss makes (the cold tier) runs
on the loop itself, on PostgreSQL: `fetch_one`.
"""

import asyncio
import gc
import random
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import TypeVar

import psycopg
from django.db import Error as DatabaseError
from django.db import connection

T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db")


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
    return await asyncio.get_running_loop().run_in_executor(
        _executor, partial(_with_live_connection, fn, *args, **kwargs)
    )


# --- Plain-SQL reads on the event loop (PostgreSQL) -----------------------------------

# A cold-tier lookup through a database thread cost ~330 µs of CPU, an async query on
# the loop ~80-200 µs (same machine, same query): the thread hop was most of it.
_LOOP_CONNECTIONS = 4
_READ_TIMEOUT_S = 2.0


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
    a short timeout, so a hung database costs a request seconds, not forever."""
    if not _is_postgresql():
        return await run_in_db_thread(_fetch_one_sync, sql, params)
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = [_Slot() for _ in range(_LOOP_CONNECTIONS)]
        while len(_slots) > _MAX_LOOPS:
            _hang_up(_slots.popitem(last=False)[1])
    slot = next((s for s in slots if not s.lock.locked()), None) or random.choice(slots)
    # asyncio.timeout, not wait_for: wait_for wraps the query in a task of its own.
    async with asyncio.timeout(_READ_TIMEOUT_S):
        return await _fetch_one_on(slot, sql, params)


def _fetch_one_sync(sql: str, params: list) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


async def loop_connections_close() -> None:
    """Close this loop's read connections. For shutdown."""
    for slot in _slots.pop(asyncio.get_running_loop(), []):
        if slot.connection is not None:
            await slot.connection.close()

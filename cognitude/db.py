"""Running Django ORM work from the /v1 event loop.

The ORM is synchronous. Django's own sync_to_async funnels every call through one
thread; a small pool of our own lets cold-tier reads and key checks overlap, each
thread keeping its own persistent connection.
"""

import asyncio
import gc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

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
    """End the database threads and close their connections. For shutdown."""
    _executor.shutdown(wait=True)
    # A finished thread's connection sits in a reference cycle until the collector
    # frees (and so closes) it.
    gc.collect()


async def run_in_db_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    return await asyncio.get_running_loop().run_in_executor(
        _executor, partial(_with_live_connection, fn, *args, **kwargs)
    )

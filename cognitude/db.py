"""Running Django ORM work from the /v1 event loop.

The ORM is synchronous. Django's own sync_to_async funnels every call through one
thread; a small pool of our own lets cold-tier reads and key checks overlap, each
thread keeping its own persistent connection.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from django.db import close_old_connections

T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db")


def _with_fresh_connection(fn: Callable[..., T], *args, **kwargs) -> T:
    # No request cycle runs in these threads, so drop a broken or too-old connection
    # here, the way Django does at the start of each request.
    close_old_connections()
    return fn(*args, **kwargs)


async def run_in_db_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    return await asyncio.get_running_loop().run_in_executor(
        _executor, partial(_with_fresh_connection, fn, *args, **kwargs)
    )

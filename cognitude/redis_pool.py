"""redis-py's asyncio connection pool, waiting for a connection when all are in use.

redis-py 8's pool holds at most 100 connections by default and, past that, fails the
call (MaxConnectionsError); the hot tier takes a failed call for a Redis in trouble and
opens its breaker, so a burst of more than 100 concurrent requests in one process sent
every request to the cold tier for COGNITUDE_REDIS_BREAKER_SECONDS. Here a call that
finds every connection in use waits for one to come back, for at most the call's own
timeout. redis-py's BlockingConnectionPool waits too, but takes an asyncio.Condition on
every call: +10–13 µs of CPU a call here, on every cache hit; this costs nothing until
the pool is full.
"""

import asyncio
from collections import deque

from redis.asyncio import ConnectionPool
from redis.exceptions import MaxConnectionsError


class WaitingConnectionPool(ConnectionPool):
    def __init__(self, *args, wait_seconds: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._wait_seconds = wait_seconds
        self._waiters: deque[asyncio.Future] = deque()

    async def get_connection(self, *args, **kwargs):
        deadline = None
        while True:
            try:
                return await super().get_connection(*args, **kwargs)
            except MaxConnectionsError:
                loop = asyncio.get_running_loop()
                deadline = deadline or loop.time() + self._wait_seconds
                left = deadline - loop.time()
                if left <= 0:
                    raise
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout(left):
                        await waiter
                except TimeoutError:
                    raise MaxConnectionsError(
                        f"no Redis connection came free in {self._wait_seconds}s") from None

    async def release(self, connection) -> None:
        await super().release(connection)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

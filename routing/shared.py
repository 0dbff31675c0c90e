"""The Redis that routing state shares across gateway processes: the hot tier's
(REDIS_URL), since everything kept there is small and cheap to lose (breaker states,
which provider made a Responses API answer).

Like the hot tier it never lets a sick Redis slow a request: short timeouts, no
retries, and after a failure it is left alone for COGNITUDE_REDIS_BREAKER_SECONDS,
while each caller falls back on what its process knows.
"""

import asyncio
import logging
import time
from collections import OrderedDict

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cognitude.redis_urls import async_redis

logger = logging.getLogger("cognitude.routing")


class SharedRedis:
    def __init__(self, url: str) -> None:
        self.client: aioredis.Redis | None = None
        if url:
            self.client = async_redis(
                url,
                socket_timeout=settings.COGNITUDE_REDIS_TIMEOUT,
                socket_connect_timeout=settings.COGNITUDE_REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        self._down_until = 0.0

    @property
    def usable(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def trouble(self, exc: BaseException) -> None:
        """A call failed: use local state only for a while."""
        if time.monotonic() >= self._down_until:
            logger.warning("routing state kept locally for %.1fs: Redis %r",
                           settings.COGNITUDE_REDIS_BREAKER_SECONDS, exc)
        self._down_until = time.monotonic() + settings.COGNITUDE_REDIS_BREAKER_SECONDS

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


# redis.asyncio clients belong to the loop that made them (as caching.hot's do).
_by_loop: "OrderedDict[asyncio.AbstractEventLoop, SharedRedis]" = OrderedDict()
_MAX_LOOPS = 4


def shared_redis() -> SharedRedis:
    """The running event loop's client."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = SharedRedis(settings.REDIS_URL)
        while len(_by_loop) > _MAX_LOOPS:
            _by_loop.popitem(last=False)
    return found


async def shared_redis_close() -> None:
    """At shutdown: the running loop's client."""
    found = _by_loop.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()

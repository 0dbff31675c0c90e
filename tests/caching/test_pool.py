"""A burst past the hot tier's connection pool (redis-py's 100) in one process: the
calls past it wait for a connection instead of failing, so the breaker stays closed and
every lookup is answered from Redis."""

import asyncio

from caching.hot import RedisHotTier
from tests.conftest import TEST_REDIS_URL


def test_it_answers_a_burst_past_the_pool_from_redis_without_opening_the_breaker():
    async def burst() -> tuple[list, bool]:
        tier = RedisHotTier(TEST_REDIS_URL, timeout=2.0, breaker_seconds=30)
        try:
            await tier.set(1, "burst", b"the answer", 60)
            found = await asyncio.gather(*(tier.get(1, "burst") for _ in range(300)))
            return found, tier.available
        finally:
            await tier.close()

    found, available = asyncio.run(burst())

    assert found == [b"the answer"] * 300
    assert available

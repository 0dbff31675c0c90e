"""The hot tier: Redis when REDIS_URL is set, else an in-process LRU (embedded mode).

Both speak the same small interface. The Redis one never lets a sick Redis slow a
request down: short socket timeouts, no retries, and a circuit breaker that stops
trying for a few seconds after a failure; it then tries again by itself.
"""

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from caching.keys import redis_hits_key, redis_index_key, redis_key, redis_lock_key
from caching.outcomes import CacheTier
from cognitude.redis_urls import async_redis

logger = logging.getLogger("cognitude.caching")

# GET and count the hit in one round trip.
_GET_AND_COUNT = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  redis.call('HINCRBY', KEYS[2], '_total', 1)
end
return value
"""

# A miss's first round trip: the entry (a hit, counted), or else the coalescing lock,
# taken if free. Returns {value} or {false, 1 if the lock is ours}. ARGV[4] = '1' skips
# the entry (one the caller could not use: corrupt, or another organization's).
_GET_OR_LOCK = """
if ARGV[4] ~= '1' then
  local value = redis.call('GET', KEYS[1])
  if value then
    redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
    redis.call('HINCRBY', KEYS[2], '_total', 1)
    return {value}
  end
end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {false, 1} end
return {false, 0}
"""

# Store, and remember the key in the organization's index (score = expiry), so that
# clearing and counting one organization never scans anyone else's keys; release the
# coalescing lock in the same round trip if we hold it (ARGV[5], the token, or '').
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
return 1
"""

# Release a coalescing lock only if we still hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class HotStats:
    entries: int
    hits: int


class RedisHotTier:
    kind = CacheTier.REDIS

    def __init__(self, url: str, *, timeout: float, breaker_seconds: float) -> None:
        # A Sentinel URL gives a client that finds the master itself (redis_urls.py).
        self._client = async_redis(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._breaker_seconds = breaker_seconds
        self._open_until = 0.0
        self._get_and_count = self._client.register_script(_GET_AND_COUNT)
        self._get_or_lock = self._client.register_script(_GET_OR_LOCK)
        self._store = self._client.register_script(_STORE)
        self._release = self._client.register_script(_RELEASE)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _trip(self, exc: BaseException) -> None:
        if self.available:
            logger.warning("hot tier unavailable for %.1fs: %r", self._breaker_seconds, exc)
        self._open_until = time.monotonic() + self._breaker_seconds

    async def get(self, org_id: int, key_hash: str) -> bytes | None:
        if not self.available:
            return None
        try:
            return await self._get_and_count(
                keys=[redis_key(org_id, key_hash), redis_hits_key(org_id)], args=[key_hash]
            )
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return None

    async def get_or_lock(self, org_id: int, key_hash: str, seconds: float, *,
                          skip_entry: bool = False) -> tuple[bytes | None, str | None]:
        """The entry, or else try to become the one caller that asks upstream: returns
        (entry, None), (None, token) when the lock is ours, (None, None) when another
        caller holds it; `skip_entry` goes straight to the lock. With Redis away,
        (None, ""): every process leads for itself, better a few duplicate upstream
        calls than requests waiting on a lock nobody can see."""
        if not self.available:
            return None, ""
        token = secrets.token_hex(8)
        try:
            found = await self._get_or_lock(
                keys=[redis_key(org_id, key_hash), redis_hits_key(org_id),
                      redis_lock_key(org_id, key_hash)],
                args=[key_hash, token, int(seconds * 1000), "1" if skip_entry else "0"],
            )
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return None, ""
        if found[0]:
            return found[0], None
        return None, token if found[1] else None

    async def set(self, org_id: int, key_hash: str, payload: bytes, ttl: int,
                  *, unlock: str = "") -> bool:
        """Store an entry; `unlock`, a token of get_or_lock's, releases that lock too."""
        if not self.available:
            return False
        try:
            await self._store(
                keys=[redis_key(org_id, key_hash), redis_index_key(org_id),
                      redis_lock_key(org_id, key_hash)],
                args=[payload, ttl, int(time.time()) + ttl, key_hash, unlock],
            )
            return True
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return False

    async def stats(self, org_id: int) -> HotStats | None:
        if not self.available:
            return None
        index = redis_index_key(org_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(index, "-inf", int(time.time()))
                pipe.zcard(index)
                pipe.hget(redis_hits_key(org_id), "_total")
                _, entries, hits = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return None
        return HotStats(entries=int(entries), hits=int(hits or 0))

    async def clear(self, org_id: int) -> bool:
        """Delete this organization's entries, found through its own index only."""
        if not self.available:
            return False
        index = redis_index_key(org_id)
        try:
            members = await self._client.zrange(index, 0, -1)
            batch = 500
            for start in range(0, len(members), batch):
                hashes = members[start:start + batch]
                await self._client.unlink(*(redis_key(org_id, h.decode()) for h in hashes))
            await self._client.unlink(index, redis_hits_key(org_id))
            return True
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return False

    async def is_locked(self, org_id: int, key_hash: str) -> bool:
        if not self.available:
            return False
        try:
            return bool(await self._client.exists(redis_lock_key(org_id, key_hash)))
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return False

    async def unlock(self, org_id: int, key_hash: str, token: str) -> None:
        if not token or not self.available:
            return
        try:
            await self._release(keys=[redis_lock_key(org_id, key_hash)], args=[token])
        except (RedisError, OSError) as exc:
            self._trip(exc)

    async def close(self) -> None:
        await self._client.aclose()


class MemoryHotTier:
    """An in-process LRU with TTLs, for the embedded defaults (one process)."""

    kind = CacheTier.MEMORY
    available = True

    def __init__(self, *, max_bytes: int) -> None:
        self._entries: OrderedDict[tuple[int, str], tuple[float, bytes]] = OrderedDict()
        self._hits: dict[int, int] = {}
        self._bytes = 0
        self._max_bytes = max_bytes
        self._locks: set[tuple[int, str]] = set()

    def _drop(self, key: tuple[int, str]) -> None:
        _, payload = self._entries.pop(key)
        self._bytes -= len(payload)

    async def get(self, org_id: int, key_hash: str) -> bytes | None:
        key = (org_id, key_hash)
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        self._hits[org_id] = self._hits.get(org_id, 0) + 1
        return found[1]

    async def get_or_lock(self, org_id: int, key_hash: str, seconds: float, *,
                          skip_entry: bool = False) -> tuple[bytes | None, str | None]:
        found = None if skip_entry else await self.get(org_id, key_hash)
        if found is not None:
            return found, None
        if (org_id, key_hash) in self._locks:
            return None, None
        self._locks.add((org_id, key_hash))
        return None, "local"

    async def set(self, org_id: int, key_hash: str, payload: bytes, ttl: int,
                  *, unlock: str = "") -> bool:
        key = (org_id, key_hash)
        if unlock:
            self._locks.discard(key)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl, payload)
        self._bytes += len(payload)
        while self._bytes > self._max_bytes and self._entries:
            self._drop(next(iter(self._entries)))
        return True

    async def stats(self, org_id: int) -> HotStats:
        now = time.monotonic()
        entries = sum(1 for (org, _), (expiry, _) in self._entries.items()
                      if org == org_id and expiry > now)
        return HotStats(entries=entries, hits=self._hits.get(org_id, 0))

    async def clear(self, org_id: int) -> bool:
        for key in [key for key in self._entries if key[0] == org_id]:
            self._drop(key)
        self._hits.pop(org_id, None)
        return True

    async def is_locked(self, org_id: int, key_hash: str) -> bool:
        return (org_id, key_hash) in self._locks

    async def unlock(self, org_id: int, key_hash: str, token: str) -> None:
        self._locks.discard((org_id, key_hash))

    async def close(self) -> None:
        return None


HotTier = RedisHotTier | MemoryHotTier

# redis.asyncio clients belong to the loop that made them. The server has one loop;
# Django's sync paths (test client, management commands) make short-lived ones, so
# only the last few are kept.
_hot_tiers: "OrderedDict[asyncio.AbstractEventLoop, HotTier]" = OrderedDict()
_MAX_LOOPS = 4


def hot_tier() -> HotTier:
    """The hot tier for the running event loop."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return _memory_tier()
    loop = asyncio.get_running_loop()
    tier = _hot_tiers.get(loop)
    if tier is None:
        tier = RedisHotTier(
            settings.REDIS_URL,
            timeout=settings.COGNITUDE_REDIS_TIMEOUT,
            breaker_seconds=settings.COGNITUDE_REDIS_BREAKER_SECONDS,
        )
        _hot_tiers[loop] = tier
        while len(_hot_tiers) > _MAX_LOOPS:
            _hot_tiers.popitem(last=False)
    return tier


_memory: MemoryHotTier | None = None


def _memory_tier() -> MemoryHotTier:
    # One per process, shared by every loop: in embedded mode the Django views (cache
    # stats, clearing) and the /v1 app must see the same entries.
    global _memory
    if _memory is None:
        from django.conf import settings

        _memory = MemoryHotTier(max_bytes=settings.COGNITUDE_HOT_TIER_MAX_BYTES)
    return _memory

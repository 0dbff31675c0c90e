"""A circuit breaker per route target, shared by every gateway process through Redis.

After COGNITUDE_BREAKER_FAILURES consecutive failures (connect errors, timeouts, 429s,
5xx) a target is open: skipped for COGNITUDE_BREAKER_COOLDOWN_SECONDS. Then it is
half-open: one request (across all processes) claims the probe; its success closes the
breaker, its failure opens it for another cool-down. So a dead target costs one
request the connect timeout once per cool-down.

Where the state lives: one small hash in the hot-tier Redis (REDIS_URL), a field per
target with failures, open-until and probe-until (wall-clock seconds). That Redis may
evict it or go away: losing it only costs a probe (or a few failures) again, so it
needs no durable store. Each process keeps its own copy and reads only that: the copy
is replaced from Redis at most once a second (one request a second waits that one
round trip) and adopts at once every transition this process makes (the scripts
return the new state). A request on
a healthy route therefore makes no Redis call for breakers at all: a success touches
Redis only when the target had failures to clear. With no REDIS_URL, or while Redis is
down, the process's own copy is the state.
"""

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from routing.shared import SharedRedis, shared_redis

logger = logging.getLogger("cognitude.routing")

# The braces keep it one Redis Cluster slot (it is a single key anyway).
STATE_KEY = "cognitude:{breakers}"
REFRESH_SECONDS = 1.0
_NONE: frozenset[str] = frozenset()
# A field untouched this long is forgotten with the whole hash (it is rewritten on
# every failure, so only targets that stopped failing long ago go).
_STATE_TTL_SECONDS = 24 * 3600

# Count one failure; open (again) once there are enough. Returns the new state.
_FAILURE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local failures, open_until, probe_until = 0, 0, 0
if raw then
  local f, o, p = string.match(raw, '^(%S+) (%S+) (%S+)$')
  failures, open_until, probe_until = tonumber(f), tonumber(o), tonumber(p)
end
failures = failures + 1
if failures >= tonumber(ARGV[3]) then
  open_until = tonumber(ARGV[2]) + tonumber(ARGV[4])
  probe_until = 0
end
local value = string.format('%d %.3f %.3f', failures, open_until, probe_until)
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return value
"""

# Claim the one probe of a half-open target: 1 if ours (or the breaker is not open).
_CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 1 end
local f, o, p = string.match(raw, '^(%S+) (%S+) (%S+)$')
local now = tonumber(ARGV[2])
if tonumber(o) == 0 then return 1 end
if tonumber(o) > now or tonumber(p) > now then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%s %s %.3f', f, o, now + tonumber(ARGV[3])))
return 1
"""


@dataclass(frozen=True, slots=True)
class BreakerState:
    failures: int
    open_until: float  # 0: never opened since the last success
    probe_until: float  # a probe is in flight until then

    @classmethod
    def parse(cls, raw: bytes) -> "BreakerState":
        failures, open_until, probe_until = raw.split()
        return cls(int(failures), float(open_until), float(probe_until))


class Breakers:
    """The breakers as one process sees them; one per event loop (see breakers())."""

    def __init__(self, redis: SharedRedis) -> None:
        self._states: dict[str, BreakerState] = {}
        self._redis = redis
        if redis.client is not None:
            self._failure = redis.client.register_script(_FAILURE)
            self._claim = redis.client.register_script(_CLAIM)
        self._refreshed_at = float("-inf")
        self._refreshing = False
        self._threshold = settings.COGNITUDE_BREAKER_FAILURES
        self._cooldown = settings.COGNITUDE_BREAKER_COOLDOWN_SECONDS

    # Reading: local only, never waits on Redis.

    def is_blocked(self, key: str) -> bool:
        """Open and cooling down, or half-open with another request's probe in flight."""
        state = self._states.get(key)
        if state is None:
            return False
        now = time.time()
        return state.open_until > now or state.probe_until > now

    def blocked(self) -> frozenset[str]:
        """The keys of every target is_blocked says so of, right now."""
        if not self._states:
            return _NONE  # the healthy path: nothing to look at
        now = time.time()
        return frozenset(key for key, state in self._states.items()
                         if state.open_until > now or state.probe_until > now)

    def needs_probe(self, key: str) -> bool:
        """Half-open: the next request to it must claim the probe first."""
        state = self._states.get(key)
        return state is not None and state.open_until != 0

    def reopens_in(self, key: str) -> float:
        """Seconds until an open target may be probed (0 if it is not open)."""
        state = self._states.get(key)
        return max(0.0, state.open_until - time.time()) if state is not None else 0.0

    async def refresh(self) -> None:
        """Replace the local copy from Redis if it is over a second old. At most one
        request a second per process waits on this; the others meanwhile read the copy
        they have."""
        if self._refreshing or not self._redis.usable:
            return
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_SECONDS:
            return
        self._refreshed_at, self._refreshing = now, True
        try:
            fields = await self._redis.client.hgetall(STATE_KEY)
            self._states = {key.decode(): BreakerState.parse(raw) for key, raw in fields.items()}
        except (RedisError, OSError, ValueError) as exc:
            self._redis.trouble(exc)
        finally:
            self._refreshing = False

    # Transitions: local at once, then published.

    async def failure(self, key: str) -> None:
        """One failed attempt at the target."""
        local = self._states.get(key) or BreakerState(0, 0.0, 0.0)
        now = time.time()
        failures = local.failures + 1
        opened = failures >= self._threshold
        self._states[key] = BreakerState(
            failures, now + self._cooldown if opened else local.open_until,
            0.0 if opened else local.probe_until)
        if opened and local.open_until <= now:
            logger.warning("target %s: breaker open for %.0fs after %d failures",
                           key, self._cooldown, failures)
        if self._redis.usable:
            try:
                raw = await self._failure(keys=[STATE_KEY], args=[
                    key, _stamp(now), self._threshold, self._cooldown, _STATE_TTL_SECONDS])
                self._states[key] = BreakerState.parse(raw)
            except (RedisError, OSError) as exc:
                self._redis.trouble(exc)

    async def success(self, key: str) -> None:
        """One successful attempt: the breaker closes and the failures are forgotten."""
        if self._states.pop(key, None) is None:
            return  # the healthy path: nothing to clear, no Redis call
        if self._redis.usable:
            try:
                await self._redis.client.hdel(STATE_KEY, key)
            except (RedisError, OSError) as exc:
                self._redis.trouble(exc)

    async def claim_probe(self, key: str) -> bool:
        """Whether this request is the one probe of a half-open target."""
        state = self._states.get(key)
        if state is None or state.open_until == 0:
            return True
        now = time.time()
        if state.open_until > now or state.probe_until > now:
            return False
        self._states[key] = BreakerState(state.failures, state.open_until, now + self._cooldown)
        if not self._redis.usable:
            return True
        try:
            return bool(await self._claim(keys=[STATE_KEY],
                                          args=[key, _stamp(now), self._cooldown]))
        except (RedisError, OSError) as exc:
            self._redis.trouble(exc)
            return True


def _stamp(now: float) -> str:
    """`now` for the scripts, in ms, rounded down: rounded to the nearest, a breaker
    could be stored open up to half a millisecond past its cool-down."""
    return f"{math.floor(now * 1000) / 1000:.3f}"


# One per event loop, with the loop's Redis client.
_by_loop: "OrderedDict[asyncio.AbstractEventLoop, Breakers]" = OrderedDict()
_MAX_LOOPS = 4


def breakers() -> Breakers:
    """The running event loop's breakers."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = Breakers(shared_redis())
        while len(_by_loop) > _MAX_LOOPS:
            _by_loop.popitem(last=False)
    return found

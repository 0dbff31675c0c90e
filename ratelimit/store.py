"""Where limit state lives: the limits Redis (shared by every process), or this
process's memory (embedded mode, and fail-open while that Redis is unreachable).

Both take a list of `Check`s and answer with one `Outcome` per check, all taken or
none; both settle `Settlement`s afterwards. The Redis one never waits past
COGNITUDE_LIMITS_REDIS_TIMEOUT: no retries, and after a failure it stops trying for
COGNITUDE_REDIS_BREAKER_SECONDS (then tries again by itself).
"""

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ratelimit.scripts import RESERVE, SETTLE

logger = logging.getLogger("cognitude.ratelimit")

RATE, CONCURRENCY, BUDGET = "g", "c", "b"


@dataclass(frozen=True, slots=True)
class Check:
    """One limit or budget a request must pass (see ratelimit.scripts for the kinds)."""

    key: str
    kind: str
    limit: int  # n per period, n in flight, or a budget's cap in units of 1e-8 USD
    period_ms: int = 0
    cost: int = 0  # a rate's units (1 request, or tokens); a budget's estimate
    soft: bool = False  # a budget that allows and records instead of refusing


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    remaining: int
    reset_ms: int
    retry_ms: int
    generation: str = ""  # a budget's: settlements name it


@dataclass(frozen=True, slots=True)
class Seed:
    """A budget's spend rebuilt from the records, for a key Redis lost."""

    units: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """Give back or add to what a check took: a rate's delta units, a lease to free,
    or a budget's delta units (reservation to real cost)."""

    check: Check
    delta: int = 0
    lease: str = ""
    generation: str = ""
    note: object = None  # the caller's, handed back with a crossing


class LimiterDown(Exception):
    """The limits Redis did not answer in time (down, hung, refusing)."""


@dataclass(frozen=True, slots=True)
class NeedSeeds:
    """Nothing was taken: these budget checks' counters are missing (seed them)."""

    indexes: list[int]


Reserved = list[Outcome]


def _args(checks: list[Check], seeds: dict[int, Seed], lease: str, lease_ms: int) -> list:
    args: list = [lease, lease_ms]
    for i, check in enumerate(checks):
        if check.kind == RATE:
            args += (RATE, check.limit, check.period_ms, check.cost, "")
        elif check.kind == CONCURRENCY:
            args += (CONCURRENCY, check.limit, "", "", "")
        else:
            seed = seeds.get(i)
            args += (BUDGET, check.limit, check.cost, 0 if check.soft else 1,
                     f"{seed.units}:{secrets.token_hex(6)}:{seed.ttl_s}" if seed else "")
    return args


def _outcomes(raw: list) -> Reserved | NeedSeeds:
    if raw and raw[0] == -1:
        return NeedSeeds([int(i) - 1 for i in raw[1:]])
    return [
        Outcome(bool(raw[at]), int(raw[at + 1]), int(raw[at + 2]), int(raw[at + 3]),
                raw[at + 4].decode() if isinstance(raw[at + 4], bytes) else str(raw[at + 4]))
        for at in range(0, len(raw), 5)
    ]


def _settle_args(items: list[Settlement]) -> tuple[list[str], list]:
    keys, args = [], []
    for item in items:
        check = item.check
        keys.append(check.key)
        if check.kind == RATE:
            args += (RATE, check.period_ms / check.limit, item.delta, "")
        elif check.kind == CONCURRENCY:
            args += (CONCURRENCY, item.lease, "", "")
        else:
            args += (BUDGET, item.delta, check.limit, item.generation)
    return keys, args


class RedisLimiter:
    kind = "redis"
    # A burst of requests waits its turn for a connection (within the timeout) instead
    # of failing when the pool is busy.
    CONNECTIONS = 64
    # A timeout may be this process's own event loop running late under load, not the
    # server: the breaker opens on the third in a row, or at once when the server
    # refuses or drops the connection.
    TIMEOUTS_TO_TRIP = 3

    def __init__(self, url: str, *, timeout: float, breaker_seconds: float) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=self.CONNECTIONS, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._timeout = timeout
        self._breaker_seconds = breaker_seconds
        self._open_until = 0.0
        self._timeouts = 0
        self._reserve = self._client.register_script(RESERVE)
        self._settle = self._client.register_script(SETTLE)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _trip(self, exc: BaseException) -> LimiterDown:
        # A full pool says so with a ConnectionError raised from its own wait's timeout.
        timed_out = (isinstance(exc, TimeoutError | RedisTimeoutError)
                     or isinstance(exc.__cause__, TimeoutError))
        self._timeouts = self._timeouts + 1 if timed_out else 0
        if not timed_out or self._timeouts >= self.TIMEOUTS_TO_TRIP:
            if self.available:
                logger.warning("limits Redis unavailable for %.1fs: %r",
                               self._breaker_seconds, exc)
            self._open_until = time.monotonic() + self._breaker_seconds
        return LimiterDown(repr(exc))

    async def reserve(self, checks: list[Check], *, lease: str, lease_ms: int,
                      seeds: dict[int, Seed]) -> Reserved | NeedSeeds:
        if not self.available:
            raise LimiterDown("breaker open")
        try:
            # The socket timeout bounds each read; this bounds the whole call (a
            # connection that accepts and never answers, a pool waiting on one).
            async with asyncio.timeout(self._timeout):
                raw = await self._reserve(keys=[c.key for c in checks],
                                          args=_args(checks, seeds, lease, lease_ms))
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._trip(exc) from exc
        self._timeouts = 0
        return _outcomes(raw)

    async def settle(self, batches: list[list[Settlement]]) -> list[list[tuple[int, int]]]:
        """Settle each batch (one organization's items: one script call each, all in one
        round trip); returns, per batch, (item index, spend) of the budgets crossed."""
        if not self.available:
            raise LimiterDown("breaker open")
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    for items in batches:
                        keys, args = _settle_args(items)
                        await self._settle(keys=keys, args=args, client=pipe)
                    raw = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._trip(exc) from exc
        return [[(int(found[at]) - 1, int(found[at + 1])) for at in range(0, len(found), 2)]
                for found in raw]

    async def close(self) -> None:
        await self._client.aclose()


class LocalLimiter:
    """The same checks in this process's memory: exact for one process (embedded mode);
    while the limits Redis is down, each process holds every limit by itself, so N
    processes let through at most N times a limit (an approximate bound, never none)."""

    kind = "local"
    available = True
    _MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._budgets: dict[str, list] = {}  # key -> [spend, generation, crossed, expiry]

    @staticmethod
    def _now() -> float:
        return time.monotonic() * 1000

    def _prune(self, now: float) -> None:
        if len(self._tats) > self._MAX_KEYS:
            self._tats = {k: v for k, v in self._tats.items() if v > now}
        if len(self._budgets) > self._MAX_KEYS:
            self._budgets = {k: v for k, v in self._budgets.items() if v[3] > now}

    async def reserve(self, checks: list[Check], *, lease: str, lease_ms: int,
                      seeds: dict[int, Seed]) -> Reserved | NeedSeeds:
        now = self._now()
        self._prune(now)
        missing = []
        for i, check in enumerate(checks):
            if check.kind != BUDGET:
                continue
            state = self._budgets.get(check.key)
            if state is not None and state[3] <= now:
                state = None
            if state is None:
                seed = seeds.get(i)
                if seed is None:
                    missing.append(i)
                else:
                    self._budgets[check.key] = [seed.units, secrets.token_hex(6), False,
                                                now + seed.ttl_s * 1000]
        if missing:
            return NeedSeeds(missing)
        outcomes, takes = [], []
        for check in checks:
            if check.kind == RATE:
                period, step = check.period_ms, check.period_ms / check.limit
                tat = max(self._tats.get(check.key, now), now)
                after = tat + check.cost * step
                if after - period > now:
                    outcomes.append(Outcome(False, math.floor((period - (tat - now)) / step),
                                            math.ceil(tat - now), math.ceil(after - period - now)))
                else:
                    takes.append((check, after))
                    outcomes.append(Outcome(True, math.floor((period - (after - now)) / step),
                                            math.ceil(after - now), 0))
            elif check.kind == CONCURRENCY:
                leases = self._leases.setdefault(check.key, {})
                for expired in [k for k, expiry in leases.items() if expiry <= now]:
                    del leases[expired]
                if len(leases) >= check.limit:
                    outcomes.append(Outcome(False, 0, 0, 0))
                else:
                    takes.append((check, None))
                    outcomes.append(Outcome(True, check.limit - len(leases) - 1, 0, 0))
            else:
                state = self._budgets[check.key]
                ok = check.soft or state[0] < check.limit
                if ok:
                    takes.append((check, None))
                outcomes.append(Outcome(ok, check.limit - state[0], 0, 0, state[1]))
        if all(outcome.ok for outcome in outcomes):
            for check, value in takes:
                if check.kind == RATE:
                    self._tats[check.key] = value
                elif check.kind == CONCURRENCY:
                    self._leases[check.key][lease] = now + lease_ms
                else:
                    self._budgets[check.key][0] += check.cost
        return outcomes

    def tat(self, key: str) -> float | None:
        """A rate's theoretical arrival time (ms, this process's monotonic clock)."""
        return self._tats.get(key)

    def leases_in_flight(self, key: str, now: float) -> int:
        return sum(1 for expiry in self._leases.get(key, {}).values() if expiry > now)

    async def settle(self, batches: list[list[Settlement]]) -> list[list[tuple[int, int]]]:
        now = self._now()
        crossed_all = []
        for items in batches:
            crossed = []
            for i, item in enumerate(items):
                check = item.check
                if check.kind == RATE:
                    tat = self._tats.get(check.key)
                    if tat is None and item.delta <= 0:
                        continue
                    after = max(tat or now, now) + item.delta * check.period_ms / check.limit
                    if after > now:
                        self._tats[check.key] = after
                    else:
                        self._tats.pop(check.key, None)
                elif check.kind == CONCURRENCY:
                    self._leases.get(check.key, {}).pop(item.lease, None)
                else:
                    state = self._budgets.get(check.key)
                    if state is None or state[1] != item.generation:
                        continue
                    state[0] += item.delta
                    if state[0] >= check.limit and not state[2]:
                        state[2] = True
                        crossed.append((i, state[0]))
            crossed_all.append(crossed)
        return crossed_all

    async def close(self) -> None:
        return None


Limiter = RedisLimiter | LocalLimiter

_local = LocalLimiter()
# redis.asyncio clients belong to the loop that made them (see caching.hot).
_redis: "OrderedDict[asyncio.AbstractEventLoop, RedisLimiter]" = OrderedDict()
_MAX_LOOPS = 4


def local_limiter() -> LocalLimiter:
    return _local


def limiter() -> Limiter:
    """The limits store for the running loop: the limits Redis, or (no Redis configured,
    the embedded defaults) this process's memory."""
    from django.conf import settings

    if not settings.COGNITUDE_LIMITS_REDIS_URL:
        return _local
    loop = asyncio.get_running_loop()
    found = _redis.get(loop)
    if found is None:
        found = _redis[loop] = RedisLimiter(
            settings.COGNITUDE_LIMITS_REDIS_URL,
            timeout=settings.COGNITUDE_LIMITS_REDIS_TIMEOUT,
            breaker_seconds=settings.COGNITUDE_REDIS_BREAKER_SECONDS,
        )
        while len(_redis) > _MAX_LOOPS:
            _redis.popitem(last=False)
    return found

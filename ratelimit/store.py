"""Where limit state lives: the limits Redis (shared by every process), or this
process's memory (embedded mode, and fail-open while that Redis is unreachable).

Both speak the scripts' own encoding (ratelimit.scripts): `reserve(keys, spec)` takes a
request's checks all or none and answers the script's flat list; `settle(batches)`
settles many requests' items at once. The request path prepares these strings once per
organization, key and model (ratelimit.gate.Plan), so a request only fills in its
costs. The Redis one never waits past COGNITUDE_LIMITS_REDIS_TIMEOUT: no retries, and
after a failure it stops trying for COGNITUDE_REDIS_BREAKER_SECONDS (then tries again).
"""

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import hiredis
from django.conf import settings

from ratelimit.resp import RespClient, RespError, Script
from ratelimit.scripts import RESERVE, SETTLE

logger = logging.getLogger("cognitude.ratelimit")

RATE, CONCURRENCY, BUDGET = "g", "c", "b"


@dataclass(frozen=True, slots=True)
class Check:
    """One limit or budget a request must pass (see ratelimit.scripts for the kinds).
    `cost` is a rate's units (1 request, or tokens), a budget's estimate, or the slots
    a concurrency check takes (0: one); a plan's template holds a placeholder there for
    each request's own."""

    key: str
    kind: str
    limit: int  # n per period, n in flight, or a budget's cap in units of 1e-8 USD
    period_ms: int = 0
    cost: int | str = 0
    soft: bool = False  # a budget that allows and records instead of refusing
    only_check: bool = False  # answer as if taken, take nothing
    fits: bool = False  # a budget's block taken ahead: all of it under the cap, or none


@dataclass(frozen=True, slots=True)
class Seed:
    """A budget's spend rebuilt from the records, for a key Redis lost."""

    units: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """One check's answer, read from a reservation's flat list."""

    ok: bool
    remaining: int
    reset_ms: int
    retry_ms: int
    generation: str  # a budget's: its settlement names it


def reserve_spec(checks: list[Check], seeds: dict[int, Seed] | None = None) -> str:
    """RESERVE's ARGV[3] for these checks (seeds: budget index -> the spend to start at)."""
    parts = []
    for i, check in enumerate(checks):
        kind = check.kind.upper() if check.only_check else check.kind
        if check.kind == RATE:
            parts.append(f"{kind},{check.limit},{check.period_ms},{check.cost},")
        elif check.kind == CONCURRENCY:
            parts.append(f"{kind},{check.limit},{check.cost or ''},,")
        else:
            seed = (seeds or {}).get(i)
            found = f"{seed.units}:{secrets.token_hex(6)}:{seed.ttl_s}" if seed else ""
            hard = 2 if check.fits else 0 if check.soft else 1
            parts.append(f"{kind},{check.limit},{check.cost},{hard},{found}")
    return ";".join(parts)


def slot_names(lease: str, count: int) -> list[str]:
    """The members a concurrency check taking `count` slots adds (RESERVE's own names)."""
    return [lease] if count <= 1 else [f"{lease}#{j}" for j in range(1, count + 1)]


def missing_of(raw: list) -> list[int] | None:
    """The indexes of the budgets to seed, when a reservation took nothing for want of
    them; None when it answered."""
    return [int(i) - 1 for i in raw[1:]] if raw and raw[0] == -1 else None


def outcome(raw: list, i: int) -> Outcome:
    at = 5 * i
    return Outcome(raw[at] == 1, raw[at + 1], raw[at + 2], raw[at + 3],
                   raw[at + 4].decode() if raw[at + 4] else "")


def all_ok(raw: list) -> bool:
    return all(ok == 1 for ok in raw[::5])


# A settlement's items, as SETTLE reads them.
def settle_rate(check: Check, delta: int) -> str:
    return f"g,{check.period_ms / check.limit},{delta},"


def settle_leases(names: Sequence[str]) -> str:
    """Free these slots of one concurrency limit (a request's, or the ones a block
    holds unused at its end: one item, however many)."""
    return f"c,{' '.join(names)},,"


def settle_budget(check: Check, delta: int, generation: str) -> str:
    return f"b,{delta},{check.limit},{generation}"


class LimiterDown(Exception):
    """The limits Redis did not answer in time (down, hung, refusing)."""


Batch = tuple[list[str], list[str]]  # one organization's keys and settle items


class RedisLimiter:
    # A timeout may be this process's own event loop running late under load, not the
    # server: the breaker opens on the third in a row, or at once when the server
    # refuses or drops the connection.
    TIMEOUTS_TO_TRIP = 3

    def __init__(self, url: str, *, timeout: float, breaker_seconds: float) -> None:
        self._client = RespClient(url, timeout=timeout)
        self._breaker_seconds = breaker_seconds
        self._open_until = 0.0
        self._timeouts = 0
        self._reserve = Script(self._client, RESERVE)
        self._settle = Script(self._client, SETTLE)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _trip(self, exc: BaseException) -> LimiterDown:
        timed_out = isinstance(exc, TimeoutError)
        self._timeouts = self._timeouts + 1 if timed_out else 0
        if not timed_out or self._timeouts >= self.TIMEOUTS_TO_TRIP:
            if self.available:
                logger.warning("limits Redis unavailable for %.1fs: %r",
                               self._breaker_seconds, exc)
            self._open_until = time.monotonic() + self._breaker_seconds
        return LimiterDown(repr(exc))

    async def reserve(self, keys: list[str], spec: str, *, lease: str, lease_ms: int) -> list:
        if time.monotonic() < self._open_until:
            raise LimiterDown("breaker open")
        try:
            raw = await self._reserve(keys, (lease, lease_ms, spec))
        except (RespError, hiredis.ProtocolError, OSError, TimeoutError) as exc:
            raise self._trip(exc) from exc
        self._timeouts = 0
        return raw

    def settle_soon(self, batches: list[Batch],
                    done: Callable[[list[list] | None], None]) -> None:
        """Send each organization's batch (one script call each, all in one write) and
        call `done` with SETTLE's answers ([item index (1-based), spend, ...] of the
        budgets crossed, per batch) once they are all in. On a failure they are dropped
        (what they would give back stays taken: conservative) and `done` gets None."""
        if not self.available:
            logger.warning("dropped %d settlement batch(es): limits Redis unavailable",
                           len(batches))
            done(None)
            return
        futures = [self._settle.submit(keys, (";".join(items),)) for keys, items in batches]
        left = [len(futures)]

        def one_done(_: asyncio.Future) -> None:
            left[0] -= 1
            if left[0]:
                return
            failed = next((f.exception() for f in futures
                           if not f.cancelled() and f.exception() is not None), None)
            if failed is not None:
                self._trip(failed)
                logger.warning("dropped %d settlement batch(es): %r", len(batches), failed)
                done(None)
            else:
                done([f.result() for f in futures])

        for future in futures:
            future.add_done_callback(one_done)

    async def close(self) -> None:
        await self._client.close()


class LocalLimiter:
    """The same scripts in this process's memory: exact for one process (embedded mode);
    while the limits Redis is down, each process holds every limit by itself, so N
    processes let through at most N times a limit (an approximate bound, never none)."""

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

    async def reserve(self, keys: list[str], spec: str, *, lease: str, lease_ms: int) -> list:
        now = self._now()
        self._prune(now)
        checks = [part.split(",") for part in spec.split(";")]
        only_check = [kind.isupper() for kind, *_ in checks]
        checks = [[kind.lower(), *rest] for kind, *rest in checks]
        missing = []
        for i, (kind, _, _, _, seed) in enumerate(checks):
            if kind != BUDGET:
                continue
            state = self._budgets.get(keys[i])
            if state is not None and state[3] <= now:
                state = None
            if state is None:
                if not seed:
                    missing.append(i + 1)
                else:
                    spent, generation, ttl = seed.split(":")
                    self._budgets[keys[i]] = [int(spent), generation, False,
                                              now + int(ttl) * 1000]
        if missing:
            return [-1, *missing]
        out: list = []
        takes = []
        for key, (kind, a, b, c, _), check_only in zip(keys, checks, only_check, strict=True):
            n = int(a)
            if kind == RATE:
                period, cost = int(b), int(c)
                step = period / n
                tat = max(self._tats.get(key, now), now)
                after = tat + cost * step
                if after - period > now:
                    out += [0, math.floor((period - (tat - now)) / step), math.ceil(tat - now),
                            math.ceil(after - period - now), b""]
                elif check_only:
                    out += [1, math.floor((period - (tat - now)) / step), math.ceil(tat - now),
                            0, b""]
                else:
                    takes.append((kind, key, after))
                    out += [1, math.floor((period - (after - now)) / step),
                            math.ceil(after - now), 0, b""]
            elif kind == CONCURRENCY:
                leases = self._leases.setdefault(key, {})
                for expired in [k for k, expiry in leases.items() if expiry <= now]:
                    del leases[expired]
                want = int(b) if b else 1
                if len(leases) + want > n:
                    out += [0, 0, 0, 0, b""]
                elif check_only:
                    out += [1, n - len(leases), 0, 0, b""]
                else:
                    takes.append((kind, key, want))
                    out += [1, n - len(leases) - want, 0, 0, b""]
            else:
                state = self._budgets[key]
                ok = (c == "0" or state[0] < n) if c != "2" else state[0] + int(b) <= n
                if ok and not check_only:
                    takes.append((kind, key, int(b)))
                out += [1 if ok else 0, n - state[0], 0, 0, state[1].encode()]
        if all_ok(out):
            for kind, key, value in takes:
                if kind == RATE:
                    self._tats[key] = value
                elif kind == CONCURRENCY:
                    for name in slot_names(lease, value):
                        self._leases[key][name] = now + lease_ms
                else:
                    self._budgets[key][0] += value
        return out

    def tat(self, key: str) -> float | None:
        """A rate's theoretical arrival time (ms, this process's monotonic clock)."""
        return self._tats.get(key)

    def leases_in_flight(self, key: str, now: float) -> int:
        return sum(1 for expiry in self._leases.get(key, {}).values() if expiry > now)

    def settle_soon(self, batches: list[Batch],
                    done: Callable[[list[list] | None], None]) -> None:
        now = self._now()
        answers = []
        for keys, items in batches:
            crossed: list = []
            for i, (key, item) in enumerate(zip(keys, items, strict=True), start=1):
                kind, a, b, c = item.split(",")
                if kind == RATE:
                    tat, delta = self._tats.get(key), int(b)
                    if tat is None and delta <= 0:
                        continue
                    after = max(tat or now, now) + delta * float(a)
                    if after > now:
                        self._tats[key] = after
                    else:
                        self._tats.pop(key, None)
                elif kind == CONCURRENCY:
                    leases = self._leases.get(key, {})
                    for name in a.split(" "):
                        leases.pop(name, None)
                else:
                    state = self._budgets.get(key)
                    if state is None or state[1] != c:
                        continue
                    state[0] += int(a)
                    if state[0] >= int(b) and not state[2]:
                        state[2] = True
                        crossed += [i, state[0]]
            answers.append(crossed)
        done(answers)

    async def close(self) -> None:
        return None


Limiter = RedisLimiter | LocalLimiter

_local = LocalLimiter()
# A client belongs to the loop that made it (see caching.hot): the server has one loop;
# Django's sync paths and tests make short-lived ones.
_redis: "OrderedDict[asyncio.AbstractEventLoop, RedisLimiter]" = OrderedDict()
_MAX_LOOPS = 4


def local_limiter() -> LocalLimiter:
    return _local


def limiter() -> Limiter:
    """The limits store for the running loop: the limits Redis, or (no Redis configured,
    the embedded defaults) this process's memory."""
    loop = asyncio.get_running_loop()
    found = _redis.get(loop)
    if found is not None:
        return found  # every limited request asks: the settings only when it is new
    if not settings.COGNITUDE_LIMITS_REDIS_URL:
        return _local
    found = _redis[loop] = RedisLimiter(
        settings.COGNITUDE_LIMITS_REDIS_URL,
        timeout=settings.COGNITUDE_LIMITS_REDIS_TIMEOUT,
        breaker_seconds=settings.COGNITUDE_REDIS_BREAKER_SECONDS,
    )
    while len(_redis) > _MAX_LOOPS:
        _redis.popitem(last=False)
    return found

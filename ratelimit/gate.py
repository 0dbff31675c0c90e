"""The request path's two calls into the limits: `RequestLimits.take` before the cache
(every limit and budget that applies, taken in one round trip, or a refusal) and
`RequestLimits.settle` when the request is over (tokens and cost from the real usage,
the concurrency slot freed); and the limit on failed authentications per address.

Estimates, as documented in the README: a request's tokens are its body's bytes / 4
(a cheap upper-leaning guess at the prompt: JSON punctuation counts too) plus
`max_completion_tokens`, `max_tokens` or COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS
(times `n`); its cost is the price table's for those tokens. A cache hit counts as a
request (unless COGNITUDE_LIMITS_COUNT_HITS is off) but never against tokens or spend.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from analytics.prices import COST_QUANTUM, PriceBook, request_costs
from cognitude.db import run_in_db_thread
from cognitude.errors import error_body
from ratelimit.keys import address_key, budget_key, rate_key
from ratelimit.periods import BudgetPeriod, budget_period, openai_duration
from ratelimit.snapshot import BudgetSpec, LimitSpec, OrgLimits, Snapshots, org_limits, price_book
from ratelimit.store import (
    BUDGET,
    CONCURRENCY,
    RATE,
    Check,
    Limiter,
    LimiterDown,
    NeedSeeds,
    Outcome,
    Seed,
    Settlement,
    limiter,
    local_limiter,
)

logger = logging.getLogger("cognitude.ratelimit")

MINUTE_MS, DAY_MS = 60_000, 86_400_000
UNITS_PER_USD = 10 ** 8  # COST_QUANTUM: RequestLog.cost's precision
Header = tuple[bytes, bytes]

# Read once: settings lookups show in the hit path's profile.
_COUNT_HITS = settings.COGNITUDE_LIMITS_COUNT_HITS
_DEFAULT_COMPLETION = settings.COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS
_LEASE_MS = int(settings.COGNITUDE_LIMITS_LEASE_SECONDS * 1000)


def units(usd: Decimal) -> int:
    return int(usd.quantize(COST_QUANTUM).scaleb(8))


def usd(units_: int) -> Decimal:
    return Decimal(units_).scaleb(-8)


@dataclass(frozen=True, slots=True)
class Applied:
    """A check with what it stands for: rpm, rpd, tpm, concurrent or budget."""

    check: Check
    what: str
    label: str
    budget: BudgetSpec | None = None
    period: BudgetPeriod | None = None


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    status: int
    body: bytes
    headers: list[Header]
    reason: str  # RequestLog.error_type (ratelimit.periods.REJECTION_REASONS)


_COMPLETION_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def tokens_estimate(*, endpoint: str, body: dict, body_size: int) -> tuple[int, int]:
    """(prompt, completion) tokens to reserve for a request, before it is sent."""
    prompt = (body_size + 3) // 4
    if endpoint == "embeddings":
        return prompt, 0
    # Chat and legacy completions, the Responses API, Anthropic's Messages.
    completion = next((body[name] for name in _COMPLETION_FIELDS if body.get(name) is not None),
                      None)
    if not isinstance(completion, int) or isinstance(completion, bool) or completion < 0:
        completion = _DEFAULT_COMPLETION
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        completion *= n
    return prompt, completion


def _rate_checks(org_id: int, spec: LimitSpec, tokens: int) -> list[Applied]:
    found = []
    for what, limit, period, cost in (("rpd", spec.requests_per_day, DAY_MS, 1),
                                      ("rpm", spec.requests_per_minute, MINUTE_MS, 1),
                                      ("tpm", spec.tokens_per_minute, MINUTE_MS, tokens)):
        if limit:
            found.append(Applied(Check(rate_key(org_id, spec.scope, what), RATE, limit,
                                       period, cost), what, spec.label))
    if spec.concurrent_requests:
        found.append(Applied(Check(rate_key(org_id, spec.scope, "conc"), CONCURRENCY,
                                   spec.concurrent_requests), "concurrent", spec.label))
    return found


def _budget_check(org_id: int, spec: BudgetSpec, period: BudgetPeriod,
                  estimate: int) -> Applied:
    check = Check(budget_key(org_id, spec.scope, period), BUDGET, units(spec.limit_usd),
                  cost=estimate, soft=spec.soft)
    return Applied(check, "budget", spec.label, spec, period)


def _specs_for(limits: OrgLimits, key_id: int, model: str) -> list[LimitSpec]:
    scopes = ((None, ""), (None, model), (key_id, ""), (key_id, model))
    found = []
    for scope in scopes:
        spec = limits.limits.get(scope)
        if spec is not None and spec not in found:
            found.append(spec)
    return found


# --- Rebuilding budget counters from the records ---------------------------------------

def _spend_since(key: tuple[int, int | None, float]) -> Decimal:
    from ratelimit.selectors import period_spend

    org_id, key_id, since = key
    return period_spend(org_id=org_id, key_id=key_id, since=datetime.fromtimestamp(since, tz=UTC))


# Shared by the requests that find the same counter missing at once (a flush, a
# restart): one query, not one each; kept no longer than that query.
_spends: Snapshots[tuple[int, int | None, float], Decimal] = Snapshots(_spend_since, lambda: 0.0)


async def _seeds(org_id: int, applied: list[Applied], missing: list[int]) -> dict[int, Seed]:
    now = timezone.now()
    seeds = {}
    for i in missing:
        spec, period = applied[i].budget, applied[i].period
        assert spec is not None and period is not None
        spent = await _spends.get((org_id, spec.key_id, period.start.timestamp()))
        seeds[i] = Seed(units(spent), period.ttl_s(now))
    logger.info("org %s: rebuilt %d budget counter(s) from the records", org_id, len(seeds))
    return seeds


# --- Answers ------------------------------------------------------------------------

_NAMES = {"rpm": "requests per minute (RPM)", "rpd": "requests per day (RPD)",
          "tpm": "tokens per minute (TPM)"}


def _tightest(applied: list[Applied], outcomes: list[Outcome], kinds: tuple[str, ...]
              ) -> tuple[Applied, Outcome] | None:
    found = [(a, o) for a, o in zip(applied, outcomes, strict=True) if a.what in kinds]
    if not found:
        return None
    return min(found, key=lambda pair: (max(0, pair[1].remaining), pair[0].check.limit))


def rate_headers(applied: list[Applied], outcomes: list[Outcome]) -> list[Header]:
    """OpenAI's six x-ratelimit-* headers for the tightest request and token limits."""
    headers = []
    for kinds, noun in ((("rpm", "rpd"), b"requests"), (("tpm",), b"tokens")):
        tightest = _tightest(applied, outcomes, kinds)
        if tightest is not None:
            a, o = tightest
            headers += [(b"x-ratelimit-limit-" + noun, str(a.check.limit).encode()),
                        (b"x-ratelimit-remaining-" + noun, str(max(0, o.remaining)).encode()),
                        (b"x-ratelimit-reset-" + noun, openai_duration(o.reset_ms).encode())]
    return headers


def _retry_headers(retry_ms: float, *, retry: bool = True) -> list[Header]:
    headers = [(b"retry-after", str(max(1, math.ceil(retry_ms / 1000))).encode()),
               (b"retry-after-ms", str(max(1, math.ceil(retry_ms))).encode())]
    if not retry:
        # The OpenAI SDK honours this: waiting a few seconds cannot help.
        headers.append((b"x-should-retry", b"false"))
    return headers


def _refusal(a: Applied, o: Outcome) -> tuple[float, LimitRefusal]:
    """(how long it stands, in ms, for choosing among several) and the answer."""
    check = a.check
    if a.what == "budget":
        assert a.period is not None
        ms = a.period.seconds_left(timezone.now()) * 1000
        start = a.period.start
        message = (f"Refused: {a.label} is spent (${usd(check.limit - o.remaining):f} since "
                   f"{start:%Y-%m-%d %H:%M} {start.tzname()}); it renews at "
                   f"{a.period.end:%Y-%m-%d %H:%M} {a.period.end.tzname()}.")
        body = error_body(429, message, code="insufficient_quota", type="insufficient_quota")
        return math.inf, LimitRefusal(429, body, _retry_headers(ms, retry=False),
                                      f"budget_{a.period.name}")
    if a.what == "concurrent":
        message = (f"Too many concurrent requests for the {a.label}: limit {check.limit}. "
                   "Retry when one of your requests in flight has finished.")
        body = error_body(429, message, code="rate_limit_exceeded", type="requests")
        return 1000, LimitRefusal(429, body, _retry_headers(1000), "rate_limit_concurrent")
    kind = "tokens" if a.what == "tpm" else "requests"
    if check.cost > check.limit:
        message = (f"Request too large for {_NAMES[a.what]} on the {a.label}: limit "
                   f"{check.limit}, requested {check.cost}. Send a shorter request or "
                   "a smaller max_tokens.")
        body = error_body(429, message, code="rate_limit_exceeded", type=kind)
        return math.inf, LimitRefusal(429, body, _retry_headers(60_000, retry=False),
                                      f"rate_limit_{a.what}")
    used = check.limit - max(0, o.remaining)
    message = (f"Rate limit reached for {_NAMES[a.what]} on the {a.label}: limit "
               f"{check.limit}, used {used}, requested {check.cost}. Please try again in "
               f"{openai_duration(o.retry_ms)}.")
    body = error_body(429, message, code="rate_limit_exceeded", type=kind)
    return o.retry_ms, LimitRefusal(429, body, _retry_headers(o.retry_ms),
                                    f"rate_limit_{a.what}")


def _unavailable() -> LimitRefusal:
    body = error_body(503, "The rate-limit store is unavailable and this organization's "
                      "limits fail closed: try again shortly.", code="limits_unavailable")
    seconds = settings.COGNITUDE_REDIS_BREAKER_SECONDS
    return LimitRefusal(503, body, _retry_headers(seconds * 1000), "limits_unavailable")


# --- One request's passage ----------------------------------------------------------

@dataclass(slots=True)
class _Reservation:
    store: Limiter
    org_id: int
    lease: str
    applied: list[Applied]
    outcomes: list[Outcome]
    prices: PriceBook | None


class RequestLimits:
    """One request's limits: `take` them before the cache, `settle` once it is over.
    `headers` are the x-ratelimit-* headers for its answer (none when no limit applies)."""

    __slots__ = ("headers", "_reservation")

    def __init__(self) -> None:
        self.headers: list[Header] = []
        self._reservation: _Reservation | None = None

    async def take(self, *, org_id: int, key_id: int, endpoint: str, body: dict,
                   body_size: int, lease: str) -> LimitRefusal | None:
        """Take every limit and budget that applies to this request, or none of them
        and say why not. `lease` names its concurrency slot (the request id)."""
        limits = await org_limits.get(org_id)
        if limits.empty:
            return None
        model = body.get("model") or ""
        specs = _specs_for(limits, key_id, model)
        budgets = [b for b in limits.budgets if b.key_id is None or b.key_id == key_id]
        if not specs and not budgets:
            return None
        prompt, completion = tokens_estimate(endpoint=endpoint, body=body, body_size=body_size)
        applied: list[Applied] = []
        prices = None
        if budgets:
            prices = await price_book()
            cost = prices.cost(model, timezone.now(), prompt, completion)
            estimate = units(cost) if cost is not None else 0
            applied += [_budget_check(org_id, spec, budget_period(spec.period, limits.time_zone),
                                      estimate) for spec in budgets]
        for spec in specs:
            applied += _rate_checks(org_id, spec, prompt + completion)
        checks = [a.check for a in applied]
        store = limiter()
        try:
            outcomes = await _reserve(store, org_id, applied, checks, lease)
        except LimiterDown:
            # The script may have run and only its answer been lost: free any slot it took.
            releases = [Settlement(a.check, lease=lease) for a in applied
                        if a.check.kind == CONCURRENCY]
            if releases and store is not local_limiter():
                settlements.add(store, org_id, releases)
            if limits.fail_closed:
                return _unavailable()
            store = local_limiter()
            outcomes = await _reserve(store, org_id, applied, checks, lease)
        self.headers = rate_headers(applied, outcomes)
        refused = [_refusal(a, o) for a, o in zip(applied, outcomes, strict=True) if not o.ok]
        if refused:
            return max(refused, key=lambda found: found[0])[1]
        self._reservation = _Reservation(store, org_id, lease, applied, outcomes, prices)
        return None

    def settle(self, *, model: str, status: int, hit: bool, prompt_tokens: int,
               completion_tokens: int) -> None:
        """Settle what `take` reserved with what the request really used (in the
        background: the answer has gone)."""
        taken, self._reservation = self._reservation, None
        if taken is None:
            return
        known = bool(prompt_tokens or completion_tokens)
        items: list[Settlement] = []
        for a, o in zip(taken.applied, taken.outcomes, strict=True):
            check = a.check
            if a.what == "tpm":
                # No usage on an answered miss (a stream cut short): keep the estimate.
                used = (prompt_tokens + completion_tokens if known
                        else 0 if hit or status != 200 else check.cost)
                if used != check.cost:
                    items.append(Settlement(check, delta=used - check.cost))
            elif a.what in ("rpm", "rpd"):
                if hit and not _COUNT_HITS:
                    items.append(Settlement(check, delta=-1))
            elif a.what == "concurrent":
                items.append(Settlement(check, lease=taken.lease))
            else:
                assert taken.prices is not None
                cost, _ = request_costs(prices=taken.prices, model=model, hit=hit,
                                        status=status, prompt_tokens=prompt_tokens,
                                        completion_tokens=completion_tokens,
                                        at=timezone.now())
                real = units(cost) if cost is not None else 0
                items.append(Settlement(check, delta=real - check.cost,
                                        generation=o.generation, note=a))
        if items:
            settlements.add(taken.store, taken.org_id, items)


async def _reserve(store: Limiter, org_id: int, applied: list[Applied], checks: list[Check],
                   lease: str) -> list[Outcome]:
    found = await store.reserve(checks, lease=lease, lease_ms=_LEASE_MS, seeds={})
    if isinstance(found, NeedSeeds):
        seeds = await _seeds(org_id, applied, found.indexes)
        found = await store.reserve(checks, lease=lease, lease_ms=_LEASE_MS, seeds=seeds)
        # Seeded in the same script that takes: a second miss means another flush just now.
        if isinstance(found, NeedSeeds):
            raise LimiterDown("budget counters lost twice in a row")
    return found


# --- Settling in the background -----------------------------------------------------

class _Settlements:
    """Settlements queued by requests as they end and sent together: one script call
    per organization, all in one pipelined round trip, per turn of the event loop."""

    def __init__(self) -> None:
        self._pending: dict[Limiter, list[tuple[int, list[Settlement]]]] = {}
        self._tasks: set[asyncio.Task] = set()

    def add(self, store: Limiter, org_id: int, items: list[Settlement]) -> None:
        if not self._pending:
            task = asyncio.get_running_loop().create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._pending.setdefault(store, []).append((org_id, items))

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for store, entries in pending.items():
            by_org: dict[int, list[Settlement]] = {}
            for org_id, items in entries:
                by_org.setdefault(org_id, []).extend(items)
            try:
                crossed = await store.settle(list(by_org.values()))
            except LimiterDown:
                # Reservations stay taken (conservative): rates drain within their
                # period, leases expire, a budget is rebuilt when its counter goes.
                logger.warning("dropped %d settlement(s): limits Redis unavailable",
                               sum(len(items) for items in by_org.values()))
                continue
            for (org_id, items), found in zip(by_org.items(), crossed, strict=True):
                for index, spent in found:
                    _crossing_record(org_id, items[index].note, spent)

    async def drain(self) -> None:
        """Wait for the settlements in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)


settlements = _Settlements()
_recording: set[asyncio.Task] = set()


def _crossing_record(org_id: int, applied: Applied, spent: int) -> None:
    from ratelimit.services import budget_crossing_record

    assert applied.budget is not None and applied.period is not None
    task = asyncio.get_running_loop().create_task(run_in_db_thread(
        budget_crossing_record, org_id=org_id, budget=applied.budget,
        period_start=applied.period.start.date(), spend_usd=usd(spent)))
    _recording.add(task)
    task.add_done_callback(_recording.discard)


# --- Failed authentication per client address ---------------------------------------

# address -> when (monotonic) this process stops refusing it without asking Redis.
_blocked: dict[str, float] = {}


def address_refusal(address: str) -> LimitRefusal | None:
    """The answer for an address over its failed-authentication limit, from this
    process's memory alone: no Redis call, no database."""
    until = _blocked.get(address)
    if until is None:
        return None
    left = until - time.monotonic()
    if left <= 0:
        del _blocked[address]
        return None
    return _address_refusal(left * 1000)


def _address_refusal(retry_ms: float) -> LimitRefusal:
    body = error_body(429, "Too many requests with an invalid API key from this address: "
                      f"try again in {openai_duration(retry_ms)}.",
                      code="rate_limit_exceeded", type="requests")
    return LimitRefusal(429, body, _retry_headers(retry_ms), "rate_limit_unauthenticated")


async def address_failed(address: str) -> None:
    """Count a failed authentication against its address (one Redis call). Over
    COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE, this process refuses the address from
    memory (`address_refusal`) until its rate falls back."""
    per_minute = settings.COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE
    if not per_minute or not address:
        return
    checks = [Check(address_key(address), RATE, per_minute, MINUTE_MS, 1)]
    try:
        [outcome] = await limiter().reserve(checks, lease="", lease_ms=0, seeds={})
    except LimiterDown:
        [outcome] = await local_limiter().reserve(checks, lease="", lease_ms=0, seeds={})
    if not outcome.ok:
        if len(_blocked) > 10_000:
            _blocked.clear()
        _blocked[address] = time.monotonic() + outcome.retry_ms / 1000


def client_address(scope: dict) -> str:
    client = scope.get("client")
    return client[0] if client else ""


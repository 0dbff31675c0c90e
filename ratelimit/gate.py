"""The request path's calls into the limits: `RequestLimits.take` before the cache (every
limit and budget that applies, checked in one round trip, or a refusal), `take_upstream`
before a call upstream (what only such a call spends: tokens, cost, a slot in flight,
taken all or none) and `settle` when the request is over (tokens and cost from the real
usage, the slot freed); and the limit on failed authentications per address.

Why two steps: a cache hit spends no tokens and no money and is over in well under a
millisecond, so reserving those for it and giving them back would be a second round trip
on every hit (and the Redis work of both): before the cache, a key over any of its limits
is refused (it never reaches the cache), and only what a hit spends is taken (a request,
when hits count); a miss then takes the rest before it goes upstream, atomically, so
concurrent misses still overrun a budget by at most one reservation.

Estimates, as documented in the README: a request's tokens are its body's bytes / 4
(a cheap upper-leaning guess at the prompt: JSON punctuation counts too) plus
`max_completion_tokens`, `max_tokens` or `max_output_tokens`, else
COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS (times `n`); its cost is the price table's for
those tokens. A cache hit counts as a request (unless COGNITUDE_LIMITS_COUNT_HITS is
off) but never against tokens or spend.

Every request pays for this, hits included, so the work that does not depend on the
request is done once per organization, key and model (`Plan`) and a request fills in
its token count and cost estimate. And both calls take ahead when the limits have plenty
left: the first call's `Grant` takes 1/16 of what remains of a request limit (16 to 256
requests) for the requests this process will see in the next
COGNITUDE_LIMITS_GRANT_SECONDS, and a call upstream's `Block` takes what 16 to 256 misses
like it would (tokens, cost estimates, and slots in flight for those held at once; at
most 1/16 of what is left of each) for the misses after it, which draw from it and
settle into it without a call of their own. What was not used goes back when that time
is over. Near a limit (under 256 requests, or under 1/16 of any limit or budget, left)
every request makes its own calls, exactly as without.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.utils import timezone

from analytics.prices import COST_QUANTUM, PriceBook, request_costs
from cognitude.db import run_in_db_thread
from cognitude.errors import error_body
from ratelimit.keys import address_key, budget_key, rate_key
from ratelimit.periods import BudgetPeriod, budget_period, openai_duration
from ratelimit.snapshot import (
    BudgetSpec,
    LimitSpec,
    OrgLimits,
    Snapshots,
    org_limits,
    price_books,
)
from ratelimit.store import (
    BUDGET,
    CONCURRENCY,
    RATE,
    Check,
    Limiter,
    LimiterDown,
    Outcome,
    Seed,
    all_ok,
    limiter,
    local_limiter,
    missing_of,
    outcome,
    reserve_spec,
    settle_budget,
    settle_leases,
    settle_rate,
    slot_names,
)
from routing.table import RoutingTable

logger = logging.getLogger("cognitude.ratelimit")

MINUTE_MS, DAY_MS = 60_000, 86_400_000
Header = tuple[bytes, bytes]
# A plan's placeholders for what each request fills in, and its first call's requests.
TOKENS, ESTIMATE, AHEAD = "{t}", "{e}", "{n}"

# Read once: settings lookups show in the hit path's profile.
_COUNT_HITS = settings.COGNITUDE_LIMITS_COUNT_HITS
_DEFAULT_COMPLETION = settings.COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS
_LEASE_MS = int(settings.COGNITUDE_LIMITS_LEASE_SECONDS * 1000)
_GRANT_SECONDS = settings.COGNITUDE_LIMITS_GRANT_SECONDS
# A grant takes this share of what a limit has left, at most _GRANT_MOST requests; one
# that would take fewer than _GRANT_LEAST is not made (a limit with under 256 left is
# exact: every request asks Redis, so a burst at its end admits exactly what it allows).
_GRANT_SHARE, _GRANT_LEAST, _GRANT_MOST = 16, 16, 256
_UNCOUNTED = 1 << 62
_COMPLETION_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def units(usd: Decimal) -> int:
    """USD in the counters' units (1e-8 USD, RequestLog.cost's precision)."""
    return int(usd.quantize(COST_QUANTUM).scaleb(8))


def usd(units_: int) -> Decimal:
    return Decimal(units_).scaleb(-8)


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    status: int
    body: bytes
    headers: list[Header]
    reason: str  # RequestLog.error_type (ratelimit.periods.REJECTION_REASONS)


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


# --- What applies to a key and a model ------------------------------------------------

@dataclass(frozen=True, slots=True)
class Entry:
    """One check of a plan, with what it stands for: rpm, rpd, tpm, concurrent, budget."""

    check: Check  # a tpm check's cost is TOKENS, a budget's ESTIMATE
    what: str
    label: str
    budget: BudgetSpec | None = None
    period: BudgetPeriod | None = None


@dataclass(slots=True)
class Grant:
    """A first call's answer, served for a moment to the requests after it: `ahead`
    requests it took for them on each limit a hit takes (rpm, rpd) and has not handed
    out yet, and what it found on the limits it only checked (tokens, spend, slots in
    flight: a cache hit spends none, and a call upstream takes those exactly)."""

    store: "Limiter"
    raw: list
    ahead: int
    until: float  # monotonic
    # rate_headers of the answer as it read for the call's own request, and the least
    # requests it left on a request limit (the tightest, which x-ratelimit-remaining-
    # requests, headers[1], names: all of them move by one a request alike).
    headers: list[Header]
    least: int | None

    def serve(self) -> list[Header]:
        """One request's share of the grant: its x-ratelimit-* headers."""
        self.ahead -= 1
        headers = list(self.headers)
        if self.least is not None:
            headers[1] = (b"x-ratelimit-remaining-requests",
                          str(max(0, self.least + self.ahead)).encode())
        return headers


class _Taking:
    """A call taking ahead for a plan, in flight: the requests that come meanwhile wait
    for it (what it takes is likely theirs) rather than each make a call of its own, and
    one call at a time takes ahead, so a busy moment does not take many at once."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future | None = None

    def start(self) -> None:
        self.future = asyncio.get_running_loop().create_future()

    def done(self) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        future = self.future
        # (One made on another event loop, a short-lived one's, is not waited on.)
        if future is not None and future.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(future)


@dataclass(slots=True)
class Plan:
    """What applies to one key and model of an organization: the rows that match it (the
    organization's, its model's, the key's, the key's model's) and its budgets, budgets
    first (their refusals say the most), as the two calls' keys and specs."""

    entries: tuple[Entry, ...]
    keys: list[str]
    # Before the cache: takes what a hit spends (a request, when hits count: AHEAD of
    # them for a grant; `first` is the template's one) and only checks the rest.
    first: str
    first_template: str
    first_checks: list[Check]
    hit_taken: tuple[int, ...]  # the entries the first call takes
    # Before going upstream: the entries taken then (their indexes in `entries`), and a
    # reserve_spec with TOKENS and ESTIMATE in it.
    upstream: tuple[int, ...]
    upstream_keys: list[str]
    upstream_template: str
    has_budgets: bool
    # A budget's period ends (Unix time): its key names the period, so a new plan then.
    until: float
    # What its grant is kept under: the same limits' plan rebuilt (each snapshot of the
    # organization's limits has its own plans) finds the grant still there.
    grant_key: tuple[str, ...] = ()
    taking_grant: _Taking = field(default_factory=_Taking)
    taking_block: _Taking = field(default_factory=_Taking)
    # The upstream entries, and where their token limits are among them; whether the
    # requests are taken upstream too (hits not counted: their headers change there).
    upstream_entries: tuple[Entry, ...] = ()
    upstream_tpm: tuple[int, ...] = ()
    upstream_requests: bool = False

    @property
    def grant(self) -> Grant | None:
        return _grants.get(self.grant_key)

    @grant.setter
    def grant(self, grant: Grant) -> None:
        if len(_grants) > 10_000:
            _grants.clear()  # their give-backs hold them still
        _grants[self.grant_key] = grant


# Plans' grants by Plan.grant_key, in this process.
_grants: dict[tuple[str, ...], Grant] = {}


@dataclass(slots=True)
class Block:
    """What a call upstream took ahead, for the misses of this process after it, in the
    next COGNITUDE_LIMITS_GRANT_SECONDS: of each entry the plan takes upstream, what
    `count` such requests would take (their tokens, cost estimates, and requests when
    hits take none) and slots in flight for what they hold at once (`_block_slots`). A
    miss draws its own share from it, with no call, and settles into it (real tokens
    and cost for the estimates, its slot back). At its end (`_block_end`) what no
    request holds goes back; the requests still in flight settle into it still, and it
    sends their settlements in one call when the last of them is over, or one
    COGNITUDE_LIMITS_GRANT_SECONDS later at most (`_block_close`: any still in flight
    then settle with the store, as if each had made its own call)."""

    store: Limiter
    org_id: int
    raw: list  # the call's answer, one outcome per upstream entry
    kinds: tuple[str, ...]  # the upstream entries' check kinds
    taken: list[int]  # per upstream entry: what the call took
    used: list[int]  # per upstream entry: what requests drew, settled to their real use
    slots: list[str]  # the slots it took that no request holds now
    until: float  # monotonic
    over: bool = False  # ended: nothing more is drawn from it
    closed: bool = False  # settled for good: requests drawn from it settle with the store
    holding: int = 0  # requests drawn from it and not settled yet
    peak: int = 0  # the most slots its requests held at once (sizes the next block's)

    def draw(self, needs: list[int]) -> tuple[list, str] | None:
        """A request's share, if the block is live and has it: its answer, as its own
        call would have read, and the slot in flight it holds ('' without one)."""
        if self.over or time.monotonic() >= self.until:
            return None
        used, taken = self.used, self.taken
        for at, need in enumerate(needs):
            if used[at] + need > taken[at]:
                return None
        return self.share(needs), self.slots.pop() if self.slots else ""

    def share(self, needs: list[int]) -> list:
        """Draw `needs`; the answer as the request's own call would have read: a rate's
        and a slot's remaining count what the block still holds as not taken (the
        script reads those after its take), a budget's what was spent before this
        request (read before it)."""
        raw, used, taken = list(self.raw), self.used, self.taken
        self.holding += 1
        for at, kind in enumerate(self.kinds):
            if kind == BUDGET:
                raw[5 * at + 1] -= used[at]
                used[at] += needs[at]
            else:
                used[at] += needs[at]
                raw[5 * at + 1] += taken[at] - used[at]
                if kind == CONCURRENCY and used[at] > self.peak:
                    self.peak = used[at]
        return raw


# Plans' blocks by Plan.grant_key, in this process.
_blocks: dict[tuple[str, ...], Block] = {}


def _rate_entries(org_id: int, spec: LimitSpec) -> list[Entry]:
    found = []
    for what, limit, period, cost in (("rpd", spec.requests_per_day, DAY_MS, 1),
                                      ("rpm", spec.requests_per_minute, MINUTE_MS, 1),
                                      ("tpm", spec.tokens_per_minute, MINUTE_MS, TOKENS)):
        if limit:
            found.append(Entry(Check(rate_key(org_id, spec.scope, what), RATE, limit,
                                     period, cost), what, spec.label))
    if spec.concurrent_requests:
        found.append(Entry(Check(rate_key(org_id, spec.scope, "conc"), CONCURRENCY,
                                 spec.concurrent_requests), "concurrent", spec.label))
    return found


def _taken_by_hits(entry: Entry) -> bool:
    return _COUNT_HITS and (entry.what == "rpm" or entry.what == "rpd")


def _only_checked(check: Check) -> Check:
    """The check as the first call makes it: whether one more unit would fit."""
    return replace(check, cost=1 if check.kind == RATE else 0, only_check=True)


def _plan_build(limits: OrgLimits, key_id: int, model: str, now: datetime) -> Plan:
    entries = []
    until = math.inf
    for spec in limits.budgets:
        if spec.key_id is None or spec.key_id == key_id:
            period = budget_period(spec.period, limits.time_zone, now)
            until = min(until, period.end.timestamp())
            entries.append(Entry(Check(budget_key(limits.org_id, spec.scope, period), BUDGET,
                                       units(spec.limit_usd), cost=ESTIMATE, soft=spec.soft),
                                 "budget", spec.label, spec, period))
    has_budgets = bool(entries)
    specs: list[LimitSpec] = []
    for scope in ((None, ""), (None, model), (key_id, ""), (key_id, model)):
        spec = limits.limits.get(scope)
        if spec is not None and spec not in specs:
            specs.append(spec)
            entries += _rate_entries(limits.org_id, spec)
    first = [e.check if _taken_by_hits(e) else _only_checked(e.check) for e in entries]
    hit_taken = tuple(i for i, e in enumerate(entries) if _taken_by_hits(e))
    template = [replace(c, cost=AHEAD) if i in hit_taken else c for i, c in enumerate(first)]
    upstream = tuple(i for i, e in enumerate(entries) if not _taken_by_hits(e))
    upstream_checks = [entries[i].check for i in upstream]
    return Plan(tuple(entries), [c.key for c in first], reserve_spec(first),
                reserve_spec(template), first, hit_taken, upstream,
                [c.key for c in upstream_checks], reserve_spec(upstream_checks), has_budgets,
                until, (reserve_spec(first), *(c.key for c in first)),
                upstream_entries=tuple(entries[i] for i in upstream),
                upstream_tpm=tuple(at for at, i in enumerate(upstream)
                                   if entries[i].what == "tpm"),
                upstream_requests=any(entries[i].what in ("rpm", "rpd") for i in upstream))


def _first_checks(plan: Plan, ahead: int) -> list[Check]:
    if ahead == 1:
        return plan.first_checks
    return [replace(c, cost=ahead) if i in plan.hit_taken else c
            for i, c in enumerate(plan.first_checks)]


def _upstream_checks(entries: Sequence[Entry], tokens: int, estimate: int) -> list[Check]:
    return [replace(e.check, cost=tokens if e.check.cost == TOKENS else
                    estimate if e.check.cost == ESTIMATE else e.check.cost)
            for e in entries]


def _ahead(plan: Plan) -> int:
    """How many requests the next first call takes: one, or for a grant a share of what
    the tightest limit had left at the last call."""
    last = plan.grant
    if last is None or not plan.hit_taken or not _GRANT_SECONDS or not _room(plan, last.raw):
        return 1
    ahead = min(min(last.raw[5 * i + 1] for i in plan.hit_taken) // _GRANT_SHARE, _GRANT_MOST)
    return ahead if ahead >= _GRANT_LEAST else 1


def _room(plan: Plan, raw: list) -> bool:
    """Whether every limit the first call only checks (tokens, spend, slots) had plenty
    left: at least 1/16 of it, and 16. Near one, no grant is made, so every request asks
    Redis and a hit meets the limit exactly (a soft budget refuses nothing: not asked)."""
    for i in plan.upstream:
        check = plan.entries[i].check
        if not check.soft and raw[5 * i + 1] < max(_GRANT_SHARE, check.limit // _GRANT_SHARE):
            return False
    return True


def _granted(grant: Grant | None) -> bool:
    """Whether a grant has requests to hand out, now."""
    return grant is not None and grant.ahead > 0 and time.monotonic() < grant.until


def _give_back(plan: Plan, grant: Grant) -> None:
    """At a grant's end: the requests it took and no request used, back to their limits.
    Sent at once, not with the turn's settlements: a first call made now goes after it
    on the connection, so it counts them as back (and its headers do not dip)."""
    unused, grant.ahead = grant.ahead, 0
    if unused <= 0:
        return
    checks = [plan.first_checks[i] for i in plan.hit_taken]
    grant.store.settle_soon([([c.key for c in checks], [settle_rate(c, -unused) for c in checks])],
                            _nothing_crossed)


def _nothing_crossed(answers: list[list] | None) -> None:
    """A rate's settlement crosses no budget: nothing to record."""


def _needs(entries: Sequence[Entry], tokens: int, estimate: int) -> list[int]:
    """What a request takes of each upstream entry: its tokens, its cost estimate, one
    request, one slot."""
    return [tokens if e.what == "tpm" else estimate if e.what == "budget" else 1
            for e in entries]


def _block_count(plan: Plan, raw: list, needs: list[int]) -> int:
    """How many requests like this one a call upstream takes for: one, or for a block
    as many as 1/16 of what the first call found left of every upstream entry allows
    (16 to 256). Near any of them (under 1/16 of it, or 16, left) one: every request
    then takes exactly what it reserves, soft budgets too (their crossing is recorded
    by the settlement that makes it)."""
    if not _GRANT_SECONDS:
        return 1
    count = _GRANT_MOST
    for at, i in enumerate(plan.upstream):
        check = plan.entries[i].check
        left = raw[5 * i + 1]
        if left < max(_GRANT_SHARE, check.limit // _GRANT_SHARE):
            return 1
        if needs[at]:
            count = min(count, left // _GRANT_SHARE // needs[at])
    return count if count >= _GRANT_LEAST else 1


def _block_slots(last: Block | None, count: int) -> int:
    """How many slots in flight a block for `count` requests takes. Its requests give
    theirs back to it as they end, so it needs what they hold at once, not one each:
    twice what the plan's last block's held at most (16 at least, `count` at most).
    One each made every block add and free up to 256 sorted-set members, ten times a
    second: the limits Redis's scripts took ~390-460 µs a call on average under the
    load benchmark's limited misses, ~150 µs without."""
    return count if last is None else min(count, max(_GRANT_LEAST, 2 * last.peak))


def _block_checks(entries: Sequence[Entry], needs: list[int], count: int,
                  slots: int) -> list[Check]:
    return [replace(e.check, cost=slots, only_check=False) if e.check.kind == CONCURRENCY
            else replace(e.check, cost=need * count, fits=e.check.kind == BUDGET)
            for e, need in zip(entries, needs, strict=True)]


def _block_end(plan: Plan, block: Block) -> None:
    """At a block's end: what it took and no request used or holds, back to the store
    (sent at once, so a call made now goes after it on the connection). What requests
    still in flight settle into it is sent when the last of them is over (`settle`),
    or one COGNITUDE_LIMITS_GRANT_SECONDS later at most."""
    if block.over:
        return
    block.over = True
    _block_flush(plan, block)
    if block.holding:
        asyncio.get_running_loop().call_later(_GRANT_SECONDS, _block_close, plan, block)
    else:
        block.closed = True


def _block_close(plan: Plan, block: Block) -> None:
    """What the requests in flight at a block's end settled into it since, to the store;
    any still in flight settle with it themselves from now on."""
    if not block.closed:
        block.closed = True
        _block_flush(plan, block)


def _block_flush(plan: Plan, block: Block) -> None:
    """To the store, in one call: the difference between what the block took and what
    its requests used (settled to their real use, estimates in flight included), and
    the slots no request holds; after it the block holds what it sent as its own. A
    budget it moved past its cap (real costs over their estimates) records the
    crossing."""
    keys: list[str] = []
    items: list[str] = []
    notes: list[Entry | None] = []
    for at, i in enumerate(plan.upstream):
        entry = plan.entries[i]
        check = entry.check
        if check.kind == CONCURRENCY:
            if block.slots:
                keys.append(check.key)
                items.append(settle_leases(block.slots))
                notes.append(None)
            continue
        delta = block.used[at] - block.taken[at]
        if not delta:
            continue
        if check.kind == RATE:
            items.append(settle_rate(check, delta))
        else:
            generation = block.raw[5 * at + 4]
            items.append(settle_budget(check, delta, generation.decode() if generation else ""))
        keys.append(check.key)
        notes.append(entry if check.kind == BUDGET else None)
    block.slots = []
    block.taken = list(block.used)
    if items:
        orgs = [(block.org_id, (keys, items, notes))]
        block.store.settle_soon([(keys, items)], partial(_Settlements.crossings, orgs))


_MAX_PLANS = 1000  # per snapshot: model names are the clients' to choose


def _plan(limits: OrgLimits, key_id: int, model: str) -> Plan:
    plan = limits.plans.get((key_id, model))
    if plan is None or time.time() >= plan.until:
        plan = _plan_build(limits, key_id, model, timezone.now())
        if len(limits.plans) >= _MAX_PLANS:
            limits.plans.clear()
        limits.plans[(key_id, model)] = plan
    return plan


# A model's price per token in units, by price book and day: the estimate is an upper
# bound, so floats do (the settlement's real cost is the records' own, in Decimal).
_rates: dict[tuple[PriceBook, str, object], tuple[float, float]] = {}


def _estimate(prices: PriceBook, model: str, prompt: int, completion: int) -> int:
    """A request's cost estimate in units (0 for an unpriced model)."""
    key = (prices, model, int(time.time() // 86_400))  # the UTC day: prices change by day
    rates = _rates.get(key)
    if rates is None:
        price = prices.price_for(model, datetime.now(UTC))
        rates = ((float(price.input_per_million) * 100, float(price.output_per_million) * 100)
                 if price else (0.0, 0.0))
        if len(_rates) > 10_000:
            _rates.clear()
        _rates[key] = rates
    return math.ceil(prompt * rates[0] + completion * rates[1])


def _priced_as(routing: RoutingTable | None, model: str) -> list[str]:
    """The models a request for `model` may be answered by: a route's targets (its name
    is often an alias with no price of its own), else the model itself."""
    route = routing.routes.get(model) if routing is not None else None
    return [t.upstream_model for t in route.targets] if route and route.targets else [model]


# --- Rebuilding budget counters from the records ---------------------------------------

def _spend_since(key: tuple[int, int | None, float]) -> Decimal:
    from ratelimit.selectors import period_spend

    org_id, key_id, since_s = key
    since = datetime.fromtimestamp(since_s, tz=UTC)
    spent = period_spend(org_id=org_id, key_id=key_id, since=since)
    # Said once per rebuild, not by every request that found the counter gone. A new
    # period's counter starts this way too; one with spend already recorded was lost:
    # the limits Redis restarted, was flushed, or evicts (it should not: README).
    logger.log(logging.WARNING if spent else logging.INFO,
               "org %s: budget counter missing from the limits Redis, rebuilt from the "
               "records ($%s spent since %s)", org_id, spent, since.isoformat())
    return spent


# Shared by the requests that find the same counter missing at once (a flush, a
# restart): one query, not one each; kept no longer than that query.
_spends: Snapshots[tuple[int, int | None, float], Decimal] = Snapshots(_spend_since, lambda: 0.0)


async def _seeds(org_id: int, entries: Sequence[Entry], missing: list[int]) -> dict[int, Seed]:
    now = timezone.now()
    seeds = {}
    for i in missing:
        spec, period = entries[i].budget, entries[i].period
        assert spec is not None and period is not None
        spent = await _spends.get((org_id, spec.key_id, period.start.timestamp()))
        seeds[i] = Seed(units(spent), period.ttl_s(now))
    return seeds


# `entries`' checks as a call sends them, their costs filled in: asked for only on the
# rare paths (budgets to rebuild, a lost answer), not made for every request.
ChecksSent = Callable[[], list[Check]]


async def _reserve(store: Limiter, org_id: int, entries: Sequence[Entry], checks: ChecksSent,
                   keys: list[str], spec: str, lease: str) -> list:
    """One call's answer (the rare path, when budgets must be rebuilt, sends the checks
    again with their seeds)."""
    raw = await store.reserve(keys, spec, lease=lease, lease_ms=_LEASE_MS)
    missing = missing_of(raw)
    if missing:
        seeds = await _seeds(org_id, entries, missing)
        raw = await store.reserve(keys, reserve_spec(checks(), seeds), lease=lease,
                                  lease_ms=_LEASE_MS)
        # Seeded in the script that takes: a second miss means another flush just now.
        if missing_of(raw):
            raise LimiterDown("budget counters lost twice in a row")
    return raw


# --- Answers ------------------------------------------------------------------------

_NAMES = {"rpm": "requests per minute (RPM)", "rpd": "requests per day (RPD)",
          "tpm": "tokens per minute (TPM)"}


Tightest = tuple[int, int, int]  # remaining, limit, reset ms


def _tightest(entries: Sequence[Entry], raw: list, among: Sequence[int]) -> Tightest:
    """Of the entries at `among` (a kind alike): the least remaining; of two alike, the
    smaller limit."""
    return min((raw[5 * i + 1], entries[i].check.limit, raw[5 * i + 2]) for i in among)


def _rate_triple(noun: bytes, tightest: Tightest) -> list[Header]:
    remaining, limit, reset_ms = tightest
    return [(b"x-ratelimit-limit-" + noun, str(limit).encode()),
            (b"x-ratelimit-remaining-" + noun, str(max(0, remaining)).encode()),
            (b"x-ratelimit-reset-" + noun, openai_duration(reset_ms).encode())]


def rate_headers(entries: tuple[Entry, ...], raw: list) -> list[Header]:
    """OpenAI's six x-ratelimit-* headers for the tightest request and token limits,
    requests first."""
    requests = [i for i, e in enumerate(entries) if e.what == "rpm" or e.what == "rpd"]
    tokens = [i for i, e in enumerate(entries) if e.what == "tpm"]
    headers = []
    for noun, among in ((b"requests", requests), (b"tokens", tokens)):
        if among:
            headers += _rate_triple(noun, _tightest(entries, raw, among))
    return headers


def _retry_headers(retry_ms: float, *, retry: bool = True) -> list[Header]:
    headers = [(b"retry-after", str(max(1, math.ceil(retry_ms / 1000))).encode()),
               (b"retry-after-ms", str(max(1, math.ceil(retry_ms))).encode())]
    if not retry:
        # The OpenAI SDK honours this: waiting a few seconds cannot help.
        headers.append((b"x-should-retry", b"false"))
    return headers


def _refusal(entry: Entry, o: Outcome, cost: int) -> tuple[float, LimitRefusal]:
    """(how long it stands, in ms, for choosing among several) and the answer."""
    check = entry.check
    if entry.what == "budget":
        period = entry.period
        assert period is not None
        ms = period.seconds_left(timezone.now()) * 1000
        message = (f"Refused: {entry.label} is spent (${usd(check.limit - o.remaining):f} "
                   f"since {period.start:%Y-%m-%d %H:%M} {period.start.tzname()}); it renews "
                   f"at {period.end:%Y-%m-%d %H:%M} {period.end.tzname()}.")
        body = error_body(429, message, code="insufficient_quota", type="insufficient_quota")
        return math.inf, LimitRefusal(429, body, _retry_headers(ms, retry=False),
                                      f"budget_{period.name}")
    if entry.what == "concurrent":
        message = (f"Too many concurrent requests for the {entry.label}: limit {check.limit}. "
                   "Retry when one of your requests in flight has finished.")
        body = error_body(429, message, code="rate_limit_exceeded", type="requests")
        return 1000, LimitRefusal(429, body, _retry_headers(1000), "rate_limit_concurrent")
    kind = "tokens" if entry.what == "tpm" else "requests"
    if cost > check.limit:
        message = (f"Request too large for {_NAMES[entry.what]} on the {entry.label}: limit "
                   f"{check.limit}, requested {cost}. Send a shorter request or a smaller "
                   "max_tokens.")
        body = error_body(429, message, code="rate_limit_exceeded", type=kind)
        return math.inf, LimitRefusal(429, body, _retry_headers(60_000, retry=False),
                                      f"rate_limit_{entry.what}")
    used = check.limit - max(0, o.remaining)
    # Before the cache a request's tokens are not counted yet (a hit spends none).
    requested = f", requested {cost}" if cost else ""
    message = (f"Rate limit reached for {_NAMES[entry.what]} on the {entry.label}: limit "
               f"{check.limit}, used {used}{requested}. Please try again in "
               f"{openai_duration(o.retry_ms)}.")
    body = error_body(429, message, code="rate_limit_exceeded", type=kind)
    return o.retry_ms, LimitRefusal(429, body, _retry_headers(o.retry_ms),
                                    f"rate_limit_{entry.what}")


def _refused(entries: Sequence[Entry], raw: list, tokens: int, estimate: int) -> LimitRefusal:
    """The answer for the refusal that stands longest (so a retry after it passes all)."""
    found = []
    for i, entry in enumerate(entries):
        if raw[5 * i] != 1:
            cost = (tokens if entry.what == "tpm" else estimate if entry.what == "budget"
                    else 1)
            found.append(_refusal(entry, outcome(raw, i), cost))
    return max(found, key=lambda pair: pair[0])[1]


def _unavailable() -> LimitRefusal:
    body = error_body(503, "The rate-limit store is unavailable and this organization's "
                      "limits fail closed: try again shortly.", code="limits_unavailable")
    seconds = settings.COGNITUDE_REDIS_BREAKER_SECONDS
    return LimitRefusal(503, body, _retry_headers(seconds * 1000), "limits_unavailable")


# --- One request's passage ----------------------------------------------------------

@dataclass(slots=True)
class _Admitted:
    """A request past the first call: what its call upstream needs to take the rest."""

    org_id: int
    fail_closed: bool
    plan: Plan
    raw: list  # the first call's answer
    spare: int  # what it took ahead and had left for requests after this one
    endpoint: str
    body: dict
    body_size: int
    lease: str
    routing: RoutingTable | None


@dataclass(slots=True)
class _Reservation:
    store: Limiter
    org_id: int
    lease: str
    plan: Plan
    raw: list  # the upstream call's answer: budgets' generations for their settlements
    tokens: int
    estimate: int
    prices: PriceBook | None
    block: Block | None  # what it drew from, if not from a call of its own


async def _take(store: Limiter, org_id: int, fail_closed: bool, entries: Sequence[Entry],
                checks: ChecksSent, keys: list[str], spec: str,
                lease: str) -> tuple[Limiter, list] | LimitRefusal:
    """One call's answer and the store that gave it: the limits Redis, or while it is
    down this process's memory (or a refusal, where the organization fails closed)."""
    try:
        return store, await _reserve(store, org_id, entries, checks, keys, spec, lease)
    except LimiterDown:
        # The script may have run and only its answer been lost: free any slot it took.
        releases = [c for c in checks() if c.kind == CONCURRENCY and not c.only_check]
        if releases and store is not local_limiter():
            settlements.add(store, org_id, [c.key for c in releases],
                            [settle_leases(slot_names(lease, int(c.cost))) for c in releases],
                            [None] * len(releases))
        if fail_closed:
            return _unavailable()
        store = local_limiter()
        return store, await _reserve(store, org_id, entries, checks, keys, spec, lease)


async def _upstream_call(admitted: _Admitted, entries: Sequence[Entry], needs: list[int],
                         tokens: int, estimate: int
                         ) -> tuple[Limiter, list, Block | None, str] | LimitRefusal:
    """A call upstream's own call: it takes what this request needs, or far from every
    limit a block for the requests after it too (then the plan's block). Its answer as
    this request reads it, the block, and the slot in flight the request holds."""
    plan, lease = admitted.plan, admitted.lease
    last = _blocks.get(plan.grant_key)
    if last is not None and not last.over and time.monotonic() >= last.until:
        _block_end(plan, last)  # over (else drawn from): back before this call, not after
    count = (1 if plan.taking_block.future is not None
             else _block_count(plan, admitted.raw, needs))
    asking = count > 1
    slots = _block_slots(last, count)
    if asking:
        plan.taking_block.start()
    try:
        while True:
            if count == 1:
                checks = partial(_upstream_checks, entries, tokens, estimate)
                spec = plan.upstream_template.format(t=tokens, e=estimate)
            else:
                checks = partial(_block_checks, entries, needs, count, slots)
                spec = reserve_spec(checks())
            answer = await _take(limiter(), admitted.org_id, admitted.fail_closed, entries,
                                 checks, plan.upstream_keys, spec, lease)
            if isinstance(answer, LimitRefusal):
                return answer
            store, raw = answer
            if count == 1 or all_ok(raw):
                break
            count = 1  # it did not all fit: this request's own, exactly
    finally:
        if asking:
            plan.taking_block.done()
    if count == 1:
        return store, raw, None, lease
    kinds = tuple(e.check.kind for e in entries)
    names = slot_names(lease, slots) if CONCURRENCY in kinds else []
    block = Block(store, admitted.org_id, raw, kinds,
                  [slots if kind == CONCURRENCY else need * count
                   for kind, need in zip(kinds, needs, strict=True)],
                  [0] * len(needs), names[1:], time.monotonic() + _GRANT_SECONDS)
    if len(_blocks) > 10_000:
        _blocks.clear()  # their timers hold them still
    _blocks[plan.grant_key] = block
    asyncio.get_running_loop().call_later(_GRANT_SECONDS, _block_end, plan, block)
    return store, block.share(needs), block, names[0] if names else ""


class RequestLimits:
    """One request's limits: `take` them before the cache, `take_upstream` before a call
    upstream, `settle` once it is over. `headers` are the x-ratelimit-* headers for its
    answer (none when no limit applies)."""

    __slots__ = ("headers", "_admitted", "_reservation")

    def __init__(self) -> None:
        self.headers: list[Header] = []
        self._admitted: _Admitted | None = None
        self._reservation: _Reservation | None = None

    async def take(self, *, org_id: int, key_id: int, endpoint: str, body: dict,
                   body_size: int, lease: str,
                   routing: RoutingTable | None = None) -> LimitRefusal | None:
        """Check every limit and budget that applies to this request and take what a
        cache hit spends, or take nothing and say why not. `lease` names its
        concurrency slot (the request id), taken by `take_upstream`; `routing` (the
        caller's routes) prices a route's name as its dearest target."""
        limits = org_limits.fresh(org_id) or await org_limits.get(org_id)
        if limits.empty:
            return None
        plan = _plan(limits, key_id, body.get("model") or "")
        if not plan.entries:
            return None
        grant = plan.grant
        if not _granted(grant) and plan.taking_grant.future is not None:
            await plan.taking_grant.wait()
            grant = plan.grant
        if not _granted(grant):
            called = await self._first_call(org_id, limits.fail_closed, plan, lease)
            if isinstance(called, LimitRefusal):
                return called
            if all_ok(called.raw):
                # This request is one of those the call took: its headers count the
                # call's spares as still there, for the requests they go to.
                self.headers = called.headers
                self._admitted = _Admitted(org_id, limits.fail_closed, plan, called.raw,
                                           called.ahead, endpoint, body, body_size, lease,
                                           routing)
                return None
            grant = plan.grant
            # Refused a request another call of this process took ahead meanwhile (all
            # arrived at once): it is this one's. (Its spares are this process's until
            # given back, past their time too.)
            if grant is None or grant.ahead <= 0 or not all(
                    called.raw[5 * i] == 1 for i in plan.upstream):
                self.headers = called.headers
                return _refused(list(plan.entries), called.raw, 0, 0)
        self.headers = grant.serve()
        self._admitted = _Admitted(org_id, limits.fail_closed, plan, grant.raw, grant.ahead,
                                   endpoint, body, body_size, lease, routing)
        return None

    @staticmethod
    async def _first_call(org_id: int, fail_closed: bool, plan: Plan,
                          lease: str) -> Grant | LimitRefusal:
        """The first call for this request, taking requests ahead for a grant when the
        limits have plenty left (and one alone when that many do not fit): its answer as
        a grant, whose `ahead` are the spares this request leaves (the plan's grant
        from now on, unless another still has some to hand out)."""
        entries = list(plan.entries)
        last = plan.grant
        if last is not None and last.ahead > 0:
            # Over (else no call): its spares go back before this call, not after it.
            _give_back(plan, last)
        ahead = 1 if plan.taking_grant.future is not None else _ahead(plan)
        asking = ahead > 1
        if asking:
            plan.taking_grant.start()
        try:
            while True:
                checks = partial(_first_checks, plan, ahead)
                spec = plan.first if ahead == 1 else plan.first_template.format(n=ahead)
                answer = await _take(limiter(), org_id, fail_closed, entries, checks,
                                     plan.keys, spec, lease)
                if isinstance(answer, LimitRefusal):
                    return answer
                store, raw = answer
                if ahead == 1 or all_ok(raw):
                    break
                ahead = 1
        finally:
            if asking:
                plan.taking_grant.done()
        # This request is one of those taken; when hits take nothing, the grant only
        # repeats what the call checked, for as many as come. A refusal is kept too,
        # for the next call's size; and without room (_room), a grant that hands out
        # nothing, giving back at once what it took.
        room = all_ok(raw) and bool(_GRANT_SECONDS) and _room(plan, raw)
        spare = (ahead - 1) if plan.hit_taken else _UNCOUNTED if room else 0
        now = time.monotonic()
        least = min((raw[5 * i + 1] for i in plan.hit_taken), default=None)
        read = list(raw)
        for i in plan.hit_taken:
            read[5 * i + 1] += spare
        grant = Grant(store, raw, spare, now + _GRANT_SECONDS if room else now,
                      rate_headers(plan.entries, read), least)
        current = plan.grant
        # Never in place of one with requests left to hand out (a call that went one at
        # a time, while it was being taken): they would wait unused for their give-back.
        if spare or current is None or current.ahead <= 0 or now >= current.until:
            plan.grant = grant
        if plan.hit_taken and spare:
            asyncio.get_running_loop().call_later(_GRANT_SECONDS if room else 0, _give_back,
                                                  plan, grant)
        return grant

    async def take_upstream(self, headers: list[Header]) -> LimitRefusal | None:
        """Take the tokens, the cost estimate and the slot in flight of a request about
        to go upstream, all or none; `headers` (the answer's, `headers` of `take` among
        them) get the x-ratelimit-* headers of what it took."""
        admitted, self._admitted = self._admitted, None
        if admitted is None or not admitted.plan.upstream:
            return None
        plan = admitted.plan
        model = admitted.body.get("model") or ""
        prompt, completion = tokens_estimate(endpoint=admitted.endpoint, body=admitted.body,
                                             body_size=admitted.body_size)
        tokens, estimate, prices = prompt + completion, 0, None
        if plan.has_budgets:
            prices = price_books.fresh(None) or await price_books.get(None)
            names = _priced_as(admitted.routing, model)
            estimate = (_estimate(prices, names[0], prompt, completion) if len(names) == 1
                        else max(_estimate(prices, name, prompt, completion) for name in names))
        entries = plan.upstream_entries
        needs = _needs(entries, tokens, estimate)
        block = _blocks.get(plan.grant_key)
        drawn = block.draw(needs) if block is not None else None
        if drawn is None and plan.taking_block.future is not None:
            await plan.taking_block.wait()
            block = _blocks.get(plan.grant_key)
            drawn = block.draw(needs) if block is not None else None
        if drawn is not None:
            assert block is not None
            store, (raw, slot) = block.store, drawn
        else:
            answer = await _upstream_call(admitted, entries, needs, tokens, estimate)
            if isinstance(answer, LimitRefusal):
                return answer
            store, raw, block, slot = answer
        if plan.upstream_requests:
            merged = list(admitted.raw)
            if admitted.spare:
                for i in plan.hit_taken:
                    merged[5 * i + 1] += admitted.spare
            for at, i in enumerate(plan.upstream):
                merged[5 * i:5 * i + 5] = raw[5 * at:5 * at + 5]
            self.headers = rate_headers(plan.entries, merged)
        elif plan.upstream_tpm:
            # Only the tokens' headers change here: `take`'s, the last three of them.
            tightest = _tightest(entries, raw, plan.upstream_tpm)
            self.headers = [*self.headers[:-3], *_rate_triple(b"tokens", tightest)]
        headers[:] = [h for h in headers if not h[0].startswith(b"x-ratelimit-")]
        headers += self.headers
        if not all_ok(raw):
            return _refused(entries, raw, tokens, estimate)
        self._reservation = _Reservation(store, admitted.org_id, slot, plan, raw, tokens,
                                         estimate, prices, block)
        return None

    def settle(self, *, model: str, status: int, prompt_tokens: int,
               completion_tokens: int) -> None:
        """Settle what `take_upstream` reserved with what the request really used (in
        the background: the answer has gone). A request that did not go upstream took
        nothing to settle."""
        self._admitted = None
        taken, self._reservation = self._reservation, None
        if taken is None:
            return
        keys: list[str] = []
        items: list[str] = []
        notes: list[Entry | None] = []
        real: int | None = None  # the real cost in units, for the budgets
        # Drawn from a block not closed: settled into it (what it sends at its end).
        block = taken.block if taken.block is not None and not taken.block.closed else None
        for at, i in enumerate(taken.plan.upstream):
            entry = taken.plan.entries[i]
            what, check = entry.what, entry.check
            if what == "tpm":
                # No usage on an answered call (a stream cut short): keep the estimate.
                used = (prompt_tokens + completion_tokens if prompt_tokens or completion_tokens
                        else 0 if status != 200 else taken.tokens)
                if used == taken.tokens:
                    continue
                if block is not None:
                    block.used[at] += used - taken.tokens
                    continue
                item = settle_rate(check, used - taken.tokens)
            elif what == "rpm" or what == "rpd":
                continue  # a request it stays
            elif what == "concurrent":
                if block is not None:
                    block.used[at] -= 1
                    continue
                item = settle_leases((taken.lease,))
            else:
                if real is None:
                    assert taken.prices is not None
                    cost, _ = request_costs(prices=taken.prices, model=model, hit=False,
                                            status=status, prompt_tokens=prompt_tokens,
                                            completion_tokens=completion_tokens,
                                            at=datetime.now(UTC))
                    real = units(cost) if cost is not None else 0
                _budget_progress(taken.org_id, entry, taken.raw[5 * at + 1], real)
                if block is not None:
                    block.used[at] += real - taken.estimate
                    continue
                generation = taken.raw[5 * at + 4]
                item = settle_budget(check, real - taken.estimate,
                                     generation.decode() if generation else "")
            keys.append(check.key)
            items.append(item)
            notes.append(entry if what == "budget" else None)
        if block is not None:
            if taken.lease:
                block.slots.append(taken.lease)
            block.holding -= 1
            if block.over and not block.holding:
                _block_close(taken.plan, block)
        if items:
            settlements.add(taken.store, taken.org_id, keys, items, notes)


# --- Settling in the background -----------------------------------------------------

class _Settlements:
    """Settlements queued by requests as they end and sent together at the end of the
    event loop's turn: one script call per organization, all in one write, and no task
    or coroutine of their own."""

    def __init__(self) -> None:
        # store -> org id -> (keys, items, notes)
        self._pending: dict[Limiter, dict[int, tuple[list, list, list]]] = {}

    def add(self, store: Limiter, org_id: int, keys: list[str], items: list[str],
            notes: list[Entry | None]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        by_org = self._pending.setdefault(store, {})
        found = by_org.get(org_id)
        if found is None:
            by_org[org_id] = (keys, items, notes)
        else:
            found[0].extend(keys)
            found[1].extend(items)
            found[2].extend(notes)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for store, by_org in pending.items():
            orgs = list(by_org.items())
            store.settle_soon([(keys, items) for _, (keys, items, _) in orgs],
                              partial(self.crossings, orgs))

    @staticmethod
    def crossings(orgs: list, answers: list[list] | None) -> None:
        for (org_id, (_, _, notes)), crossed in zip(orgs, answers or (), strict=False):
            for at in range(0, len(crossed), 2):
                _crossing_record(org_id, notes[crossed[at] - 1], crossed[at + 1])


settlements = _Settlements()
_recording: set[asyncio.Task] = set()


def _crossing_record(org_id: int, entry: Entry | None, spent: int) -> None:
    from ratelimit.services import budget_crossing_record

    assert entry is not None and entry.budget is not None and entry.period is not None
    task = asyncio.get_running_loop().create_task(run_in_db_thread(
        budget_crossing_record, org_id=org_id, budget=entry.budget,
        period_start=entry.period.start.date(), spend_usd=usd(spent)))
    _recording.add(task)
    task.add_done_callback(_recording.discard)


def _budget_progress(org_id: int, entry: Entry, remaining: int, real: int) -> None:
    """Tell the pipeline when this request's real cost moved a budget past a whole
    percent of its limit, up to the limit (so at most 100 events a period): what a
    budget alert at any percentage needs to fire within seconds. `remaining` is what the
    reservation found left, so the spend before it is the cap minus that."""
    cap = entry.check.limit
    before = cap - int(remaining)
    after = before + real
    if cap <= 0 or real <= 0 or before >= cap or before * 100 // cap == after * 100 // cap:
        return
    from pipeline.buffer import emit
    from ratelimit.events import BudgetUsageEvent

    assert entry.budget is not None and entry.period is not None
    emit(BudgetUsageEvent(
        org_id=org_id, budget_id=entry.budget.id, key_id=entry.budget.key_id,
        period=entry.period.name, period_start=entry.period.start.date(),
        spend_usd=str(usd(after)), limit_usd=str(entry.budget.limit_usd), at=timezone.now()))


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
    keys = [address_key(address)]
    spec = reserve_spec([Check(keys[0], RATE, per_minute, MINUTE_MS, 1)])
    try:
        raw = await limiter().reserve(keys, spec, lease="", lease_ms=0)
    except LimiterDown:
        raw = await local_limiter().reserve(keys, spec, lease="", lease_ms=0)
    if raw[0] != 1:
        if len(_blocked) > 10_000:
            _blocked.clear()
        _blocked[address] = time.monotonic() + raw[3] / 1000


def client_address(scope: dict) -> str:
    client = scope.get("client")
    return client[0] if client else ""

"""What a rule's metric is worth right now, read from what the other apps keep.

Evaluation groups rules by what they read, so a tick makes one query per organization,
window and filter (not one per rule):

- Usage over a window (spend, error rate, p95 latency, cache hit rate, limit
  rejections) for a whole organization comes from the hourly rollup
  (analytics.HourlyUsage / HourlyLatency) for the window's whole UTC hours and from the
  records only for its partial first and last hours, through the (organization,
  created_at) index: a 30-day window of a million records reads ~720 rollup rows and at
  most two hours of records. A window shorter than an hour is only records of that
  window, by the same index. A rule narrowed to a model, a key or a provider reads the
  records of its window (the rollup is per organization), by the (organization, model)
  and (organization, api_key) indexes; keep such windows short.
- Budget used: the limits' live counters (what the gate refuses by), falling back on the
  rollup when that Redis does not hold the period.
- Provider failing: the shared circuit breakers' state (routing.breakers), one read a
  tick for every organization.
- No traffic: the newest record of the scope, one backward index step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q, Sum
from redis.backoff import NoBackoff
from redis.retry import Retry

from analytics.models import RequestLog
from analytics.selectors import (
    ERROR,
    HIT,
    LATENCY_BUCKET,
    MISS,
    PARTIAL_RECORDS,
    ROLLUP_AGGREGATES,
    ROLLUP_HOURS,
    PercentileCont,
    histogram_percentile,
    percentile,
    rollup_in_sql,
)
from organizations.models import Provider
from ratelimit.models import Budget
from ratelimit.periods import REJECTION_REASONS, budget_period
from ratelimit.selectors import period_spend
from ratelimit.usage import budgets_spend_live
from routing.breakers import STATE_KEY, BreakerState

HOUR = timedelta(hours=1)
ZERO = Decimal(0)
HUNDRED = Decimal(100)
_HIT_COLUMNS = [column for column in ROLLUP_AGGREGATES if column.startswith("hits_")]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a usage metric is computed over: rules sharing one share its query."""

    org_id: int
    window_seconds: int
    model: str = ""
    api_key_id: int | None = None
    provider: str = ""

    @property
    def filtered(self) -> bool:
        return bool(self.model or self.api_key_id or self.provider)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    requests: int
    errors: int
    hits: int
    misses: int
    cost: Decimal
    rejections: int
    p95_ms: float | None

    def error_rate_pct(self) -> Decimal | None:
        return _pct(self.errors, self.requests)

    def hit_rate_pct(self) -> Decimal | None:
        return _pct(self.hits, self.hits + self.misses)


def _pct(part: int, whole: int) -> Decimal | None:
    # No requests is no rate (not 0 %): a rule on it neither fires nor stays firing.
    return (Decimal(part) * HUNDRED / Decimal(whole)).quantize(Decimal("0.000001")) \
        if whole else None


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def window_usage(*, scope: Scope, now: datetime, rejections: bool = False,
                 latency: bool = False) -> WindowUsage:
    """The scope's usage over [now - window, now); limit rejections and the p95 latency
    only when asked (each costs the query a part of its own)."""
    start = now - timedelta(seconds=scope.window_seconds)
    if rollup_in_sql() and not scope.filtered:
        return _usage_from_rollup(scope.org_id, start, now, rejections=rejections,
                                  latency=latency)
    return _usage_from_records(scope, start, now, rejections=rejections, latency=latency)


def _usage_from_rollup(org_id: int, start: datetime, end: datetime, *, rejections: bool,
                       latency: bool) -> WindowUsage:
    first = _floor_hour(start)
    if first < start:
        first += HOUR
    params = {"organization": org_id, "start": start, "end": end, "first": first,
              "last": _floor_hour(end), "reasons": list(REJECTION_REASONS)}
    columns = ["requests", "errors", "misses", "cost", *_HIT_COLUMNS]
    exact = end - start <= HOUR  # then the records are the whole window: sort them
    if not latency:
        percentile_sql = "NULL"
    elif exact:
        percentile_sql = """(SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
                             FROM partial)"""
    else:
        percentile_sql = f"""(SELECT array_agg(ARRAY[bucket, n] ORDER BY bucket) FROM (
                SELECT bucket, sum(requests) AS n FROM (
                    SELECT bucket, requests FROM analytics_hourlylatency WHERE {ROLLUP_HOURS}
                    UNION ALL SELECT {LATENCY_BUCKET}, 1 FROM partial) b
                GROUP BY bucket) l)"""
    sql = f"""
        WITH partial AS (
            SELECT * FROM analytics_requestlog WHERE {PARTIAL_RECORDS}
        ), usage AS (
            SELECT {", ".join(columns)} FROM analytics_hourlyusage WHERE {ROLLUP_HOURS}
            UNION ALL
            SELECT {", ".join(ROLLUP_AGGREGATES[c] for c in columns)} FROM partial
        )
        SELECT {", ".join(f"sum({c})" for c in columns)}, {percentile_sql},
            {'''(SELECT count(*) FROM analytics_requestlog
                 WHERE organization_id = %(organization)s AND created_at >= %(start)s
                 AND created_at < %(end)s AND error_type = ANY(%(reasons)s))'''
             if rejections else "0"}
        FROM usage
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        *sums, found_latency, rejected = cursor.fetchone()
    row = dict(zip(columns, sums, strict=True))
    if not latency or exact:
        p95 = found_latency
    else:
        p95 = histogram_percentile([(int(b), int(n)) for b, n in found_latency or []], 0.95)
    return WindowUsage(
        requests=int(row["requests"] or 0), errors=int(row["errors"] or 0),
        hits=sum(int(row[c] or 0) for c in _HIT_COLUMNS), misses=int(row["misses"] or 0),
        cost=row["cost"] or ZERO, rejections=int(rejected or 0), p95_ms=p95)


def _records(scope: Scope, start: datetime, end: datetime):
    records = RequestLog.objects.filter(organization_id=scope.org_id, created_at__gte=start,
                                        created_at__lt=end)
    if scope.model:
        records = records.filter(model_requested=scope.model)
    if scope.api_key_id:
        records = records.filter(api_key_id=scope.api_key_id)
    if scope.provider:
        records = records.filter(provider=scope.provider)
    return records


def _usage_from_records(scope: Scope, start: datetime, end: datetime, *,
                        rejections: bool, latency: bool) -> WindowUsage:
    records = _records(scope, start, end)
    aggregates = {"requests": Count("id"), "errors": Count("id", filter=ERROR),
                  "hits": Count("id", filter=HIT), "misses": Count("id", filter=MISS),
                  "cost": Sum("cost"),
                  "rejections": Count("id", filter=Q(error_type__in=list(REJECTION_REASONS)))}
    in_sql = connection.vendor == "postgresql"
    if in_sql and latency:
        aggregates["p95"] = PercentileCont("latency_ms", percentile=0.95)
    row = records.aggregate(**aggregates)
    p95 = None
    if latency:
        p95 = row["p95"] if in_sql else percentile(
            sorted(records.values_list("latency_ms", flat=True)), 0.95)
    return WindowUsage(requests=row["requests"], errors=row["errors"], hits=row["hits"],
                       misses=row["misses"], cost=row["cost"] or ZERO,
                       rejections=row["rejections"] if rejections else 0, p95_ms=p95)


def minutes_since_traffic_by_org(*, org_ids: Iterable[int],
                                 now: datetime) -> dict[int, Decimal | None]:
    """minutes_since_traffic of many whole organizations, in one statement (one
    backward step of the (organization, created_at) index each)."""
    org_ids = list(org_ids)
    if not org_ids or not rollup_in_sql():
        return {org_id: minutes_since_traffic(scope=Scope(org_id, 0), now=now)
                for org_id in org_ids}
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT o, (SELECT created_at FROM analytics_requestlog
                       WHERE organization_id = o ORDER BY created_at DESC LIMIT 1)
            FROM unnest(%s::bigint[]) AS o""", [org_ids])
        return {org_id: (None if newest is None else
                         Decimal(max(0, int((now - newest).total_seconds() // 60))))
                for org_id, newest in cursor.fetchall()}


def minutes_since_traffic(*, scope: Scope, now: datetime) -> Decimal | None:
    """Whole minutes since the scope's newest record; None if it never had one (a
    "dead integration" is one that had traffic and stopped)."""
    records = RequestLog.objects.filter(organization_id=scope.org_id)
    if scope.model:
        records = records.filter(model_requested=scope.model)
    if scope.api_key_id:
        records = records.filter(api_key_id=scope.api_key_id)
    if scope.provider:
        records = records.filter(provider=scope.provider)
    newest = records.aggregate(newest=Max("created_at"))["newest"]
    if newest is None:
        return None
    return Decimal(max(0, int((now - newest).total_seconds() // 60)))


BudgetScope = tuple[int, int | None]  # (org id, key id or None for the organization's)


def budgets_used_pct(*, org_ids: Iterable[int], now: datetime,
                     floors: dict[int, tuple[date, Decimal]] | None = None,
                     ) -> dict[BudgetScope, Decimal]:
    """{(org id, key id or None): the highest share (%) of any of that scope's budgets
    spent in its current period}. Spend is the limits' live counter where it exists,
    else the records' (by the rollup); `floors` (budget id -> (period start, spend))
    are fresher figures a request just reported, taken when higher."""
    budgets = list(Budget.objects.filter(organization_id__in=list(org_ids))
                   .select_related("organization"))
    live = budgets_spend_live(budgets=budgets) or {}
    periods = {budget.pk: budget_period(budget.period,
                                        ZoneInfo(budget.organization.time_zone), now)
               for budget in budgets}
    from_records = _periods_spend([budget for budget in budgets if budget.pk not in live],
                                  periods, now)
    used: dict[BudgetScope, Decimal] = {}
    for budget in budgets:
        if budget.limit_usd <= 0:
            continue
        period = periods[budget.pk]
        spend = live.get(budget.pk, from_records.get(budget.pk, ZERO))
        floor_start, floor = (floors or {}).get(budget.pk, (None, ZERO))
        if floor_start == period.start.date():  # a report of an earlier period is no floor
            spend = max(spend, floor)
        pct = (spend * HUNDRED / budget.limit_usd).quantize(Decimal("0.000001"))
        scope = (budget.organization_id, budget.api_key_id)
        used[scope] = max(used.get(scope, pct), pct)
    return used


# The spend of many organizations' budget periods in one statement: each period's whole
# UTC hours from the rollup, its partial first and last hours from the records.
_PERIODS_SPEND = """
    SELECT p.budget, COALESCE((
        SELECT sum(cost) FROM analytics_hourlyusage h WHERE h.organization_id = p.org
        AND h.hour >= p.first AND h.hour < p.last), 0) + COALESCE((
        SELECT sum(cost) FROM analytics_requestlog r WHERE r.organization_id = p.org AND (
            (r.created_at >= p.start AND r.created_at < LEAST(p.first, %(now)s)) OR
            (r.created_at >= GREATEST(p.last, p.start) AND r.created_at < %(now)s))), 0)
    FROM unnest(%(budgets)s::bigint[], %(orgs)s::bigint[], %(starts)s::timestamptz[],
                %(firsts)s::timestamptz[], %(lasts)s::timestamptz[])
         AS p(budget, org, start, first, last)
"""


def _periods_spend(budgets: list[Budget], periods: dict, now: datetime) -> dict[int, Decimal]:
    """{budget id: what the records say its current period spent}."""
    by_key = [budget for budget in budgets if budget.api_key_id is not None
              or not rollup_in_sql()]
    spent = {budget.pk: period_spend(org_id=budget.organization_id,
                                     key_id=budget.api_key_id,
                                     since=periods[budget.pk].start) for budget in by_key}
    whole = [budget for budget in budgets if budget not in by_key]
    if not whole:
        return spent
    firsts, lasts = [], []
    for budget in whole:
        start = periods[budget.pk].start
        first = _floor_hour(start)
        firsts.append(first + HOUR if first < start else first)
        lasts.append(_floor_hour(now))
    with connection.cursor() as cursor:
        cursor.execute(_PERIODS_SPEND, {
            "budgets": [b.pk for b in whole], "orgs": [b.organization_id for b in whole],
            "starts": [periods[b.pk].start for b in whole], "firsts": firsts,
            "lasts": lasts, "now": now})
        spent |= {budget_id: Decimal(value) for budget_id, value in cursor.fetchall()}
    return spent


def open_breakers_by_org(*, org_ids: Iterable[int]) -> dict[int, dict[str, int]] | None:
    """{org id: {provider name: targets whose breaker is open now}}; None when the
    breakers' Redis is unreachable (then nothing is known, and nothing changes state)."""
    url = settings.REDIS_URL
    if not url:
        return {}
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                  retry=Retry(NoBackoff(), 0))
    try:
        fields = client.hgetall(STATE_KEY)
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    now = time.time()
    open_by_provider: dict[int, int] = {}
    for key, raw in fields.items():
        provider_id, _, _ = key.decode().partition(":")
        try:
            state = BreakerState.parse(raw)
        except ValueError:
            continue
        if state.open_until > now and provider_id.isdigit():
            open_by_provider[int(provider_id)] = open_by_provider.get(int(provider_id), 0) + 1
    result: dict[int, dict[str, int]] = {}
    for provider_id, org_id, name in (Provider.objects
                                      .filter(pk__in=list(open_by_provider),
                                              organization_id__in=list(org_ids))
                                      .values_list("pk", "organization_id", "name")):
        result.setdefault(org_id, {})[name] = open_by_provider[provider_id]
    return result

"""Reads over an organization's request records: summary, time series, breakdowns.

Every function takes the organization and a half-open range [start, end) and does its
arithmetic in SQL, one query each (plus a tiny one naming API keys). Latency
percentiles use PostgreSQL's percentile_cont; on SQLite (the embedded mode, small data)
they are computed in Python from the latencies.

Definitions shared by all three:
- a hit is any cache_outcome hit_* (Redis, PostgreSQL, in-process, coalesced);
- hit_rate = hits / (hits + misses): requests that bypassed the cache (no-cache) or
  never reached it (rejected early) do not count as lookups;
- an error is a response status outside 200-399 (0: the client went away);
- cost is what was paid upstream, saved what the hits would have cost; both sum the
  priced requests only, and unpriced_requests counts the others (unpriced is not free).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from statistics import quantiles
from typing import Any

from django.db import connection, transaction
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour

from analytics.models import RequestLog
from organizations.models import ApiKey, Organization

Outcome = RequestLog.CacheOutcome
HIT_OUTCOMES = (Outcome.HIT_REDIS, Outcome.HIT_POSTGRES, Outcome.HIT_MEMORY,
                Outcome.HIT_COALESCED)
HIT = Q(cache_outcome__in=HIT_OUTCOMES)
MISS = Q(cache_outcome=Outcome.MISS)
ERROR = Q(status__lt=200) | Q(status__gte=400)
UNPRICED = Q(cost__isnull=True) | Q(saved_cost__isnull=True)

INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
BREAKDOWNS = {"model": "model_requested", "api_key": "api_key_id", "endpoint": "endpoint"}
ZERO = Decimal(0)


class PercentileCont(Aggregate):
    """PostgreSQL's `percentile_cont(p) WITHIN GROUP (ORDER BY expr)`."""

    function = "percentile_cont"
    name = "PercentileCont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, percentile: float, **extra: Any) -> None:
        if not 0 <= percentile <= 1:
            raise ValueError("percentile must be within 0..1")
        super().__init__(expression, percentile=float(percentile), **extra)


def percentiles_in_sql() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def percentile_friendly_plan() -> Iterator[None]:
    """Run a percentile query with room to sort and no ordered index walk (PostgreSQL).

    percentile_cont sorts its group's latencies, and a grouped one wants its rows in
    group order. With the default 4 MB work_mem the sorts spill to disk, and the planner
    likes to get group order by walking the (organization, model_requested, created_at)
    index, reading the heap at random: 1.9 s for a 30-day breakdown of a million rows,
    0.7 s with a bitmap scan and in-memory sorts (bench/analytics_queries.py). The
    settings are LOCAL: they end with this transaction.
    """
    if not percentiles_in_sql():
        yield
        return
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('work_mem', '64MB', true), "
                       "set_config('enable_indexscan', 'off', true)")
        yield


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as percentile_cont does."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def _ms(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def request_logs_in_range(*, organization: Organization, start: datetime,
                          end: datetime) -> QuerySet[RequestLog]:
    """The organization's records created in [start, end)."""
    return RequestLog.objects.filter(
        organization=organization, created_at__gte=start, created_at__lt=end
    )


def usage_summary(*, organization: Organization, start: datetime, end: datetime) -> dict:
    """Totals for the range: requests, hits by tier, tokens, cost, saved, latency."""
    logs = request_logs_in_range(organization=organization, start=start, end=end)
    aggregates: dict[str, Any] = {
        "requests": Count("id"),
        "hits_redis": Count("id", filter=Q(cache_outcome=Outcome.HIT_REDIS)),
        "hits_postgres": Count("id", filter=Q(cache_outcome=Outcome.HIT_POSTGRES)),
        "hits_memory": Count("id", filter=Q(cache_outcome=Outcome.HIT_MEMORY)),
        "hits_coalesced": Count("id", filter=Q(cache_outcome=Outcome.HIT_COALESCED)),
        "misses": Count("id", filter=MISS),
        "bypasses": Count("id", filter=Q(cache_outcome=Outcome.BYPASS)),
        "errors": Count("id", filter=ERROR),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "spent": Sum("cost"),
        "saved": Sum("saved_cost"),
        "unpriced_requests": Count("id", filter=UNPRICED),
    }
    if percentiles_in_sql():
        aggregates["p50"] = PercentileCont("latency_ms", percentile=0.5)
        aggregates["p95"] = PercentileCont("latency_ms", percentile=0.95)
    with percentile_friendly_plan():
        row = logs.aggregate(**aggregates)
    if not percentiles_in_sql():
        latencies = sorted(logs.values_list("latency_ms", flat=True))
        row["p50"], row["p95"] = percentile(latencies, 0.5), percentile(latencies, 0.95)

    tiers = {tier: row[f"hits_{tier}"] for tier in ("redis", "postgres", "memory", "coalesced")}
    hits = sum(tiers.values())
    requests = row["requests"]
    return {
        "requests": requests,
        "hits": hits,
        "hit_rate": _rate(hits, hits + row["misses"]),
        "hits_by_tier": tiers,
        "misses": row["misses"],
        "bypasses": row["bypasses"],
        "errors": row["errors"],
        "error_rate": _rate(row["errors"], requests),
        "prompt_tokens": row["prompt_tokens"] or 0,
        "completion_tokens": row["completion_tokens"] or 0,
        "cost": row["spent"] or ZERO,
        "saved": row["saved"] or ZERO,
        "unpriced_requests": row["unpriced_requests"],
        "p50_latency_ms": _ms(row["p50"]),
        "p95_latency_ms": _ms(row["p95"]),
    }


def _floor(moment: datetime, interval: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if interval == "day" else moment


def buckets_between(*, start: datetime, end: datetime, interval: str) -> list[datetime]:
    """The UTC bucket starts covering [start, end)."""
    step = INTERVALS[interval]
    bucket, buckets = _floor(start, interval), []
    while bucket < end:
        buckets.append(bucket)
        bucket += step
    return buckets


def usage_timeseries(*, organization: Organization, start: datetime, end: datetime,
                     interval: str) -> list[dict]:
    """One dict per hour or day (UTC) of the range, zero-filled, oldest first.

    Besides the agreed keys each bucket carries `bypasses`, so that requests equals
    hits + misses + bypasses + the few requests rejected before any lookup.
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
    trunc = TruncHour if interval == "hour" else TruncDay
    rows = (
        request_logs_in_range(organization=organization, start=start, end=end)
        .annotate(bucket=trunc("created_at", tzinfo=UTC))
        .values("bucket")
        .annotate(
            requests=Count("id"),
            hits_redis=Count("id", filter=Q(cache_outcome=Outcome.HIT_REDIS)),
            hits_postgres=Count("id", filter=Q(cache_outcome=Outcome.HIT_POSTGRES)),
            hits_other=Count("id", filter=Q(cache_outcome__in=(Outcome.HIT_MEMORY,
                                                               Outcome.HIT_COALESCED))),
            misses=Count("id", filter=MISS),
            bypasses=Count("id", filter=Q(cache_outcome=Outcome.BYPASS)),
            errors=Count("id", filter=ERROR),
            spent=Sum("cost"),
            saved=Sum("saved_cost"),
        )
        .order_by("bucket")
    )
    found = {row["bucket"].astimezone(UTC): row for row in rows}
    series = []
    for bucket in buckets_between(start=start, end=end, interval=interval):
        row = found.get(bucket, {})
        series.append({
            "bucket": bucket,
            "requests": row.get("requests", 0),
            "hits_redis": row.get("hits_redis", 0),
            "hits_postgres": row.get("hits_postgres", 0),
            "hits_other": row.get("hits_other", 0),
            "misses": row.get("misses", 0),
            "bypasses": row.get("bypasses", 0),
            "errors": row.get("errors", 0),
            "cost": row.get("spent") or ZERO,
            "saved": row.get("saved") or ZERO,
        })
    return series


def _api_key_labels(organization: Organization, ids: Iterable[int | None]) -> dict:
    keys = ApiKey.objects.filter(organization=organization, pk__in=[i for i in ids if i])
    labels: dict[int | None, str] = {
        key.pk: f"{key.prefix} ({key.name})" if key.name else key.prefix for key in keys
    }
    labels[None] = "(deleted key)"
    return labels


def usage_breakdown(*, organization: Organization, start: datetime, end: datetime,
                    by: str) -> list[dict]:
    """Usage grouped by model asked for, API key or endpoint, most requests first."""
    if by not in BREAKDOWNS:
        raise ValueError(f"by must be one of {', '.join(BREAKDOWNS)}")
    logs = request_logs_in_range(organization=organization, start=start, end=end)
    aggregates: dict[str, Any] = {
        "requests": Count("id"),
        "hits": Count("id", filter=HIT),
        "misses": Count("id", filter=MISS),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "spent": Sum("cost"),
        "saved": Sum("saved_cost"),
    }
    if percentiles_in_sql():
        aggregates["p50"] = PercentileCont("latency_ms", percentile=0.5)
    with percentile_friendly_plan():
        rows = list(
            logs.annotate(group=F(BREAKDOWNS[by])).values("group").annotate(**aggregates)
            .order_by("-requests", F("group").asc(nulls_last=True))
        )
    if not percentiles_in_sql():
        latencies: dict[Any, list[float]] = defaultdict(list)
        for group, latency in logs.values_list(BREAKDOWNS[by], "latency_ms"):
            latencies[group].append(latency)
        for row in rows:
            row["p50"] = percentile(sorted(latencies[row["group"]]), 0.5)
    labels = (_api_key_labels(organization, (row["group"] for row in rows))
              if by == "api_key" else None)
    return [
        {
            "key": labels[row["group"]] if labels is not None else row["group"],
            "requests": row["requests"],
            "hits": row["hits"],
            "hit_rate": _rate(row["hits"], row["hits"] + row["misses"]),
            "prompt_tokens": row["prompt_tokens"] or 0,
            "completion_tokens": row["completion_tokens"] or 0,
            "cost": row["spent"] or ZERO,
            "saved": row["saved"] or ZERO,
            "p50_latency_ms": _ms(row["p50"]),
        }
        for row in rows
    ]

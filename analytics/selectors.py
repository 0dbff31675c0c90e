"""Reads over an organization's request records: summary, time series, breakdowns.

Every function takes the organization and a half-open range [start, end) and does its
arithmetic in SQL, one query each (plus a tiny one naming API keys). Latency
percentiles use PostgreSQL's percentile_cont; on SQLite (the embedded mode, small data)
they are computed in Python from the latencies.

On PostgreSQL usage_summary and usage_timeseries read the range's whole UTC hours from
the hourly rollup (HourlyUsage, HourlyLatency: a month is hundreds of rows, not a
million records) and only its partial first and last hours from the records; the sums
are the same as over the records. Over long ranges of many requests the summary's
percentiles are estimated from the rollup's latency histogram (usage_summary says when).

Definitions shared by all three:
- a hit is any hit outcome (caching.outcomes: Redis, PostgreSQL, in-process, coalesced);
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
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import TruncDay, TruncHour

from analytics.models import LATENCY_BUCKETS_PER_OCTAVE, LATENCY_FLOOR_MS, Feedback, RequestLog
from caching.outcomes import HIT_OUTCOMES, CacheOutcome, CacheTier, hit_outcome
from organizations.models import ApiKey, Organization

HIT = Q(cache_outcome__in=HIT_OUTCOMES)
MISS = Q(cache_outcome=CacheOutcome.MISS)
BYPASS = Q(cache_outcome=CacheOutcome.BYPASS)
# The time series shows Redis and PostgreSQL hits apart and the other tiers together.
OTHER_TIERS = tuple(t for t in CacheTier if t not in (CacheTier.REDIS, CacheTier.POSTGRES))
ERROR = Q(status__lt=200) | Q(status__gte=400)
UNPRICED = Q(cost__isnull=True) | Q(saved_cost__isnull=True)

INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
BREAKDOWNS = {"model": "model_requested", "api_key": "api_key_id", "endpoint": "endpoint",
              "provider": "provider", "tier": "route_tier"}
# Routing's saving counts where the router acted; shadow mode's is a projection.
ROUTED = Q(route_mode="on")
ZERO = Decimal(0)
# A summary's percentiles are exact (percentile_cont over the records) over ranges up to
# this long, or holding up to this many requests (sorting them is cheap); otherwise they
# are estimated from the rollup's latency histogram.
EXACT_PERCENTILES_FOR = timedelta(hours=48)
EXACT_PERCENTILES_UP_TO_REQUESTS = 50_000


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


def rollup_in_sql() -> bool:
    """Whether the hourly rollup exists (its triggers are PostgreSQL's)."""
    return connection.vendor == "postgresql"


# The rollup's columns as aggregates over request records: the same expressions as its
# triggers (analytics/migrations/0005_hourly_rollup.py), for the partial hours.
ROLLUP_AGGREGATES = {
    "requests": "count(*)",
    **{f"hits_{tier}": f"count(*) FILTER (WHERE cache_outcome = '{hit_outcome(tier)}')"
       for tier in CacheTier},
    "misses": f"count(*) FILTER (WHERE cache_outcome = '{CacheOutcome.MISS}')",
    "bypasses": f"count(*) FILTER (WHERE cache_outcome = '{CacheOutcome.BYPASS}')",
    "errors": "count(*) FILTER (WHERE status < 200 OR status >= 400)",
    "unpriced_requests": "count(*) FILTER (WHERE cost IS NULL OR saved_cost IS NULL)",
    "prompt_tokens": "COALESCE(sum(prompt_tokens), 0)",
    "completion_tokens": "COALESCE(sum(completion_tokens), 0)",
    "cost": "COALESCE(sum(cost), 0)",
    "saved_cost": "COALESCE(sum(saved_cost), 0)",
}
LATENCY_BUCKET = (f"GREATEST(0, FLOOR(ln(GREATEST(latency_ms, {LATENCY_FLOOR_MS}) / "
                  f"{LATENCY_FLOOR_MS}) * {LATENCY_BUCKETS_PER_OCTAVE} / ln(2)))::int")
# The whole hours [%(first)s, %(last)s) of the rollup, and the records of the range
# outside them (two index ranges; when no hour is whole they overlap, which OR allows).
ROLLUP_HOURS = ("organization_id = %(organization)s AND hour >= %(first)s "
                "AND hour < %(last)s")
PARTIAL_RECORDS = (
    "organization_id = %(organization)s AND ("
    "(created_at >= %(start)s AND created_at < LEAST(%(first)s, %(end)s)) OR "
    "(created_at >= GREATEST(%(last)s, %(start)s) AND created_at < %(end)s))"
)


def _rollup_params(organization: Organization, start: datetime, end: datetime) -> dict:
    first = _floor(start, "hour")
    if first < start:
        first += INTERVALS["hour"]
    return {"organization": organization.pk, "start": start, "end": end, "first": first,
            "last": _floor(end, "hour")}


def latency_bucket_bounds(bucket: int) -> tuple[float, float]:
    """The latencies (ms) HourlyLatency's `bucket` counts: [low, high)."""
    return (LATENCY_FLOOR_MS * 2 ** (bucket / LATENCY_BUCKETS_PER_OCTAVE),
            LATENCY_FLOOR_MS * 2 ** ((bucket + 1) / LATENCY_BUCKETS_PER_OCTAVE))


def histogram_percentile(histogram: list[tuple[int, int]], fraction: float) -> float | None:
    """percentile_cont estimated from (bucket, count) pairs in bucket order.

    Each latency is placed evenly (on a log scale) within its bucket and the two closest
    ranks are interpolated as percentile_cont does, so the estimate is within one
    bucket's width (9%) of the exact value.
    """
    total = sum(count for _, count in histogram)
    if not total:
        return None

    def nth(index: int) -> float:
        seen = 0
        for bucket, count in histogram:
            if index < seen + count:
                low, high = latency_bucket_bounds(bucket)
                return low * (high / low) ** ((index - seen + 0.5) / count)
            seen += count
        raise IndexError(index)

    rank = fraction * (total - 1)
    below = int(rank)
    value = nth(below)
    return value if rank == below else value + (rank - below) * (nth(below + 1) - value)


def _summary_from_rollup(organization: Organization, start: datetime,
                         end: datetime) -> dict:
    columns = list(ROLLUP_AGGREGATES)
    sql = f"""
        WITH partial AS (
            SELECT * FROM analytics_requestlog WHERE {PARTIAL_RECORDS}
        ), usage AS (
            SELECT {", ".join(columns)} FROM analytics_hourlyusage WHERE {ROLLUP_HOURS}
            UNION ALL
            SELECT {", ".join(ROLLUP_AGGREGATES.values())} FROM partial
        ), latency AS (
            SELECT bucket, sum(requests) AS requests FROM (
                SELECT bucket, requests FROM analytics_hourlylatency WHERE {ROLLUP_HOURS}
                UNION ALL
                SELECT {LATENCY_BUCKET}, 1 FROM partial
            ) buckets GROUP BY bucket
        )
        SELECT {", ".join(f"sum({c})" for c in columns)},
               (SELECT array_agg(ARRAY[bucket, requests] ORDER BY bucket) FROM latency),
               -- Run only when the CASE picks it (a subquery is evaluated on first use).
               CASE WHEN sum(requests) <= %(exact_up_to)s THEN (
                   SELECT ARRAY[percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                                percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)]
                   FROM analytics_requestlog WHERE organization_id = %(organization)s
                   AND created_at >= %(start)s AND created_at < %(end)s
               ) END
        FROM usage
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {**_rollup_params(organization, start, end),
                             "exact_up_to": EXACT_PERCENTILES_UP_TO_REQUESTS})
        *sums, histogram, exact = cursor.fetchone()
    row: dict[str, Any] = dict(zip(columns, sums, strict=True))
    for column in columns:
        if column not in ("cost", "saved_cost"):
            row[column] = int(row[column] or 0)  # sum(bigint) is numeric
    row["spent"], row["saved"] = row.pop("cost"), row.pop("saved_cost")
    if exact is not None:
        row["p50"], row["p95"] = exact
    else:
        histogram = [(int(bucket), int(count)) for bucket, count in histogram or []]
        row["p50"] = histogram_percentile(histogram, 0.5)
        row["p95"] = histogram_percentile(histogram, 0.95)
    return row


def usage_summary(*, organization: Organization, start: datetime, end: datetime) -> dict:
    """Totals for the range: requests, hits by tier, tokens, cost, saved, latency.

    Over ranges longer than EXACT_PERCENTILES_FOR holding more than
    EXACT_PERCENTILES_UP_TO_REQUESTS requests (on PostgreSQL) the latency percentiles
    are estimates, within one latency bucket's width (9%) of the exact values;
    everything else is exact.
    """
    if rollup_in_sql() and end - start > EXACT_PERCENTILES_FOR:
        return _summary(_summary_from_rollup(organization, start, end))
    logs = request_logs_in_range(organization=organization, start=start, end=end)
    aggregates: dict[str, Any] = {
        "requests": Count("id"),
        **{f"hits_{tier}": Count("id", filter=Q(cache_outcome=hit_outcome(tier)))
           for tier in CacheTier},
        "misses": Count("id", filter=MISS),
        "bypasses": Count("id", filter=BYPASS),
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
    return _summary(row)


def _summary(row: dict[str, Any]) -> dict:
    tiers = {tier.value: row[f"hits_{tier}"] for tier in CacheTier}
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
    rows = (_timeseries_from_rollup(organization, start, end, interval) if rollup_in_sql()
            else _timeseries_from_records(organization, start, end, interval))
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


def _timeseries_from_rollup(organization: Organization, start: datetime, end: datetime,
                            interval: str) -> list[dict]:
    counts = ("requests", "hits_redis", "hits_postgres", "hits_other", "misses",
              "bypasses", "errors")
    other = " + ".join(f"hits_{tier}" for tier in OTHER_TIERS)
    columns = ("requests", "hits_redis", "hits_postgres", other, "misses", "bypasses",
               "errors", "cost", "saved_cost")
    records = {**ROLLUP_AGGREGATES}
    records[other] = " + ".join(records[f"hits_{tier}"] for tier in OTHER_TIERS)
    sql = f"""
        SELECT bucket, {", ".join(f"sum(c{n})" for n in range(len(columns)))}
        FROM (
            SELECT date_trunc(%(interval)s, hour, 'UTC') AS bucket,
                   {", ".join(f"{c} AS c{n}" for n, c in enumerate(columns))}
            FROM analytics_hourlyusage WHERE {ROLLUP_HOURS}
            UNION ALL
            SELECT date_trunc(%(interval)s, created_at, 'UTC'),
                   {", ".join(records[c] for c in columns)}
            FROM analytics_requestlog WHERE {PARTIAL_RECORDS} GROUP BY 1
        ) usage
        GROUP BY bucket
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {**_rollup_params(organization, start, end),
                             "interval": interval})
        fetched = cursor.fetchall()
    return [
        {"bucket": bucket, **dict(zip(counts, map(int, values[:-2]), strict=True)),
         "spent": values[-2], "saved": values[-1]}
        for bucket, *values in fetched
    ]


def _timeseries_from_records(organization: Organization, start: datetime, end: datetime,
                             interval: str) -> QuerySet:
    trunc = TruncHour if interval == "hour" else TruncDay
    return (
        request_logs_in_range(organization=organization, start=start, end=end)
        .annotate(bucket=trunc("created_at", tzinfo=UTC))
        .values("bucket")
        .annotate(
            requests=Count("id"),
            hits_redis=Count("id", filter=Q(cache_outcome=CacheOutcome.HIT_REDIS)),
            hits_postgres=Count("id", filter=Q(cache_outcome=CacheOutcome.HIT_POSTGRES)),
            hits_other=Count("id", filter=Q(cache_outcome__in=[
                hit_outcome(tier) for tier in OTHER_TIERS])),
            misses=Count("id", filter=MISS),
            bypasses=Count("id", filter=BYPASS),
            errors=Count("id", filter=ERROR),
            spent=Sum("cost"),
            saved=Sum("saved_cost"),
        )
        .order_by("bucket")
    )


def _api_key_labels(organization: Organization, ids: Iterable[int | None]) -> dict:
    keys = ApiKey.objects.filter(organization=organization, pk__in=[i for i in ids if i])
    labels: dict[int | None, str] = {
        key.pk: f"{key.prefix} ({key.name})" if key.name else key.prefix for key in keys
    }
    labels[None] = "(deleted key)"
    return labels


def usage_breakdown(*, organization: Organization, start: datetime, end: datetime,
                    by: str) -> list[dict]:
    """Usage grouped by model asked for, API key, endpoint or the provider that answered
    ("" for hits and requests no provider answered), most requests first."""
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
        "routing_saved": Sum("routing_saved_cost", filter=ROUTED),
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
            "routing_saved": row["routing_saved"] or ZERO,
            "p50_latency_ms": _ms(row["p50"]),
        }
        for row in rows
    ]


def routing_by_tier(*, organization: Organization, start: datetime,
                    end: datetime) -> list[dict]:
    """Smart routing's requests per mode and tier (simple first): requests, spend, the
    cache's saving, routing's (exact sums of the records; in shadow mode what the
    router would have saved), and the feedback on them (up and down shares of the
    thumbs, the mean score of all), so a tier whose answers disappoint shows."""
    logs = request_logs_in_range(organization=organization, start=start,
                                 end=end).exclude(route_mode="")
    rows = {(row["route_mode"], row["route_tier"]): row for row in logs.values(
        "route_mode", "route_tier").annotate(
        requests=Count("id"), hits=Count("id", filter=HIT), spent=Sum("cost"),
        saved=Sum("saved_cost"), routing_saved=Sum("routing_saved_cost"),
        asked=Sum("asked_cost"))}
    feedback = (Feedback.objects.filter(organization=organization,
                                        request_id__in=logs.values("request_id"))
                .annotate(mode=Subquery(logs.filter(request_id=OuterRef("request_id"))
                                        .values("route_mode")[:1]),
                          tier=Subquery(logs.filter(request_id=OuterRef("request_id"))
                                        .values("route_tier")[:1]))
                .values("mode", "tier").annotate(
                    count=Count("id"), up=Count("id", filter=Q(rating="up")),
                    down=Count("id", filter=Q(rating="down")), mean=Avg("score")))
    rated = {(row["mode"], row["tier"]): row for row in feedback}
    order = {"simple": 0, "standard": 1, "complex": 2}
    return [
        {
            "mode": mode,
            "tier": tier,
            "requests": row["requests"],
            "hits": row["hits"],
            "cost": row["spent"] or ZERO,
            "saved": row["saved"] or ZERO,
            "asked_cost": row["asked"] or ZERO,
            "routing_saved": row["routing_saved"] or ZERO,
            "feedback": (votes := rated.get((mode, tier), {})).get("count", 0),
            "up_share": _rate(votes.get("up", 0), votes.get("count", 0)),
            "down_share": _rate(votes.get("down", 0), votes.get("count", 0)),
            "mean_score": votes.get("mean"),
        }
        for (mode, tier), row in sorted(rows.items(),
                                        key=lambda item: (item[0][0] != "on",
                                                          order.get(item[0][1], 3)))
    ]


def feedback_for_org(*, organization: Organization,
                     request_id: str | None = None) -> QuerySet[Feedback]:
    """The organization's feedback, newest first (only its own: a request id of
    another organization finds nothing)."""
    found = Feedback.objects.filter(organization=organization).order_by("-updated_at", "-pk")
    return found.filter(request_id=request_id) if request_id is not None else found

"""The analytics selectors on records made by hand."""

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from analytics import selectors
from analytics.models import LATENCY_BUCKETS_PER_OCTAVE, RequestLog
from analytics.selectors import usage_breakdown, usage_summary, usage_timeseries
from organizations.services import api_key_create
from tests.analytics.helpers import make_log

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def log_at(org, moment: datetime, **fields):
    return make_log(org, created_at=moment, **fields)


def make_mixed_day(org, other_org):
    """Eight requests in org on 2026-03-01 (latencies 10..80 ms), one the day after, and
    one in the other org."""
    rows = [
        dict(cache_outcome="hit_redis", cost=0, saved_cost=Decimal("0.01")),
        dict(cache_outcome="hit_redis", cost=0, saved_cost=Decimal("0.01")),
        dict(cache_outcome="hit_postgres", cost=0, saved_cost=Decimal("0.02")),
        dict(cache_outcome="hit_coalesced", cost=0, saved_cost=None, model_requested="mine"),
        dict(cache_outcome="miss", cost=Decimal("0.03")),
        dict(cache_outcome="miss", cost=None, model_requested="mine"),
        dict(cache_outcome="miss", status=500, cost=0, prompt_tokens=0, completion_tokens=0,
             endpoint="completions"),
        dict(cache_outcome="bypass", cost=Decimal("0.04"), endpoint="embeddings"),
    ]
    for n, fields in enumerate(rows):
        log_at(org, T0 + timedelta(hours=n), latency_ms=10.0 * (n + 1), **fields)
    log_at(org, T0 + timedelta(days=1, hours=1), cost=Decimal("9"))
    log_at(other_org, T0 + timedelta(hours=1), cost=Decimal("9"))


def test_it_summarises_a_range(world):
    make_mixed_day(world.a.org, world.b.org)

    summary = usage_summary(organization=world.a.org, start=T0, end=T0 + timedelta(days=1))

    assert summary == {
        "requests": 8,
        "hits": 4,
        "hit_rate": round(4 / 7, 4),  # hits / (hits + misses); the bypass is no lookup
        "hits_by_tier": {"redis": 2, "postgres": 1, "memory": 0, "coalesced": 1},
        "misses": 3,
        "bypasses": 1,
        "errors": 1,
        "error_rate": 0.125,
        "prompt_tokens": 700,
        "completion_tokens": 350,
        "cost": Decimal("0.07"),
        "saved": Decimal("0.04"),
        "unpriced_requests": 2,
        "p50_latency_ms": 45.0,
        "p95_latency_ms": 76.5,  # percentile_cont: 70 + 0.65 * (80 - 70)
    }


def test_it_summarises_an_empty_range(world):
    summary = usage_summary(organization=world.a.org, start=T0, end=T0 + timedelta(days=1))
    assert summary["requests"] == summary["hits"] == summary["unpriced_requests"] == 0
    assert summary["hit_rate"] == summary["error_rate"] == 0.0
    assert summary["cost"] == summary["saved"] == Decimal(0)
    assert summary["p50_latency_ms"] is None and summary["p95_latency_ms"] is None


def test_it_zero_fills_hourly_buckets(world):
    log_at(world.a.org, T0 + timedelta(minutes=10), cache_outcome="hit_redis", cost=0,
           saved_cost=Decimal("0.5"))
    log_at(world.a.org, T0 + timedelta(minutes=50), cost=Decimal("0.25"))
    log_at(world.a.org, T0 + timedelta(hours=2, minutes=59), cache_outcome="hit_memory",
           cost=0, saved_cost=Decimal("0.5"))
    log_at(world.a.org, T0 + timedelta(hours=2, minutes=59), cache_outcome="bypass",
           status=429)

    series = usage_timeseries(organization=world.a.org, start=T0 + timedelta(minutes=30),
                              end=T0 + timedelta(hours=3), interval="hour")

    assert [b["bucket"] for b in series] == [T0, T0 + timedelta(hours=1),
                                            T0 + timedelta(hours=2)]
    first, empty, last = series
    # The bucket holds only what is inside the range: the 00:10 hit is before it.
    assert (first["requests"], first["misses"], first["hits_redis"]) == (1, 1, 0)
    assert first["cost"] == Decimal("0.25") and first["saved"] == 0
    assert empty == {"bucket": T0 + timedelta(hours=1), "requests": 0, "hits_redis": 0,
                     "hits_postgres": 0, "hits_other": 0, "misses": 0, "bypasses": 0,
                     "errors": 0, "cost": Decimal(0), "saved": Decimal(0)}
    assert (last["requests"], last["hits_other"], last["bypasses"], last["errors"]) == (
        2, 1, 1, 1)


def test_it_buckets_by_utc_day(world):
    make_mixed_day(world.a.org, world.b.org)
    series = usage_timeseries(organization=world.a.org, start=T0 - timedelta(days=1),
                              end=T0 + timedelta(days=2), interval="day")
    assert [(b["bucket"].date().isoformat(), b["requests"]) for b in series] == [
        ("2026-02-28", 0), ("2026-03-01", 8), ("2026-03-02", 1)]
    assert series[1]["hits_redis"] == 2 and series[1]["hits_postgres"] == 1
    assert series[1]["hits_other"] == 1 and series[1]["errors"] == 1
    assert all(b["bucket"].tzinfo is not None for b in series)


def test_it_breaks_down_by_model(world):
    make_mixed_day(world.a.org, world.b.org)
    rows = usage_breakdown(organization=world.a.org, start=T0, end=T0 + timedelta(days=1),
                           by="model")
    assert [(r["key"], r["requests"], r["hits"]) for r in rows] == [
        ("gpt-4o", 6, 3), ("mine", 2, 1)]
    gpt, mine = rows
    assert gpt["hit_rate"] == 0.6 and mine["hit_rate"] == 0.5
    assert gpt["cost"] == Decimal("0.07") and gpt["saved"] == Decimal("0.04")
    assert mine["cost"] == 0 and mine["saved"] == 0
    assert gpt["prompt_tokens"] == 500 and gpt["completion_tokens"] == 250
    assert mine["p50_latency_ms"] == 50.0  # the 40 and 60 ms requests


def test_it_breaks_down_by_endpoint(world):
    make_mixed_day(world.a.org, world.b.org)
    rows = usage_breakdown(organization=world.a.org, start=T0, end=T0 + timedelta(days=1),
                           by="endpoint")
    assert [(r["key"], r["requests"]) for r in rows] == [
        ("chat/completions", 6), ("completions", 1), ("embeddings", 1)]


def test_it_breaks_down_by_api_key(world):
    default_key = world.a.org.api_keys.get()
    second = api_key_create(organization=world.a.org, name="batch jobs",
                            created_by=world.alice).api_key
    for _ in range(3):
        log_at(world.a.org, T0, api_key=second)
    log_at(world.a.org, T0, api_key=default_key)
    log_at(world.a.org, T0, api_key=None)  # its key was deleted since
    rows = usage_breakdown(organization=world.a.org, start=T0, end=T0 + timedelta(hours=1),
                           by="api_key")
    assert [(r["key"], r["requests"]) for r in rows] == [
        (f"{second.prefix} (batch jobs)", 3),
        # Ties sort by key id, so the deleted key (no id) comes last.
        (f"{default_key.prefix} (default)", 1),
        ("(deleted key)", 1),
    ]


def test_it_refuses_unknown_intervals_and_groupings(world):
    with pytest.raises(ValueError, match="interval"):
        usage_timeseries(organization=world.a.org, start=T0, end=T0, interval="minute")
    with pytest.raises(ValueError, match="by"):
        usage_breakdown(organization=world.a.org, start=T0, end=T0, by="user")


def make_month(org, other_org) -> tuple[datetime, datetime]:
    """1,500 varied records spread over 30 days of org (some just outside the range,
    some in its partial first and last hours), 100 in the other org; returns the range."""
    rng = random.Random(7)
    start, end = T0 + timedelta(minutes=17), T0 + timedelta(days=30, minutes=23)
    outcomes = ["hit_redis", "hit_postgres", "hit_memory", "hit_coalesced", "miss", "miss",
                "bypass", "none"]

    def record(org, moment: datetime) -> RequestLog:
        outcome = rng.choice(outcomes)
        hit = outcome.startswith("hit_")
        return RequestLog(
            organization=org, request_id=uuid.uuid4().hex, endpoint="chat/completions",
            cache_outcome=outcome, status=rng.choice([200] * 8 + [0, 429, 500]),
            prompt_tokens=rng.randrange(2000), completion_tokens=rng.randrange(800),
            cost=None if rng.random() < 0.1 else Decimal(rng.randrange(10**6)) / 10**8,
            saved_cost=(None if rng.random() < 0.05
                        else Decimal(rng.randrange(10**6)) / 10**8 if hit else Decimal(0)),
            latency_ms=rng.lognormvariate(0.5, 0.6) if hit else rng.lognormvariate(6.5, 0.7),
            created_at=moment)

    span = (end - start).total_seconds()
    moments = [start + timedelta(seconds=rng.random() * span) for _ in range(1500)]
    moments += [start - timedelta(seconds=1), start, start + timedelta(minutes=20),
                end - timedelta(minutes=1), end, end + timedelta(minutes=5)]
    # One statement for most (the pipeline's way), one each for the last few.
    RequestLog.objects.bulk_create([record(org, moment) for moment in moments[:-20]])
    for moment in moments[-20:]:
        record(org, moment).save()
    RequestLog.objects.bulk_create([record(other_org, moment) for moment in moments[:100]])
    return start, end


@pytest.fixture
def from_records(monkeypatch):
    """Call a selector the way it reads without the hourly rollup: over the records."""
    def call(selector, **arguments):
        with monkeypatch.context() as patch:
            patch.setattr(selectors, "rollup_in_sql", lambda: False)
            return selector(**arguments)
    return call


def within_a_bucket(estimate: float, exact: float) -> bool:
    width = exact * (2 ** (1 / LATENCY_BUCKETS_PER_OCTAVE) - 1)
    return abs(estimate - exact) <= width + 0.1  # + the rounding to 0.1 ms


def test_it_summarises_a_month_from_the_rollup_as_from_the_records(world, from_records,
                                                                    monkeypatch):
    start, end = make_month(world.a.org, world.b.org)
    monkeypatch.setattr(selectors, "EXACT_PERCENTILES_UP_TO_REQUESTS", 0)

    summary = usage_summary(organization=world.a.org, start=start, end=end)
    expected = from_records(usage_summary, organization=world.a.org, start=start, end=end)

    assert expected["requests"] == 1503  # the ones outside the range left out
    latencies = ("p50_latency_ms", "p95_latency_ms")
    assert ({k: v for k, v in summary.items() if k not in latencies}
            == {k: v for k, v in expected.items() if k not in latencies})
    for key in latencies:
        assert summary[key] != expected[key]  # an estimate, but a close one
        assert within_a_bucket(summary[key], expected[key]), key


def test_it_keeps_percentiles_exact_over_few_requests(world, from_records):
    start, end = make_month(world.a.org, world.b.org)
    assert (usage_summary(organization=world.a.org, start=start, end=end)
            == from_records(usage_summary, organization=world.a.org, start=start, end=end))


@pytest.mark.parametrize("interval", ["day", "hour"])
def test_it_builds_a_month_series_from_the_rollup_as_from_the_records(world, from_records,
                                                                      interval):
    start, end = make_month(world.a.org, world.b.org)
    series = usage_timeseries(organization=world.a.org, start=start, end=end,
                              interval=interval)
    assert series == from_records(usage_timeseries, organization=world.a.org, start=start,
                                  end=end, interval=interval)
    assert sum(bucket["requests"] for bucket in series) == 1503


def test_it_reads_a_range_within_one_hour_from_the_records(world):
    log_at(world.a.org, T0 + timedelta(minutes=5))
    log_at(world.a.org, T0 + timedelta(minutes=20), cost=Decimal("0.5"))
    log_at(world.a.org, T0 + timedelta(minutes=40))
    series = usage_timeseries(organization=world.a.org, start=T0 + timedelta(minutes=10),
                              end=T0 + timedelta(minutes=30), interval="hour")
    assert [(b["requests"], b["cost"]) for b in series] == [(1, Decimal("0.5"))]

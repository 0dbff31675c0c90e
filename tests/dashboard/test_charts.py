"""The chart geometry and the periods behind it (no database)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dashboard.charts import BOTTOM, HEIGHT, TOP, hit_rate_chart, nice_ceiling, requests_chart
from dashboard.periods import period_for
from dashboard.templatetags.dashboard import ms, usd

NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)


def bucket(hour: int, **counts) -> dict:
    row = {"bucket": datetime(2026, 3, 10, hour, tzinfo=UTC), "requests": 0, "hits_redis": 0,
           "hits_postgres": 0, "hits_other": 0, "misses": 0, "bypasses": 0, "errors": 0,
           "cost": Decimal(0), "saved": Decimal(0)}
    row.update(counts)
    row["requests"] = row["requests"] or (row["hits_redis"] + row["hits_postgres"]
                                          + row["hits_other"] + row["misses"])
    return row


@pytest.mark.parametrize("name,buckets,interval", [("24h", 24, "hour"), ("7d", 168, "hour"),
                                                   ("30d", 30, "day"), (None, 24, "hour")])
def test_it_makes_periods_of_whole_buckets_ending_with_the_current_one(name, buckets,
                                                                       interval):
    period = period_for(name, now=NOW)

    step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
    assert period.interval == interval
    assert (period.end - period.start) / step == buckets
    assert period.start <= NOW - (period.end - period.start) + step
    assert period.end > NOW >= period.end - step


def test_it_stacks_the_tiers_and_draws_the_total_rate():
    chart = hit_rate_chart([bucket(0), bucket(1, hits_redis=2, hits_postgres=1, misses=1)],
                           "hour")

    plot_h = HEIGHT - TOP - BOTTOM
    assert len(chart.points) == 2
    assert chart.points[0].empty and not chart.points[1].empty
    assert chart.points[1].y == pytest.approx(TOP + plot_h * 0.25, abs=0.1)  # 75% hit rate
    assert [layer.css for layer in chart.layers] == ["tier-redis", "tier-postgres",
                                                     "tier-other"]
    assert "hit rate 75% (Redis 2, PostgreSQL 1, other 0 hits; 1 misses" in \
        chart.points[1].title


def test_it_labels_hours_and_names_the_day_at_midnight():
    chart = hit_rate_chart([bucket(h) for h in range(24)], "hour")

    assert [t.label for t in chart.x_ticks] == ["Mar 10", "03:00", "06:00", "09:00", "12:00",
                                                "15:00", "18:00", "21:00"]
    assert [t.label for t in chart.y_ticks] == ["0%", "25%", "50%", "75%", "100%"]


def test_it_draws_requests_as_stacked_bars_under_a_round_axis():
    chart = requests_chart([bucket(0, hits_redis=30, misses=10, requests=47)], "hour")

    [bar] = chart.bars
    assert [css for css, _, _ in bar.segments] == ["bar-hit", "bar-miss", "bar-other"]
    assert [t.label for t in chart.y_ticks] == ["0", "20", "40", "60", "80"]


@pytest.mark.parametrize("maximum,top", [(0, 4), (7, 8), (47, 80), (950, 1000),
                                         (12_345, 20_000)])
def test_it_rounds_the_axis_up(maximum, top):
    assert nice_ceiling(maximum)[0] == top


@pytest.mark.parametrize("value,text", [(Decimal(0), "$0.00"), (Decimal("0.00003"),
                                         "< $0.0001"), (Decimal("0.0042"), "$0.0042"),
                                        (Decimal("1234.567"), "$1,234.57"), (None, "$0.00")])
def test_it_formats_dollars(value, text):
    assert usd(value) == text


@pytest.mark.parametrize("value,text", [(None, "—"), (2.0, "2.0 ms"), (312.4, "312 ms"),
                                        (2500.0, "2.50 s")])
def test_it_formats_latency(value, text):
    assert ms(value) == text


@pytest.mark.parametrize("name,label", [
    ("24h", "Mar 9, 15:00 – Mar 10, 15:00 UTC"),
    ("30d", "Feb 9 – Mar 10 (today), UTC"),
])
def test_it_names_the_range(name, label):
    assert period_for(name, now=NOW).range_label == label

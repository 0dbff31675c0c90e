"""Geometry for the server-rendered SVG charts: the templates only draw what this says.

Charts are plain SVG in the page (no JavaScript library, nothing from a CDN), sized by
a viewBox so they scale to any width, phones included.
"""

import math
from dataclasses import dataclass, field
from datetime import datetime

WIDTH, HEIGHT = 720, 268
LEFT, RIGHT, TOP, BOTTOM = 84, 14, 14, 46
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Tick:
    position: float  # x for the x axis, y for the y axis
    label: str
    minor: bool = False  # left out where the chart is small (phones)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str
    empty: bool = False  # no cache lookups in the bucket


@dataclass(frozen=True)
class Layer:
    name: str
    css: str
    points: str  # an SVG polygon's points


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    segments: list[tuple[str, float, float]]  # (css class, y, height)
    title: str


@dataclass
class Chart:
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    x_title: str
    y_title: str
    layers: list[Layer] = field(default_factory=list)
    line: str = ""
    points: list[Point] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM
    middle: int = TOP + PLOT_H // 2


def _x(index: int, count: int) -> float:
    return round(LEFT + PLOT_W * (index + 0.5) / count, 1)


def _y(fraction: float) -> float:
    return round(TOP + PLOT_H * (1 - fraction), 1)


def _bucket_label(bucket: datetime, interval: str, *, long: bool) -> str:
    # Hours read as hours, except midnight, which names the day that starts.
    if interval == "day" or long or bucket.hour == 0:
        return f"{bucket:%b} {bucket.day}"
    return f"{bucket:%H}:00"


def _x_ticks(buckets: list[datetime], interval: str) -> list[Tick]:
    count = len(buckets)
    if interval == "hour" and count <= 48:
        wanted = [i for i, b in enumerate(buckets) if b.hour % 3 == 0]
        long = False
    elif interval == "hour":
        wanted = [i for i, b in enumerate(buckets) if b.hour == 0]
        long = True
    else:
        step = max(1, math.ceil(count / 8))
        wanted = list(range(0, count, step))
        long = True
    return [Tick(_x(i, count), _bucket_label(buckets[i], interval, long=long),
                 minor=n % 2 == 1 and len(wanted) > 4)
            for n, i in enumerate(wanted)]


def _x_title(interval: str) -> str:
    return f"Time (UTC, one point per {interval})"


def _when(bucket: datetime, interval: str) -> str:
    return f"{bucket:%Y-%m-%d}" if interval == "day" else f"{bucket:%Y-%m-%d %H}:00 UTC"


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def hit_rate_chart(series: list[dict], interval: str) -> Chart:
    """Hit rate per bucket, stacked by tier (Redis, PostgreSQL, other), one point each.

    The rate is hits / (hits + misses), as in analytics.selectors; a bucket without a
    lookup draws at 0 with a hollow point, so gaps in traffic are visible as such.
    """
    count = len(series)
    tiers = [("Redis", "tier-redis", "hits_redis"), ("PostgreSQL", "tier-postgres",
             "hits_postgres"), ("Other (in-process, coalesced)", "tier-other", "hits_other")]
    tops: list[list[float]] = []  # per tier, the cumulative rate per bucket
    totals: list[float] = [0.0] * count
    for _, _, key in tiers:
        level = []
        for i, row in enumerate(series):
            lookups = row["hits_redis"] + row["hits_postgres"] + row["hits_other"] + row["misses"]
            totals[i] += row[key] / lookups if lookups else 0.0
            level.append(totals[i])
        tops.append(level)
    layers = []
    for t, (name, css, _) in enumerate(tiers):
        upper = [f"{_x(i, count)},{_y(v)}" for i, v in enumerate(tops[t])]
        lower_values = tops[t - 1] if t else [0.0] * count
        lower = [f"{_x(i, count)},{_y(v)}" for i, v in enumerate(lower_values)]
        layers.append(Layer(name, css, " ".join(upper + lower[::-1])))
    points = []
    for i, row in enumerate(series):
        lookups = row["hits_redis"] + row["hits_postgres"] + row["hits_other"] + row["misses"]
        title = (f"{_when(row['bucket'], interval)}: hit rate {_pct(totals[i])} "
                 f"(Redis {row['hits_redis']}, PostgreSQL {row['hits_postgres']}, "
                 f"other {row['hits_other']} hits; {row['misses']} misses; "
                 f"{row['requests']} requests)")
        points.append(Point(_x(i, count), _y(totals[i]), title, empty=not lookups))
    return Chart(
        x_ticks=_x_ticks([row["bucket"] for row in series], interval),
        y_ticks=[Tick(_y(f / 100), f"{f}%") for f in (0, 25, 50, 75, 100)],
        x_title=_x_title(interval),
        y_title="Hit rate (%)",
        layers=layers,
        line=" ".join(f"{p.x},{p.y}" for p in points),
        points=points,
    )


def nice_ceiling(maximum: float) -> tuple[float, float]:
    """A round top for an axis at or above `maximum`, and the step of 4 ticks to it."""
    if maximum <= 0:
        return 4.0, 1.0
    raw_step = maximum / 4
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    return step * 4, step


def _count_label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def requests_chart(series: list[dict], interval: str) -> Chart:
    """Requests per bucket as stacked bars: cache hits, misses, and the rest (bypassed
    or rejected before any lookup)."""
    count = len(series)
    top, step = nice_ceiling(max((row["requests"] for row in series), default=0))
    slot = PLOT_W / count if count else PLOT_W
    bars = []
    for i, row in enumerate(series):
        hits = row["hits_redis"] + row["hits_postgres"] + row["hits_other"]
        parts = [("bar-hit", hits), ("bar-miss", row["misses"]),
                 ("bar-other", max(0, row["requests"] - hits - row["misses"]))]
        segments, level = [], 0.0
        for css, value in parts:
            if value:
                y_top = _y((level + value) / top)
                segments.append((css, y_top, round(_y(level / top) - y_top, 1)))
                level += value
        bars.append(Bar(
            x=round(LEFT + slot * i + slot * 0.15, 1), width=round(slot * 0.7, 1),
            segments=segments,
            title=(f"{_when(row['bucket'], interval)}: {row['requests']} requests "
                   f"({hits} hits, {row['misses']} misses, {row['errors']} errors)"),
        ))
    return Chart(
        x_ticks=_x_ticks([row["bucket"] for row in series], interval),
        y_ticks=[Tick(_y(n * step / top), _count_label(n * step)) for n in range(5)],
        x_title=_x_title(interval).replace("point", "bar"),
        y_title=f"Requests per {interval}",
        bars=bars,
    )

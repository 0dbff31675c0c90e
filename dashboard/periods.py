"""The periods a member can pick, as half-open UTC ranges of whole buckets."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone


@dataclass(frozen=True)
class Period:
    name: str  # what the URL says: ?period=24h
    label: str
    start: datetime
    end: datetime
    interval: str  # "hour" | "day", for usage_timeseries
    days: int  # for recommendations_for

    @property
    def range_label(self) -> str:
        """The range as people say it: whole days for daily buckets (the last one is
        today), hours otherwise; always UTC."""
        if self.interval == "day":
            last = self.end - timedelta(days=1)
            return f"{self.start:%b} {self.start.day} – {last:%b} {last.day} (today), UTC"
        return (f"{self.start:%b} {self.start.day}, {self.start:%H}:00 – "
                f"{self.end:%b} {self.end.day}, {self.end:%H}:00 UTC")


# name -> (label, length, bucket interval)
PERIODS: dict[str, tuple[str, timedelta, str]] = {
    "24h": ("Last 24 hours", timedelta(hours=24), "hour"),
    "7d": ("Last 7 days", timedelta(days=7), "hour"),
    "30d": ("Last 30 days", timedelta(days=30), "day"),
}
DEFAULT_PERIOD = "24h"


def period_for(name: str | None, *, now: datetime | None = None) -> Period:
    """The period `name` (unknown names give the default), ending with the bucket that
    holds `now`, so 24h is exactly 24 hourly buckets and 30d exactly 30 daily ones."""
    if name not in PERIODS:
        name = DEFAULT_PERIOD
    label, length, interval = PERIODS[name]
    now = (now or timezone.now()).astimezone(UTC)
    floor = now.replace(minute=0, second=0, microsecond=0)
    if interval == "day":
        floor = floor.replace(hour=0)
    end = floor + (timedelta(days=1) if interval == "day" else timedelta(hours=1))
    return Period(name=name, label=label, start=end - length, end=end, interval=interval,
                  days=max(1, length.days))

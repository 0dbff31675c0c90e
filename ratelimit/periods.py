"""Budget periods (calendar days and months in the organization's time zone) and the
vocabulary of what the limits refuse."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

# RequestLog.error_type of a request the limits refused -> what it means.
REJECTION_REASONS = {
    "rate_limit_rpm": "requests per minute",
    "rate_limit_rpd": "requests per day",
    "rate_limit_tpm": "tokens per minute",
    "rate_limit_concurrent": "concurrent requests",
    "budget_day": "daily budget",
    "budget_month": "monthly budget",
    "limits_unavailable": "limits store down (fail closed)",
}

# A budget counter outlives its period by this much: a request reserved just before
# midnight still finds it when it settles just after.
_KEEP_AFTER_END_S = 3600


@dataclass(frozen=True, slots=True)
class BudgetPeriod:
    name: str  # "day" | "month"
    start: datetime  # aware, in the organization's time zone
    end: datetime
    label: str  # 2030-03-31, 2030-03

    def seconds_left(self, now: datetime) -> float:
        return max(0.0, (self.end - now).total_seconds())

    def ttl_s(self, now: datetime) -> int:
        return int(self.seconds_left(now)) + _KEEP_AFTER_END_S


def _period_at(name: str, zone: ZoneInfo, now: datetime) -> BudgetPeriod:
    local = now.astimezone(zone)
    if name == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=1, hours=2)).date()
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).date().replace(day=1)
    # Midnight of the next date, whatever the clocks did in between (DST).
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return BudgetPeriod(name, start, end, f"{start:%Y-%m-%d}" if name == "day" else
                        f"{start:%Y-%m}")


# (zone, name) -> the current period: one datetime comparison per request until it ends.
_current: dict[tuple[str, str], BudgetPeriod] = {}


def budget_period(name: str, zone: ZoneInfo, now: datetime | None = None) -> BudgetPeriod:
    """The day or month `now` (default: now) falls in, in `zone`."""
    now = now or timezone.now()
    key = (zone.key, name)
    period = _current.get(key)
    if period is None or not period.start <= now < period.end:
        period = _current[key] = _period_at(name, zone, now)
    return period


def openai_duration(ms: float) -> str:
    """A reset time the way OpenAI's x-ratelimit-reset-* headers write it (Go's
    durations): 17ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    if ms < 1000:
        return f"{max(0, round(ms))}ms"
    seconds = round(ms / 1000, 3)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text

"""The dashboard's reads over the request log, kept briefly in Django's cache.

On a busy organization these are the expensive part of a page (a month of a million
records: seconds for the recommendations and breakdowns; tens of milliseconds for the
totals and the series, which read the hourly rollup). Every member of the organization
shares one computation per period for a short while; nothing else reads or writes these
keys.
"""

from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache

from analytics.recommendations import Recommendation, recommendations_for
from analytics.selectors import usage_breakdown, usage_summary, usage_timeseries
from dashboard.periods import Period
from organizations.models import Organization

# Totals move with every request: a minute old is fresh enough for a dashboard.
OVERVIEW_SECONDS = 60
# Recommendations read days of history; ten minutes changes nothing they say.
RECOMMENDATIONS_SECONDS = 600

T = TypeVar("T")


def _cached(key: str, seconds: int, compute: Callable[[], T]) -> T:
    """The one accessor of these datasets: `key`'s value, computed once per `seconds`."""
    found = cache.get(key)
    if found is None:
        found = compute()
        cache.set(key, found, seconds)
    return found


def _period_key(dataset: str, organization: Organization, period: Period, *parts: str) -> str:
    # The period's end is in the key, so a new hour (or day) starts a new entry.
    return ":".join(["dashboard", dataset, str(organization.pk), period.name, *parts,
                     f"{period.end.timestamp():.0f}"])


def overview_get(*, organization: Organization, period: Period) -> dict:
    """{"summary": usage_summary(...), "series": usage_timeseries(...)} for the period."""
    return _cached(_period_key("overview", organization, period), OVERVIEW_SECONDS, lambda: {
        "summary": usage_summary(organization=organization, start=period.start,
                                 end=period.end),
        "series": usage_timeseries(organization=organization, start=period.start,
                                   end=period.end, interval=period.interval),
    })


def recommendations_get(*, organization: Organization, days: int) -> list[Recommendation]:
    """recommendations_for(...), biggest saving first."""
    return _cached(f"dashboard:recommendations:{organization.pk}:{days}",
                   RECOMMENDATIONS_SECONDS,
                   lambda: recommendations_for(organization=organization, days=days))


def breakdown_get(*, organization: Organization, period: Period, by: str) -> list[dict]:
    """usage_breakdown(...) for the period, most requests first."""
    return _cached(_period_key("breakdown", organization, period, by), OVERVIEW_SECONDS,
                   lambda: usage_breakdown(organization=organization, start=period.start,
                                           end=period.end, by=by))

"""The dashboard's reads over the request log, kept briefly in Django's cache.

On a busy organization these are the expensive part of a page (a month of a million
records: seconds for the recommendations and breakdowns; tens of milliseconds for the
totals and the series, which read the hourly rollup). Every member of the organization
shares one computation per period for a short while; nothing else reads or writes these
keys.
"""

from django.core.cache import cache

from analytics.recommendations import Recommendation, recommendations_for
from analytics.selectors import usage_breakdown, usage_summary, usage_timeseries
from dashboard.periods import Period
from organizations.models import Organization

# Totals move with every request: a minute old is fresh enough for a dashboard.
OVERVIEW_SECONDS = 60
# Recommendations read days of history; ten minutes changes nothing they say.
RECOMMENDATIONS_SECONDS = 600


def _overview_key(organization: Organization, period: Period) -> str:
    # The period's end is in the key, so a new hour (or day) starts a new entry.
    return f"dashboard:overview:{organization.pk}:{period.name}:{period.end.timestamp():.0f}"


def _recommendations_key(organization: Organization, days: int) -> str:
    return f"dashboard:recommendations:{organization.pk}:{days}"


def overview_get(*, organization: Organization, period: Period) -> dict:
    """{"summary": usage_summary(...), "series": usage_timeseries(...)} for the period."""
    key = _overview_key(organization, period)
    found = cache.get(key)
    if found is None:
        found = {
            "summary": usage_summary(organization=organization, start=period.start,
                                     end=period.end),
            "series": usage_timeseries(organization=organization, start=period.start,
                                       end=period.end, interval=period.interval),
        }
        cache.set(key, found, OVERVIEW_SECONDS)
    return found


def recommendations_get(*, organization: Organization, days: int) -> list[Recommendation]:
    """recommendations_for(...), biggest saving first."""
    key = _recommendations_key(organization, days)
    found = cache.get(key)
    if found is None:
        found = recommendations_for(organization=organization, days=days)
        cache.set(key, found, RECOMMENDATIONS_SECONDS)
    return found


def _breakdown_key(organization: Organization, period: Period, by: str) -> str:
    return (f"dashboard:breakdown:{organization.pk}:{period.name}:{by}:"
            f"{period.end.timestamp():.0f}")


def breakdown_get(*, organization: Organization, period: Period, by: str) -> list[dict]:
    """usage_breakdown(...) for the period, most requests first."""
    key = _breakdown_key(organization, period, by)
    found = cache.get(key)
    if found is None:
        found = usage_breakdown(organization=organization, start=period.start,
                                end=period.end, by=by)
        cache.set(key, found, OVERVIEW_SECONDS)
    return found

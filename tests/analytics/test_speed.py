"""What keeps the analytics reads fast, checked without timing anything: each read is a
fixed number of SQL queries whatever the number of records (the arithmetic is in SQL),
and the range filter can use an index. Timings: bench/analytics_queries.py."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from analytics.models import RequestLog
from analytics.recommendations import recommendations_for
from analytics.selectors import (
    request_logs_in_range,
    usage_breakdown,
    usage_summary,
    usage_timeseries,
)
from caching import services as caching_services
from caching.cold import Lookup, cache_lookups_add
from tests.analytics.helpers import make_cache_entry, make_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_org(world):
    """A little of everything, so every rule and grouping has rows to go through."""
    key = world.a.org.api_keys.get()
    for n in range(60):
        entry = make_cache_entry(world.a.org)
        make_log(world.a.org, cache_key=entry.key_hash, api_key=key if n % 2 else None,
                 cache_outcome=("miss", "hit_redis", "hit_postgres", "bypass")[n % 4],
                 cache_bypassed=n % 4 == 3, streamed=n % 5 == 0, cost=None if n % 7 else 1,
                 status=500 if n % 9 == 0 else 200, ago=timedelta(hours=n))
    return world.a.org


def test_it_reads_each_selector_in_one_query(busy_org, django_assert_num_queries):
    end = timezone.now()
    start = end - timedelta(days=7)
    # Where percentiles are computed, one more statement sets the plan up first
    # (selectors.percentile_friendly_plan).
    setup = 1
    with django_assert_num_queries(1 + setup):
        usage_summary(organization=busy_org, start=end - timedelta(hours=24), end=end)
    # Longer ranges read the hourly rollup (and no more than a few records) instead.
    with django_assert_num_queries(1):
        usage_summary(organization=busy_org, start=start, end=end)
    with django_assert_num_queries(1):
        usage_timeseries(organization=busy_org, start=start, end=end, interval="hour")
    for by in ("model", "endpoint"):
        with django_assert_num_queries(1 + setup):
            usage_breakdown(organization=busy_org, start=start, end=end, by=by)
    with django_assert_num_queries(2 + setup):  # the rows, then the names of their keys
        usage_breakdown(organization=busy_org, start=start, end=end, by="api_key")


def test_it_recommends_in_a_bounded_number_of_queries(busy_org, django_assert_max_num_queries):
    # prices, one per rule, plus the prompt and repeat samples: not one per record
    with django_assert_max_num_queries(13):
        recommendations_for(organization=busy_org, days=30)


def test_it_counts_cache_stats_in_one_query(busy_org, django_assert_num_queries):
    # As analytics.services counts the records it stores.
    cache_lookups_add(lookups=[Lookup(log.organization_id, log.cache_key, log.cache_outcome,
                                      log.created_at)
                               for log in RequestLog.objects.filter(organization=busy_org)])
    with django_assert_num_queries(1):
        totals = caching_services._totals(busy_org.pk)
    assert totals["entries"] == 60
    assert (totals["hits"], totals["misses"]) == (30, 15)


def test_it_can_use_an_index_for_the_range(busy_org):
    end = timezone.now()
    logs = request_logs_in_range(organization=busy_org, start=end - timedelta(days=1), end=end)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = logs.explain()
    assert "Index" in plan  # Index Scan, Index Only Scan or Bitmap Index Scan

"""The migration that starts /cache/stats' own counts (caching.CacheLookups) from the
request records already stored, run by Django's migration executor on the test
database: an upgraded deployment's stats go on from the same numbers."""

from datetime import UTC, datetime

import pytest

from caching.services import _totals
from organizations.services import organization_create
from tests.migrations import at_migrations, migrate

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("analytics", "0005_hourly_rollup"), ("caching", "0001_initial")]
AFTER = [("analytics", "0006_cache_lookups_from_records")]


@pytest.fixture
def old_schema():
    """The database before CacheLookups; put back to the latest state afterwards."""
    yield from at_migrations(BEFORE)


def test_it_counts_the_stored_records_into_the_new_counts(old_schema):
    # organizations/ is not migrated back: its rows are made as today's code makes them.
    busy, quiet = (organization_create(name=n) for n in ("busy", "quiet"))
    logs = old_schema.get_model("analytics", "RequestLog").objects
    outcomes = ["hit_redis", "hit_redis", "hit_postgres", "hit_memory", "hit_coalesced",
                "miss", "miss", "bypass", "none"]
    for n, outcome in enumerate(outcomes):
        logs.create(request_id=f"{n:032x}", organization_id=busy.pk, endpoint="chat/completions",
                    cache_outcome=outcome, status=200, latency_ms=1.0,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC))

    migrate(AFTER)

    assert (_totals(busy.pk)["hits"], _totals(busy.pk)["misses"]) == (5, 2)
    assert _totals(quiet.pk)["hits"] is None  # no records, no counts: zero on the page

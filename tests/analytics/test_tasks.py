"""The request-log task: idempotent records, and the cache hit counts that follow them."""

import time

from analytics.models import RequestLog
from analytics.tasks import request_logs_store
from caching.models import CacheEntry
from tests.analytics.helpers import make_cache_entry, make_event


def test_it_counts_hits_into_the_cache_entry_once_per_record(world):
    entry = make_cache_entry(world.a.org)
    hit = make_event(org_id=world.a.org.pk, cache_outcome="hit_redis", cache_key=entry.key_hash,
                     created_at=time.time())
    other_hit = make_event(org_id=world.a.org.pk, cache_outcome="hit_postgres",
                           cache_key=entry.key_hash, created_at=time.time() + 1)
    miss = make_event(org_id=world.a.org.pk, cache_outcome="miss", cache_key=entry.key_hash)

    assert request_logs_store([hit, other_hit, miss]) == 3
    # The same batch delivered again: nothing new stored, nothing counted twice.
    assert request_logs_store([hit, other_hit, miss]) == 0

    entry.refresh_from_db()
    assert entry.hits == 2
    assert abs(entry.last_hit_at.timestamp() - other_hit["created_at"]) < 1e-5  # the later hit
    assert RequestLog.objects.filter(organization=world.a.org).count() == 3


def test_it_keeps_other_orgs_entries_out_of_the_count(world):
    entry_b = make_cache_entry(world.b.org)
    hit_as_a = make_event(org_id=world.a.org.pk, cache_outcome="hit_redis",
                          cache_key=entry_b.key_hash)
    request_logs_store([hit_as_a])
    assert CacheEntry.objects.get(pk=entry_b.pk).hits == 0

"""Storing request records (analytics.services, behind the task): idempotent records,
the cache's counts and the hourly rollup that follow them; and retention, by beat."""

import time
from datetime import timedelta

from django.db.models import Sum
from django.utils import timezone

from analytics.models import HourlyLatency, HourlyUsage, RequestLog
from analytics.services import request_logs_store
from analytics.tasks import request_logs_prune
from caching.models import CacheEntry
from caching.outcomes import CacheOutcome
from cognitude.celery import app
from tests import live
from tests.analytics.helpers import make_cache_entry, make_event
from tests.workers import start_celery, vhost_create


def test_it_counts_hits_into_the_cache_entry_once_per_record(world):
    entry = make_cache_entry(world.a.org)
    hit = make_event(org_id=world.a.org.pk, cache_outcome=CacheOutcome.HIT_REDIS,
                     cache_key=entry.key_hash, created_at=time.time())
    other_hit = make_event(org_id=world.a.org.pk, cache_outcome=CacheOutcome.HIT_POSTGRES,
                           cache_key=entry.key_hash, created_at=time.time() + 1)
    miss = make_event(org_id=world.a.org.pk, cache_outcome=CacheOutcome.MISS,
                      cache_key=entry.key_hash)

    assert request_logs_store(events=[hit, other_hit, miss]) == 3
    # The same batch delivered again: nothing new stored, nothing counted twice.
    assert request_logs_store(events=[hit, other_hit, miss]) == 0

    entry.refresh_from_db()
    assert entry.hits == 2
    assert abs(entry.last_hit_at.timestamp() - other_hit.created_at) < 1e-5  # the later hit
    assert RequestLog.objects.filter(organization=world.a.org).count() == 3


def test_it_keeps_other_orgs_entries_out_of_the_count(world):
    entry_b = make_cache_entry(world.b.org)
    hit_as_a = make_event(org_id=world.a.org.pk, cache_outcome=CacheOutcome.HIT_REDIS,
                          cache_key=entry_b.key_hash)
    request_logs_store(events=[hit_as_a])
    assert CacheEntry.objects.get(pk=entry_b.pk).hits == 0


def rollup_totals(org) -> tuple[int, int, int]:
    usage = HourlyUsage.objects.filter(organization=org).aggregate(
        requests=Sum("requests"), hits=Sum("hits_redis"))
    latencies = HourlyLatency.objects.filter(organization=org).aggregate(n=Sum("requests"))
    return usage["requests"] or 0, usage["hits"] or 0, latencies["n"] or 0


def test_it_adds_a_redelivered_batch_to_the_rollup_once(world):
    now = time.time()
    batch = [make_event(org_id=world.a.org.pk, cache_outcome=CacheOutcome.HIT_REDIS,
                        created_at=now),
             make_event(org_id=world.a.org.pk, created_at=now - 3600),
             make_event(org_id=world.a.org.pk, created_at=now - 7200, latency_ms=9.5)]

    request_logs_store(events=batch)
    request_logs_store(events=batch)
    request_logs_store(events=[*batch, make_event(org_id=world.a.org.pk, created_at=now)])

    assert rollup_totals(world.a.org) == (4, 1, 4)
    assert RequestLog.objects.filter(organization=world.a.org).count() == 4


def test_it_takes_pruned_records_out_of_the_rollup(world, settings):
    settings.COGNITUDE_REQUEST_LOG_RETENTION_DAYS = 30
    old, recent = time.time() - 31 * 86400, time.time()
    request_logs_store(events=[make_event(org_id=world.a.org.pk, created_at=old),
                        make_event(org_id=world.a.org.pk, created_at=old),
                        make_event(org_id=world.a.org.pk, created_at=recent)])

    assert request_logs_prune() == 2

    assert rollup_totals(world.a.org) == (1, 0, 1)
    # Hours left with no records leave no rows behind.
    assert HourlyUsage.objects.filter(organization=world.a.org).count() == 1


def test_it_deletes_an_organizations_rollup_with_it(world):
    request_logs_store(events=[make_event(org_id=world.a.org.pk)])
    world.a.org.delete()
    assert not HourlyUsage.objects.exists() and not HourlyLatency.objects.exists()


def test_it_adds_only_the_rows_an_insert_did_not_skip(world):
    # Two workers storing one batch at once both get past the "already stored" filter;
    # the second one's conflicting rows are skipped, and must not be counted either.
    events = [make_event(org_id=world.a.org.pk) for _ in range(3)]
    request_logs_store(events=events[:2])
    rows = [RequestLog(request_id=e.request_id, organization=world.a.org,
                       cache_outcome=CacheOutcome.MISS, status=200, latency_ms=1.0,
                       created_at=timezone.now()) for e in events]
    RequestLog.objects.bulk_create(rows, ignore_conflicts=True)
    assert rollup_totals(world.a.org) == (3, 0, 3)


def test_it_prunes_request_records_past_retention(world, settings):
    settings.COGNITUDE_REQUEST_LOG_RETENTION_DAYS = 30
    now = timezone.now()
    for request_id, age in (("old", 31), ("older", 400), ("recent", 29)):
        RequestLog.objects.create(
            request_id=request_id, organization=world.a.org, endpoint="chat/completions",
            cache_outcome=CacheOutcome.MISS, status=200, latency_ms=1.0,
            created_at=now - timedelta(days=age),
        )
    assert request_logs_prune() == 2
    assert list(RequestLog.objects.values_list("request_id", flat=True)) == ["recent"]


def test_it_schedules_retention_in_beat():
    (entry,) = [e for e in app.conf.beat_schedule.values()
                if e["task"] == "analytics.tasks.request_logs_prune"]
    assert entry["task"] in app.tasks


def test_it_starts_beat_with_the_environment_alone(db):
    vhost = vhost_create()
    try:
        beat = start_celery(["beat"], {"CELERY_BROKER_URL": vhost.url,
                                       "DATABASE_URL": live.test_database_url(),
                                       "PATH": "/usr/bin:/bin"},
                            ready="beat: Starting")
        beat.kill()
    finally:
        vhost.delete()

"""Cold-tier writes, in batches, from the event pipeline."""

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from caching.cold import cache_entries_upsert
from caching.events import CacheEntryEvent
from pipeline.storage import events_load


# Retried only while the database is unreachable: an event it refuses is set aside by
# the service, and anything else would fail the same way forever.
@shared_task(autoretry_for=(OperationalError, InterfaceError), retry_backoff=True,
             retry_backoff_max=settings.COGNITUDE_TASK_RETRY_MAX_SECONDS,
             max_retries=None)
def cache_entries_store(events: list[dict]) -> int:
    return cache_entries_upsert(events=events_load(CacheEntryEvent, events))

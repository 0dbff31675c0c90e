"""Cold-tier writes, in batches, from the event buffer. Safe to run twice."""

import base64
from datetime import datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError

from caching.models import CacheEntry
from organizations.models import Organization


# Retried only while the database is unreachable: other errors would fail the same way
# forever.
@shared_task(autoretry_for=(OperationalError, InterfaceError), retry_backoff=True,
             retry_backoff_max=60, max_retries=None)
def cache_entries_store(events: list[dict]) -> int:
    """Upsert cold-tier entries. A refreshed entry (Cache-Control: no-cache) replaces
    the old one; the hit count stays."""
    # The last event for a key wins, so a batch never upserts one row twice; events of
    # an organization deleted meanwhile are dropped.
    live = set(Organization.objects.filter(pk__in={e["org_id"] for e in events})
               .values_list("pk", flat=True))
    latest = {(e["org_id"], e["key_hash"]): e for e in events if e["org_id"] in live}
    entries = [
        CacheEntry(
            organization_id=e["org_id"],
            key_hash=e["key_hash"],
            endpoint=e["endpoint"],
            model=e["model"],
            request=e["request"],
            payload=base64.b64decode(e["payload"]),
            prompt_tokens=e["prompt_tokens"],
            completion_tokens=e["completion_tokens"],
            created_at=datetime.fromisoformat(e["created_at"]),
            expires_at=datetime.fromisoformat(e["expires_at"]) if e["expires_at"] else None,
        )
        for e in latest.values()
    ]
    CacheEntry.objects.bulk_create(
        entries,
        update_conflicts=True,
        unique_fields=["organization", "key_hash"],
        update_fields=["endpoint", "model", "request", "payload", "prompt_tokens",
                       "completion_tokens", "created_at", "expires_at"],
    )
    return len(entries)

"""Cold-tier writes: CacheEntry rows from batches of cache_entry events."""

import base64
from collections.abc import Sequence
from datetime import datetime

from caching.models import CacheEntry
from organizations.models import Organization
from pipeline.storage import batch_store, storable_json, storable_text

# The model is whatever the client sent; cut to the column rather than lose the entry.
_MODEL_LENGTH = CacheEntry._meta.get_field("model").max_length


def cache_entries_upsert(*, events: Sequence[dict]) -> int:
    """Upsert cold-tier entries; returns how many. A refreshed entry (Cache-Control:
    no-cache) replaces the old one; the hit count stays. Safe to run twice.

    The payload is stored byte for byte (a hit answers with it); the request and the
    model as PostgreSQL can hold them (pipeline.storage). An event the database cannot
    store is set aside, the others are stored."""
    return batch_store(kind="cache_entry", events=events, store=_upsert)


def _upsert(events: Sequence[dict]) -> int:
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
            model=storable_text(e["model"])[:_MODEL_LENGTH],
            request=storable_json(e["request"]),
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

"""Cold-tier writes: CacheEntry rows from batches of cache-entry events, and the
counts of lookups that the request records bring (entries' hits, /cache/stats)."""

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Greatest

from caching.events import CacheEntryEvent
from caching.models import CacheEntry, CacheLookups
from caching.outcomes import HIT_OUTCOMES, CacheOutcome
from organizations.models import Organization
from pipeline.storage import batch_store, storable_json, storable_text

# The model is whatever the client sent; cut to the column rather than lose the entry.
_MODEL_LENGTH = CacheEntry._meta.get_field("model").max_length


def cache_entries_upsert(*, events: Sequence[CacheEntryEvent]) -> int:
    """Upsert cold-tier entries; returns how many. A refreshed entry (Cache-Control:
    no-cache) replaces the old one; the hit count stays. Safe to run twice.

    The payload is stored byte for byte (a hit answers with it); the request and the
    model as PostgreSQL can hold them (pipeline.storage). An event the database cannot
    store is set aside, the others are stored."""
    return batch_store(kind=CacheEntryEvent.KIND, events=events, store=_upsert)


def _upsert(events: Sequence[CacheEntryEvent]) -> int:
    # The last event for a key wins, so a batch never upserts one row twice; events of
    # an organization deleted meanwhile are dropped.
    live = set(Organization.objects.filter(pk__in={e.org_id for e in events})
               .values_list("pk", flat=True))
    latest = {(e.org_id, e.key_hash): e for e in events if e.org_id in live}
    entries = [
        CacheEntry(
            organization_id=e.org_id,
            key_hash=e.key_hash,
            endpoint=e.endpoint,
            model=storable_text(e.model)[:_MODEL_LENGTH],
            request=storable_json(e.request),
            payload=base64.b64decode(e.payload),
            prompt_tokens=e.prompt_tokens,
            completion_tokens=e.completion_tokens,
            created_at=e.created_at,
            expires_at=e.expires_at,
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


@dataclass(frozen=True, slots=True)
class Lookup:
    """One request's cache lookup, as its record tells it."""

    org_id: int
    key_hash: str
    outcome: str
    at: datetime


def cache_lookups_add(*, lookups: Iterable[Lookup]) -> None:
    """Count lookups into the cache's numbers: each hit into its entry's hits and
    last_hit_at, each hit and miss into its organization's CacheLookups.

    Called by analytics for the request records it has just stored (and only those), so
    the counts follow the records and a redelivered batch counts nothing twice."""
    entry_hits: dict[tuple[int, str], tuple[int, datetime]] = {}
    totals: dict[int, tuple[int, int]] = {}
    for lookup in lookups:
        hit = lookup.outcome in HIT_OUTCOMES
        if not hit and lookup.outcome != CacheOutcome.MISS:
            continue  # a bypass, or no lookup at all
        hits, misses = totals.get(lookup.org_id, (0, 0))
        totals[lookup.org_id] = (hits + hit, misses + (not hit))
        if hit:
            key = (lookup.org_id, lookup.key_hash)
            count, last = entry_hits.get(key, (0, lookup.at))
            entry_hits[key] = (count + 1, max(last, lookup.at))
    with transaction.atomic():
        # In key order, so that two workers' batches lock rows in the same order.
        for (org_id, key_hash), (count, last) in sorted(entry_hits.items()):
            CacheEntry.objects.filter(organization_id=org_id, key_hash=key_hash).update(
                hits=F("hits") + count, last_hit_at=Greatest(Coalesce("last_hit_at", last), last)
            )
        if totals:
            _totals_add(sorted(totals.items()))


_TABLE = CacheLookups._meta.db_table
# One statement for the batch's organizations, adding to what is there (PostgreSQL and
# SQLite speak the same ON CONFLICT).
_ADD = (f"INSERT INTO {_TABLE} (organization_id, hits, misses) VALUES {{rows}} "
        f"ON CONFLICT (organization_id) DO UPDATE SET "
        f"hits = {_TABLE}.hits + excluded.hits, misses = {_TABLE}.misses + excluded.misses")


def _totals_add(totals: list[tuple[int, tuple[int, int]]]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_ADD.format(rows=", ".join(["(%s, %s, %s)"] * len(totals))),
                       [value for org_id, (hits, misses) in totals
                        for value in (org_id, hits, misses)])

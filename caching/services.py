"""The cache flow: Redis, then PostgreSQL, then (the caller asks upstream) store.

Only this module and its tier modules touch the response cache.
"""

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Subquery
from django.utils import timezone

from caching.events import CacheEntryEvent
from caching.hot import HotStats, hot_tier
from caching.models import CacheEntry
from caching.outcomes import CacheTier
from caching.payload import CachedResponse, CorruptEntry, pack, unpack
from cognitude.db import DatabaseUnavailable, fetch_one, run_in_db_thread
from organizations.models import Organization
from pipeline.buffer import emit

logger = logging.getLogger("cognitude.caching")

@dataclass(frozen=True, slots=True)
class CacheHit:
    response: CachedResponse
    tier: CacheTier


# Every miss runs this, so it is plain SQL on the unique (organization, key_hash)
# index: the ORM's query building cost more than the query itself.
_COLD_GET = (
    f"SELECT payload FROM {CacheEntry._meta.db_table} "
    "WHERE organization_id = %s AND key_hash = %s AND (expires_at IS NULL OR expires_at > %s)"
)


async def _cold_get(org_id: int, key_hash: str) -> bytes | None:
    row = await fetch_one(_COLD_GET, [org_id, key_hash, timezone.now()])
    return bytes(row[0]) if row is not None else None


def _checked(raw: bytes, org_id: int) -> CachedResponse | None:
    try:
        response = unpack(raw)
    except CorruptEntry:
        logger.error("corrupt cache entry for org %s", org_id)
        return None
    # The key already carries the organization; this check makes a bug elsewhere
    # (a wrong key, a restored dump) unable to leak one tenant's answer to another.
    if response.org_id != org_id:
        logger.error("cache entry of org %s found under org %s", response.org_id, org_id)
        return None
    return response


def _hot_hit(raw: bytes | None, org_id: int, tier_kind: str) -> CacheHit | None:
    response = _checked(raw, org_id) if raw is not None else None
    if response is None:
        return None
    return CacheHit(response, CacheTier(tier_kind))


async def _cold_lookup(*, org_id: int, key_hash: str, ttl: int,
                       unlock: str = "") -> CacheHit | None:
    """The PostgreSQL tier's answer, promoted to the hot tier (releasing `unlock`)."""
    try:
        raw = await _cold_get(org_id, key_hash)
    except DatabaseUnavailable:
        return None  # PostgreSQL down: a miss (cognitude.db logs the outage once)
    except Exception:
        logger.exception("cold tier lookup failed")
        return None
    response = _checked(raw, org_id) if raw is not None else None
    if response is None:
        return None
    await hot_tier().set(org_id, key_hash, raw, ttl, unlock=unlock)
    return CacheHit(response, CacheTier.POSTGRES)


async def cache_lookup(*, org_id: int, key_hash: str, ttl: int) -> CacheHit | None:
    """The cached answer for this key: Redis first, then PostgreSQL (promoted to Redis).
    For requests that will not store their answer; the others use `coalescer.turn`."""
    tier = hot_tier()
    hit = _hot_hit(await tier.get(org_id, key_hash), org_id, tier.kind)
    return hit or await _cold_lookup(org_id=org_id, key_hash=key_hash, ttl=ttl)


async def cache_store(
    *,
    org_id: int,
    key_hash: str,
    response: CachedResponse,
    ttl: int,
    ttl_is_explicit: bool,
    endpoint: str,
    model: str,
    request: dict,
    unlock: str = "",
) -> None:
    """Store in Redis now and in PostgreSQL through the event buffer (Celery); `unlock`
    (the leader's coalescing lock) is released in the same round trip."""
    raw = pack(response)
    await hot_tier().set(org_id, key_hash, raw, ttl, unlock=unlock)
    now = timezone.now()
    emit(CacheEntryEvent(
        org_id=org_id, key_hash=key_hash, endpoint=endpoint, model=model, request=request,
        payload=base64.b64encode(raw).decode(), prompt_tokens=response.prompt_tokens,
        completion_tokens=response.completion_tokens, created_at=now,
        # A max-age asked for by the request binds both tiers; the default TTL only
        # bounds the hot tier.
        expires_at=now + timedelta(seconds=ttl) if ttl_is_explicit else None,
    ))


class Coalescer:
    """The cache lookup of a request that will store its answer, and one upstream call
    for many identical concurrent misses.

    Within a process the waiters share an asyncio future; across processes the leader
    holds a short Redis lock (taken in the same round trip as the hot-tier lookup) and
    the others poll the hot tier until the answer lands or the lock goes away (the
    leader failed or died: then one of them leads). The leader's store releases the
    lock in its own round trip.
    """

    POLL_SECONDS = 0.02

    def __init__(self) -> None:
        self._inflight: dict[tuple[int, str], asyncio.Future[CachedResponse | None]] = {}

    @asynccontextmanager
    async def turn(self, *, org_id: int, key_hash: str, ttl: int) -> AsyncIterator["Turn"]:
        """A Turn with the cached answer (`hit`), or the lead: ask upstream, store the
        answer with `cache_store(unlock=turn.lock_token)` and set `turn.result`."""
        key = (org_id, key_hash)
        local = self._inflight.get(key)
        if local is not None:
            try:
                stored = await asyncio.wait_for(
                    asyncio.shield(local), settings.COGNITUDE_COALESCE_TIMEOUT
                )
            except TimeoutError:
                stored = None
            yield Turn(hit=CacheHit(stored, CacheTier.COALESCED) if stored is not None else None)
            return
        future: asyncio.Future[CachedResponse | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        turn = Turn(hit=None)
        try:
            await self._find_or_lead(org_id, key_hash, ttl, turn)
            yield turn
        finally:
            self._inflight.pop(key, None)
            if not future.done():
                future.set_result(turn.result or (turn.hit.response if turn.hit else None))
            if turn.lock_token and turn.result is None:
                # Nothing was stored (an error, an uncacheable answer), so the store did
                # not release the lock: release it now for the next caller.
                await hot_tier().unlock(org_id, key_hash, turn.lock_token)

    async def _find_or_lead(self, org_id: int, key_hash: str, ttl: int, turn: "Turn") -> None:
        tier = hot_tier()
        lock_seconds = settings.COGNITUDE_COALESCE_TIMEOUT
        deadline = time.monotonic() + lock_seconds
        while True:
            raw, token = await tier.get_or_lock(org_id, key_hash, lock_seconds)
            turn.hit = _hot_hit(raw, org_id, tier.kind)
            if turn.hit is not None:
                return
            if raw is not None:
                # An entry we must not serve (corrupt, another organization's): a miss,
                # to be answered and stored over it, not a wait for someone else to.
                raw, token = await tier.get_or_lock(org_id, key_hash, lock_seconds,
                                                    skip_entry=True)
            if token is not None:
                # Ours to answer: the cold tier first (its hit also releases the lock).
                turn.hit = await _cold_lookup(org_id=org_id, key_hash=key_hash, ttl=ttl,
                                              unlock=token)
                turn.lock_token = "" if turn.hit is not None else token
                return
            # Another process leads: wait for its answer in the hot tier.
            while time.monotonic() < deadline:
                await asyncio.sleep(self.POLL_SECONDS)
                turn.hit = _hot_hit(await tier.get(org_id, key_hash), org_id, tier.kind)
                if turn.hit is not None:
                    turn.hit = CacheHit(turn.hit.response, CacheTier.COALESCED)
                    return
                if not await tier.is_locked(org_id, key_hash):
                    break  # the leader gave up: try to lead
            else:
                return  # waited long enough: ask upstream without the lock


@dataclass(slots=True)
class Turn:
    # Set when the answer is known: from a tier, or produced meanwhile by an identical
    # request (tier "coalesced"). Serve it, ask nobody.
    hit: CacheHit | None
    # Set by the leader once it has stored a cacheable answer, for the local waiters.
    result: CachedResponse | None = None
    # The leader's coalescing lock, for cache_store to release ("" when there is none).
    lock_token: str = ""


coalescer = Coalescer()


@dataclass(frozen=True)
class CacheStats:
    total_entries: int
    total_hits: int
    hit_rate: float
    redis_available: bool
    redis_entries: int
    redis_hits: int


def _totals(org_id: int) -> dict:
    """Cold-tier entries and all-time hits and misses, in one query."""
    return Organization.objects.filter(pk=org_id).values(
        entries=Subquery(
            CacheEntry.objects.filter(organization_id=org_id).order_by()
            .values("organization_id").annotate(n=Count("*")).values("n")
        ),
        hits=F("cache_lookups__hits"),
        misses=F("cache_lookups__misses"),
    ).first() or {}


async def cache_stats(*, org_id: int) -> CacheStats:
    """The seed's /cache/stats numbers for one organization.

    Entries come from the cold tier (every cached answer is there). Hits and the hit
    rate, hits / (hits + misses) over all time, come from the lookups counted as the
    request records are stored (CacheLookups), so they count every tier and stay right
    when Redis evicts or restarts; requests that bypassed the cache are not lookups and
    count in neither.
    """
    totals = await run_in_db_thread(_totals, org_id)
    entries, hits = totals.get("entries") or 0, totals.get("hits") or 0
    lookups = hits + (totals.get("misses") or 0)
    hot: HotStats | None = await hot_tier().stats(org_id)
    return CacheStats(
        total_entries=entries,
        total_hits=hits,
        hit_rate=round(hits / lookups, 4) if lookups else 0.0,
        redis_available=hot is not None,
        redis_entries=hot.entries if hot else 0,
        redis_hits=hot.hits if hot else 0,
    )


async def cache_clear(*, org_id: int, hot_only: bool) -> int:
    """Clear one organization's cache; returns the cold entries deleted."""
    await hot_tier().clear(org_id)
    if hot_only:
        return 0
    deleted, _ = await run_in_db_thread(
        lambda: CacheEntry.objects.filter(organization_id=org_id).delete()
    )
    return deleted

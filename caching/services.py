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
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from analytics.buffer import emit
from analytics.models import RequestLog
from analytics.selectors import HIT_OUTCOMES
from caching.hot import HotStats, hot_tier
from caching.models import CacheEntry
from caching.payload import CachedResponse, CorruptEntry, pack, unpack
from cognitude.db import run_in_db_thread
from organizations.models import Organization

logger = logging.getLogger("cognitude.caching")

TIER_REDIS = "redis"
TIER_MEMORY = "memory"
TIER_POSTGRES = "postgres"


@dataclass(frozen=True, slots=True)
class CacheHit:
    response: CachedResponse
    tier: str


# Every miss runs this, so it is plain SQL on the unique (organization, key_hash)
# index: the ORM's query building cost more than the query itself.
_COLD_GET = (
    f"SELECT payload FROM {CacheEntry._meta.db_table} "
    "WHERE organization_id = %s AND key_hash = %s AND (expires_at IS NULL OR expires_at > %s)"
)


def _cold_get(org_id: int, key_hash: str) -> bytes | None:
    with connection.cursor() as cursor:
        cursor.execute(_COLD_GET, [org_id, key_hash, timezone.now()])
        row = cursor.fetchone()
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


async def cache_lookup(*, org_id: int, key_hash: str, ttl: int) -> CacheHit | None:
    """The cached answer for this key: Redis first, then PostgreSQL (promoted to Redis)."""
    tier = hot_tier()
    raw = await tier.get(org_id, key_hash)
    if raw is not None:
        response = _checked(raw, org_id)
        if response is not None:
            return CacheHit(response, TIER_REDIS if tier.kind == "redis" else TIER_MEMORY)
    try:
        raw = await run_in_db_thread(_cold_get, org_id, key_hash)
    except Exception:
        logger.exception("cold tier lookup failed")
        return None
    if raw is None:
        return None
    response = _checked(raw, org_id)
    if response is None:
        return None
    await tier.set(org_id, key_hash, raw, ttl)
    return CacheHit(response, TIER_POSTGRES)


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
) -> None:
    """Store in Redis now and in PostgreSQL through the event buffer (Celery)."""
    raw = pack(response)
    await hot_tier().set(org_id, key_hash, raw, ttl)
    now = timezone.now()
    emit("cache_entry", {
        "org_id": org_id,
        "key_hash": key_hash,
        "endpoint": endpoint,
        "model": model,
        "request": request,
        "payload": base64.b64encode(raw).decode(),
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens,
        "created_at": now.isoformat(),
        # A max-age asked for by the request binds both tiers; the default TTL only
        # bounds the hot tier.
        "expires_at": (now + timedelta(seconds=ttl)).isoformat() if ttl_is_explicit else None,
    })


def cache_hits_add(*, hits: dict[tuple[int, str], tuple[int, datetime]]) -> None:
    """Fold hits into CacheEntry.hits and last_hit_at: {(org_id, key_hash): (count, last)}.

    Called by the request-log task for the hits it has just recorded, so the counts
    follow the request records (and a redelivered batch does not count twice)."""
    with transaction.atomic():
        for (org_id, key_hash), (count, last) in sorted(hits.items()):
            CacheEntry.objects.filter(organization_id=org_id, key_hash=key_hash).update(
                hits=F("hits") + count, last_hit_at=Greatest(Coalesce("last_hit_at", last), last)
            )


class Coalescer:
    """One upstream call for many identical concurrent misses.

    Within a process the waiters share an asyncio future; across processes the
    leader holds a short Redis lock and the others poll the hot tier until the
    answer lands or the lock goes away (the leader failed or died: then they ask
    upstream themselves).
    """

    POLL_SECONDS = 0.02

    def __init__(self) -> None:
        self._inflight: dict[tuple[int, str], asyncio.Future[CachedResponse | None]] = {}

    @asynccontextmanager
    async def turn(self, *, org_id: int, key_hash: str) -> AsyncIterator["Turn"]:
        key = (org_id, key_hash)
        local = self._inflight.get(key)
        if local is not None:
            try:
                stored = await asyncio.wait_for(
                    asyncio.shield(local), settings.COGNITUDE_COALESCE_TIMEOUT
                )
            except TimeoutError:
                stored = None
            yield Turn(stored=stored)
            return
        future: asyncio.Future[CachedResponse | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        turn = Turn(stored=None)
        token = None
        try:
            token = await self._lead_or_wait(org_id, key_hash, turn)
            yield turn
        finally:
            self._inflight.pop(key, None)
            if not future.done():
                future.set_result(turn.result)
            if token:
                await hot_tier().unlock(org_id, key_hash, token)

    async def _lead_or_wait(self, org_id: int, key_hash: str, turn: "Turn") -> str | None:
        tier = hot_tier()
        deadline = time.monotonic() + settings.COGNITUDE_COALESCE_TIMEOUT
        while True:
            token = await tier.lock(org_id, key_hash, settings.COGNITUDE_COALESCE_TIMEOUT)
            if token is not None:
                return token
            # Another process leads: wait for its answer in the hot tier.
            while time.monotonic() < deadline:
                await asyncio.sleep(self.POLL_SECONDS)
                raw = await tier.get(org_id, key_hash)
                if raw is not None:
                    turn.stored = turn.result = _checked(raw, org_id)
                    if turn.stored is not None:
                        return None
                if not await tier.is_locked(org_id, key_hash):
                    break
            else:
                return None


@dataclass(slots=True)
class Turn:
    # Set when another request already produced the answer: serve it, ask nobody.
    stored: CachedResponse | None
    # Set by the leader once it has a cacheable answer, for the local waiters.
    result: CachedResponse | None = None


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
    logs = RequestLog.objects.filter(organization_id=org_id)
    return Organization.objects.filter(pk=org_id).values(
        entries=Subquery(
            CacheEntry.objects.filter(organization_id=org_id).order_by()
            .values("organization_id").annotate(n=Count("*")).values("n")
        ),
        hits=Subquery(logs.filter(cache_outcome__in=HIT_OUTCOMES).order_by()
                      .values("organization_id").annotate(n=Count("*")).values("n")),
        misses=Subquery(logs.filter(cache_outcome="miss").order_by()
                        .values("organization_id").annotate(n=Count("*")).values("n")),
    ).first() or {}


async def cache_stats(*, org_id: int) -> CacheStats:
    """The seed's /cache/stats numbers for one organization.

    Entries come from the cold tier (every cached answer is there). Hits and the hit
    rate come from the request records, hits / (hits + misses) over all time, so they
    count every tier and stay right when Redis evicts or restarts; requests that
    bypassed the cache are not lookups and count in neither.
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

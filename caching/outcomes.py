"""The cache's vocabulary: where an answer came from (its tier) and what a request's
lookup came to (its outcome). Everything that writes or reads either uses these.

Adding a tier is one edit here (the tier and its hit outcome) plus a migration: the
choices of RequestLog.cache_outcome, and a column in analytics' hourly rollup with its
trigger (analytics.models.HourlyUsage says how).
"""

from django.db import models


class CacheTier(models.TextChoices):
    """Where a hit came from: the X-Cognitude-Cache-Tier header's values."""

    REDIS = "redis", "Redis"
    MEMORY = "memory", "in-process"
    POSTGRES = "postgres", "PostgreSQL"
    # Not a store: the answer of an identical request that was in flight.
    COALESCED = "coalesced", "coalesced"


class CacheOutcome(models.TextChoices):
    """What the cache did for one request: RequestLog.cache_outcome."""

    HIT_REDIS = "hit_redis", "hit (Redis)"
    HIT_MEMORY = "hit_memory", "hit (in-process)"
    HIT_POSTGRES = "hit_postgres", "hit (PostgreSQL)"
    HIT_COALESCED = "hit_coalesced", "hit (coalesced)"
    MISS = "miss"
    # Cache-Control: no-cache: not looked up, asked upstream, stored afresh.
    BYPASS = "bypass"
    # Refused before the cache was reached (bad key, bad request).
    NONE = "none", "not looked up"


# A tier without its hit outcome fails here, at import, not in a request.
_HIT_BY_TIER = {tier: CacheOutcome(f"hit_{tier}") for tier in CacheTier}
HIT_OUTCOMES = frozenset(_HIT_BY_TIER.values())
# Outcomes where the gateway asked upstream (its failures are the upstream's).
UPSTREAM_OUTCOMES = frozenset({CacheOutcome.MISS, CacheOutcome.BYPASS})


def hit_outcome(tier: CacheTier) -> CacheOutcome:
    return _HIT_BY_TIER[tier]

"""How much of each limit is in use right now, read from wherever the limits live (the
limits Redis, or this process's memory): for the dashboard's bars and the API."""

import math
import time
from decimal import Decimal
from zoneinfo import ZoneInfo

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from cognitude.redis_urls import sync_redis
from ratelimit.gate import DAY_MS, MINUTE_MS, usd
from ratelimit.keys import budget_key, rate_key, scope_of
from ratelimit.models import Budget, Limit
from ratelimit.periods import budget_period
from ratelimit.store import local_limiter

# what -> (Limit field, period ms); concurrency has no period.
MEASURES = {
    "rpm": ("requests_per_minute", MINUTE_MS),
    "tpm": ("tokens_per_minute", MINUTE_MS),
    "rpd": ("requests_per_day", DAY_MS),
    "conc": ("concurrent_requests", 0),
}


def _used_rate(tat_ms: float | None, now_ms: float, limit: int, period_ms: int) -> int:
    # GCRA: the TAT is now + what is in use, in intervals of period / limit.
    if tat_ms is None or tat_ms <= now_ms:
        return 0
    return min(limit, math.ceil((tat_ms - now_ms) / (period_ms / limit) - 1e-9))


def _read(keys: list[tuple[str, str]]) -> tuple[float, dict[str, object]] | None:
    """(now ms, {key: TAT ms or leases in flight}) for [(key, what)]; None if unreachable."""
    url = settings.COGNITUDE_LIMITS_REDIS_URL
    if not url:
        local = local_limiter()
        now = time.monotonic() * 1000
        return now, {key: (local.leases_in_flight(key, now) if what == "conc"
                           else local.tat(key)) for key, what in keys}
    client = sync_redis(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                  retry=Retry(NoBackoff(), 0))
    try:
        pipe = client.pipeline(transaction=False)
        pipe.time()
        for key, what in keys:
            if what == "conc":
                pipe.zcount(key, "(" + str(time.time() * 1000), "+inf")
            else:
                pipe.get(key)
        seconds, micros = (found := pipe.execute())[0]
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    now = seconds * 1000 + micros / 1000
    return now, {key: (value if what == "conc" else float(value) if value else None)
                 for (key, what), value in zip(keys, found[1:], strict=True)}


def limits_usage(*, limits: list[Limit]) -> dict[int, dict[str, int]] | None:
    """{limit id: {what: in use}} for the limits set on these rows (what: rpm, tpm, rpd,
    conc); None while the limits Redis is unreachable."""
    wanted = [(limit, what, rate_key(limit.organization_id,
                                     scope_of(limit.api_key_id, limit.model), what))
              for limit in limits for what, (field, _) in MEASURES.items()
              if getattr(limit, field)]
    read = _read([(key, what) for _, what, key in wanted])
    if read is None:
        return None
    now, values = read
    usage: dict[int, dict[str, int]] = {limit.pk: {} for limit in limits}
    for limit, what, key in wanted:
        field, period = MEASURES[what]
        value = values[key]
        usage[limit.pk][what] = (int(value or 0) if what == "conc" else
                                 _used_rate(value, now, getattr(limit, field), period))
    return usage


def budgets_spend_live(*, budgets: list[Budget]) -> dict[int, Decimal] | None:
    """{budget id: spend in its current period} as the limits' counters hold it (settled
    requests and those in flight), for the budgets whose counter exists; None when the
    limits live in each process's memory or their Redis is unreachable (the records are
    then the truth: ratelimit.selectors.period_spend)."""
    url = settings.COGNITUDE_LIMITS_REDIS_URL
    if not url or not budgets:
        return None if not url else {}
    keys = [budget_key(budget.organization_id, scope_of(budget.api_key_id),
                       budget_period(budget.period, ZoneInfo(budget.organization.time_zone)))
            for budget in budgets]
    client = sync_redis(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                  retry=Retry(NoBackoff(), 0))
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "s")
        found = pipe.execute()
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return {budget.pk: usd(int(value)) for budget, value in zip(budgets, found, strict=True)
            if value is not None}

"""The limits Redis's health for /health (synchronous, bounded by a short timeout)."""

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from cognitude.redis_urls import sync_redis

_EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
             "volatile-random", "volatile-ttl")


def limits_health(*, timeout: float = 0.5) -> dict:
    url = settings.COGNITUDE_LIMITS_REDIS_URL
    if not url:
        return {"status": "embedded",
                "detail": "in-process limits (COGNITUDE_LIMITS_REDIS_URL not set)"}
    client = sync_redis(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=Retry(NoBackoff(), 0))
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:
        policy = None  # CONFIG refused (a managed Redis): unknown, not unhealthy
    except (redis.RedisError, OSError) as exc:
        return {"status": "unavailable", "error": type(exc).__name__,
                "detail": "limits held per process (fail open) or refused (fail closed)"}
    finally:
        client.close()
    found = {"status": "healthy", "maxmemory_policy": policy}
    if policy in _EVICTING:
        found["warning"] = ("this Redis may evict limit counters: give the limits a Redis "
                            "with maxmemory-policy noeviction")
    return found

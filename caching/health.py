"""The hot tier's health for /health (synchronous, bounded by a short timeout)."""

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from cognitude.redis_urls import sync_redis


def hot_tier_health(*, timeout: float = 0.5) -> dict:
    if not settings.REDIS_URL:
        return {"status": "embedded", "detail": "in-process hot tier (REDIS_URL not set)"}
    client = sync_redis(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        info = client.info()
    except (redis.RedisError, OSError) as exc:
        return {"status": "unavailable", "error": type(exc).__name__}
    finally:
        client.close()
    return {
        "status": "healthy",
        "connected_clients": info.get("connected_clients"),
        "used_memory_human": info.get("used_memory_human"),
        "uptime_in_seconds": info.get("uptime_in_seconds"),
        "maxmemory_policy": info.get("maxmemory_policy"),
    }

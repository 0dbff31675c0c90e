"""Redis URLs, Sentinel sets included, and the clients they name.

redis-py parses redis://, rediss:// and unix:// URLs itself but has no URL for a
Sentinel set. This takes the form several Python projects share (Redis-Sentinel-Url,
Flask-Redis-Sentinel, LangChain, Prefect's docket):

    redis+sentinel://[user:password@]host[:port][,host2[:port2],...]/service_name[/db][?options]
    rediss+sentinel://...   (TLS to the data nodes and to the Sentinels)

Sentinels default to port 26379. The user and password are the data nodes'; the
`sentinel_username` and `sentinel_password` options authenticate to the Sentinels.

A plain URL goes to redis-py's `from_url` unchanged: Sentinel costs nothing to those
who do not use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelSet:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def is_redis_url(url: str) -> bool:
    """One of the forms this project accepts (for the settings' checks)."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return False
    if scheme.lower() in SENTINEL_SCHEMES:
        try:
            sentinel_set(url)
        except ValueError:
            return False
    return True


def sentinel_set(url: str) -> SentinelSet:
    """The Sentinel set a redis+sentinel:// URL names; ValueError if it names none."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL: {scheme}://")
    # urlsplit would read "h1:1,h2:2" as one host with a bad port: split by hand.
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username = password = None
    if credentials:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = []
    for member in filter(None, hosts.split(",")):
        host, _, port = member.rpartition(":") if ":" in member else (member, "", "")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    if not sentinels:
        raise ValueError("a Sentinel URL names at least one Sentinel host")
    service, _, db = path.strip("/").partition("/")
    options = {name: values[-1] for name, values in parse_qs(query).items()}
    service = options.get("service_name", service)
    db = options.get("db", db)
    if not service:
        raise ValueError("a Sentinel URL names the service (the master's name): "
                         "redis+sentinel://host:26379/mymaster/0")
    return SentinelSet(
        sentinels=tuple(sentinels), service=service, db=int(db or 0), username=username,
        password=password, sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        ssl=scheme.lower() == "rediss+sentinel",
    )


def _sentinel_args(found: SentinelSet, kwargs: dict[str, Any]) -> tuple[dict, dict]:
    """(the Sentinels' connection options, the data nodes')."""
    timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_") or k == "retry"}
    sentinel_kwargs: dict[str, Any] = dict(timeouts)
    if found.sentinel_password is not None:
        sentinel_kwargs.update(username=found.sentinel_username,
                               password=found.sentinel_password)
    node = {**kwargs, "db": found.db}
    if found.username is not None:
        node["username"] = found.username
    if found.password is not None:
        node["password"] = found.password
    if found.ssl:
        sentinel_kwargs["ssl"] = True
        node["ssl"] = True
    return sentinel_kwargs, node


def async_redis(url: str, **kwargs: Any):
    """A redis.asyncio client for `url`; for a Sentinel set, one that asks the Sentinels
    for the master at each new connection, so a failover needs no restart: the old
    master's connections fail (or answer READONLY, which redis-py turns into a lost
    connection) and the next ones go to the new master."""
    import redis.asyncio as aioredis

    from cognitude.redis_pool import WaitingConnectionPool

    if not is_sentinel_url(url):
        # A call past the pool's size waits for a connection (redis_pool.py says why).
        return aioredis.Redis.from_pool(WaitingConnectionPool.from_url(
            url, wait_seconds=kwargs.get("socket_timeout") or 1.0, **kwargs))
    from redis.asyncio.sentinel import Sentinel

    found = sentinel_set(url)
    sentinel_kwargs, node = _sentinel_args(found, kwargs)
    return Sentinel(list(found.sentinels), sentinel_kwargs=sentinel_kwargs).master_for(
        found.service, redis_class=aioredis.Redis, **node)


def sync_redis(url: str, **kwargs: Any):
    """`async_redis`, synchronous (health checks, management reads)."""
    import redis

    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kwargs)
    from redis.sentinel import Sentinel

    found = sentinel_set(url)
    sentinel_kwargs, node = _sentinel_args(found, kwargs)
    return Sentinel(list(found.sentinels), sentinel_kwargs=sentinel_kwargs).master_for(
        found.service, redis_class=redis.Redis, **node)


def django_cache_location(url: str) -> tuple[str, dict[str, Any]]:
    """django-redis's LOCATION and extra OPTIONS for `url`: for a Sentinel set, the
    service as the host (django-redis's SentinelClient convention) and the Sentinels."""
    if not is_sentinel_url(url):
        return url, {}
    found = sentinel_set(url)
    auth = ""
    if found.password is not None:
        auth = f"{found.username or ''}:{found.password}@"
    options: dict[str, Any] = {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": list(found.sentinels),
    }
    if found.sentinel_password is not None:
        options["SENTINEL_KWARGS"] = {"username": found.sentinel_username,
                                      "password": found.sentinel_password}
    scheme = "rediss" if found.ssl else "redis"
    return f"{scheme}://{auth}{found.service}/{found.db}", options

"""Who is calling: API key -> organization and its routing table (providers and
routes, keys decrypted), served from a short in-process cache.

A cache hit must not touch PostgreSQL, so a key's answer (good or bad) is
remembered for COGNITUDE_API_KEY_CACHE_SECONDS (5 s by default): that is the bound
on how long a revoked or expired key keeps working in a running process, and on how
long a changed provider or route takes to be seen.

While PostgreSQL is unreachable, an answer checked within COGNITUDE_AUTH_STALE_SECONDS
stands (a key that worked a moment ago keeps working, a refused one stays refused);
every request past the fresh window still asks (the breaker in cognitude.db makes
that free while the database is down), so a revocation counts as soon as it answers.
A key with no answer that recent raises DatabaseUnavailable: the gateway's 503.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial

from django.conf import settings

from cognitude.db import DatabaseUnavailable, read_in_db_thread
from organizations import keys
from organizations.crypto import CredentialDecryptionError
from organizations.services import AuthFailure, api_key_authenticate, api_key_precheck
from routing.selectors import routing_table_for_org
from routing.table import RoutingTable

logger = logging.getLogger("cognitude.proxy")

_MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class UpstreamProblem:
    """Why the organization's upstreams cannot be used, as the client will be told."""

    status: int
    message: str
    code: str


NO_PROVIDER = UpstreamProblem(400, "This organization has no upstream provider configured",
                              "provider_not_configured")
# The operator's configuration, not the caller's request, is wrong: a server error.
UNREADABLE_PROVIDER = UpstreamProblem(
    500, "The organization's provider credential cannot be decrypted", "provider_unreadable")


@dataclass(frozen=True, slots=True)
class Caller:
    org_id: int
    key_id: int
    cache_ttl: int
    routing: RoutingTable
    # Set when the routing table could not be built (then it is empty).
    problem: UpstreamProblem | None = None


_remembered: dict[str, tuple[float, Caller | AuthFailure]] = {}


def _load(raw_key: str) -> Caller | AuthFailure:
    result = api_key_authenticate(raw_key=raw_key)
    if result.api_key is None:
        assert result.failure is not None
        return result.failure
    organization = result.api_key.organization
    table, problem = RoutingTable(), None
    try:
        table = routing_table_for_org(organization_id=organization.pk)
    except CredentialDecryptionError as exc:
        logger.error("org %s: %s", organization.pk, exc)
        problem = UNREADABLE_PROVIDER
    return Caller(
        org_id=organization.pk,
        key_id=result.api_key.pk,
        cache_ttl=organization.cache_ttl_seconds or settings.COGNITUDE_CACHE_TTL,
        routing=table,
        problem=problem,
    )


# Loads in flight, by key: one per key however many requests wait for it (a burst with a
# new key, or every request in flight when a key's memory runs out). Without it, a burst
# queues a load per request behind the few database threads, long enough for the
# database's timeout to judge a busy database a dead one.
_loading: dict[str, asyncio.Future[Caller | AuthFailure]] = {}


def _loaded(raw_key: str, load: asyncio.Future) -> None:
    if _loading.get(raw_key) is load:
        del _loading[raw_key]
    if not load.cancelled():
        load.exception()  # retrieved: its waiters have it


async def _load_shared(raw_key: str) -> Caller | AuthFailure:
    load = _loading.get(raw_key)
    if load is None or load.get_loop() is not asyncio.get_running_loop():
        load = asyncio.ensure_future(read_in_db_thread(_load, raw_key))
        _loading[raw_key] = load
        load.add_done_callback(partial(_loaded, raw_key))
    # Shielded: a waiter that goes away does not cancel the others' load.
    return await asyncio.shield(load)


async def authenticate(raw_key: str | None) -> Caller | AuthFailure:
    """The caller for `raw_key`, through organizations' api_key_authenticate, remembered.
    Raises DatabaseUnavailable for a key not checked lately while PostgreSQL is down."""
    # Shape and checksum first: garbage never reaches the remembered answers.
    failure = api_key_precheck(raw_key=raw_key)
    if failure is not None:
        return failure
    now = time.monotonic()
    remembered = _remembered.get(raw_key)
    if remembered is not None and remembered[0] > now:
        return remembered[1]
    try:
        answer = await _load_shared(raw_key)
    except DatabaseUnavailable:
        if remembered is not None and now < remembered[0] + settings.COGNITUDE_AUTH_STALE_SECONDS:
            return remembered[1]
        raise
    if len(_remembered) >= _MAX_REMEMBERED:
        _remembered.clear()
    _remembered[raw_key] = (now + settings.COGNITUDE_API_KEY_CACHE_SECONDS, answer)
    if isinstance(answer, AuthFailure):
        logger.info("refused API key %s: %s", keys.lookup_prefix(raw_key), answer.value)
    return answer

"""The seed's cache endpoints, for an organization's API key."""

import orjson
from django.http import HttpRequest, HttpResponse

from caching.services import cache_clear, cache_stats
from cognitude.db import run_in_db_thread
from cognitude.error_views import json_methods
from cognitude.errors import error_body
from organizations.keys import key_from_headers
from organizations.services import api_key_authenticate


def _json(status: int, body: bytes) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="application/json")


async def _org_id_for(request: HttpRequest) -> int | None:
    raw_key = key_from_headers(request.headers.get("Authorization"),
                               request.headers.get("X-API-Key"))
    result = await run_in_db_thread(api_key_authenticate, raw_key=raw_key)
    return result.api_key.organization_id if result.api_key else None


_UNAUTHORIZED = error_body(401, "Invalid or missing API key", code="invalid_api_key")


@json_methods("GET")
async def stats(request: HttpRequest) -> HttpResponse:
    org_id = await _org_id_for(request)
    if org_id is None:
        return _json(401, _UNAUTHORIZED)
    result = await cache_stats(org_id=org_id)
    return _json(200, orjson.dumps(result))


@json_methods("DELETE")
async def clear(request: HttpRequest) -> HttpResponse:
    org_id = await _org_id_for(request)
    if org_id is None:
        return _json(401, _UNAUTHORIZED)
    tier = request.GET.get("tier", "all")
    if tier not in ("all", "redis"):
        return _json(400, error_body(400, "tier must be 'redis' or omitted", param="tier"))
    deleted = await cache_clear(org_id=org_id, hot_only=tier == "redis")
    return _json(200, orjson.dumps({"cleared": tier, "deleted_entries": deleted}))

"""Writes of analytics data: the request records, from batches of request events."""

from collections.abc import Sequence
from datetime import UTC, datetime

from analytics.models import RequestLog
from analytics.prices import PriceBook, request_costs
from analytics.selectors import HIT_OUTCOMES
from caching.services import cache_hits_add
from organizations.models import ApiKey, Organization
from pipeline.storage import batch_store, storable_text

# A model name is whatever the client sent; a longer one than the column holds is kept
# cut, not lost with its record.
_MODEL_LENGTH = RequestLog._meta.get_field("model_requested").max_length


def _row(event: dict, *, prices: PriceBook) -> RequestLog:
    created_at = datetime.fromtimestamp(event["created_at"], tz=UTC)
    cost, saved_cost = request_costs(
        prices=prices,
        model=event["model_used"] or event["model_requested"],
        hit=event["cache_outcome"].startswith("hit_"),
        status=event["status"],
        prompt_tokens=event["prompt_tokens"],
        completion_tokens=event["completion_tokens"],
        at=created_at,
    )
    return RequestLog(
        request_id=event["request_id"],
        organization_id=event["org_id"],
        api_key_id=event["api_key_id"],
        endpoint=event["endpoint"],
        model_requested=storable_text(event["model_requested"])[:_MODEL_LENGTH],
        model_used=storable_text(event["model_used"])[:_MODEL_LENGTH],
        provider=event["provider"],
        cache_outcome=event["cache_outcome"],
        cache_bypassed=event["cache_bypassed"],
        cache_key=event["cache_key"],
        status=event["status"],
        error_type=storable_text(event["error_type"]),
        prompt_tokens=event["prompt_tokens"],
        completion_tokens=event["completion_tokens"],
        latency_ms=event["latency_ms"],
        upstream_latency_ms=event["upstream_latency_ms"],
        streamed=event["streamed"],
        cost=cost,
        saved_cost=saved_cost,
        created_at=created_at,
    )


def request_logs_store(*, events: Sequence[dict]) -> int:
    """Insert request records; returns how many. Rows already there (same request id)
    are left alone, so a redelivered batch stores and counts nothing twice.

    Records of an organization deleted meanwhile are dropped; a deleted key's records
    are kept without the key. The hourly rollup (HourlyUsage, HourlyLatency) follows the
    rows actually inserted: a trigger adds them in the same statement. An event the
    database cannot store is set aside (pipeline.storage), the others are stored."""
    prices = PriceBook.load()  # once per batch, not once per row
    return batch_store(kind="request_log", events=events,
                       store=lambda chunk: _store(chunk, prices=prices))


def _store(events: Sequence[dict], *, prices: PriceBook) -> int:
    orgs = set(Organization.objects.filter(pk__in={e["org_id"] for e in events})
               .values_list("pk", flat=True))
    keys = set(ApiKey.objects.filter(pk__in={e["api_key_id"] for e in events})
               .values_list("pk", flat=True))
    seen = set(RequestLog.objects.filter(request_id__in=[e["request_id"] for e in events])
               .values_list("request_id", flat=True))
    rows = [_row(e, prices=prices) for e in events
            if e["org_id"] in orgs and e["request_id"] not in seen]
    for row in rows:
        if row.api_key_id not in keys:
            row.api_key_id = None
    RequestLog.objects.bulk_create(rows, ignore_conflicts=True)
    cache_hits_add(hits=_hits(rows))
    return len(rows)


def _hits(rows: list[RequestLog]) -> dict[tuple[int, str], tuple[int, datetime]]:
    hits: dict[tuple[int, str], tuple[int, datetime]] = {}
    for row in rows:
        if row.cache_outcome in HIT_OUTCOMES:
            key = (row.organization_id, row.cache_key)
            count, last = hits.get(key, (0, row.created_at))
            hits[key] = (count + 1, max(last, row.created_at))
    return hits

"""Writes of analytics data: the request records, from batches of request events."""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from analytics.events import RequestEvent
from analytics.models import Feedback, RequestLog
from analytics.prices import ZERO, PriceBook, request_costs
from caching.cold import Lookup, cache_lookups_add
from caching.outcomes import HIT_OUTCOMES
from organizations.models import ApiKey, Organization
from pipeline.storage import batch_store, storable_text

# A model name is whatever the client sent; a longer one than the column holds is kept
# cut, not lost with its record.
_MODEL_LENGTH = RequestLog._meta.get_field("model_requested").max_length
_PROVIDER_LENGTH = RequestLog._meta.get_field("provider").max_length


def request_logs_store(*, events: Sequence[RequestEvent]) -> int:
    """Insert request records; returns how many. Rows already there (same request id)
    are left alone, so a redelivered batch stores and counts nothing twice.

    Records of an organization deleted meanwhile are dropped; a deleted key's records
    are kept without the key. The cache's counts (entries' hits, /cache/stats) and the
    hourly rollup (HourlyUsage, HourlyLatency, by a trigger in the same statement)
    follow the rows actually inserted. An event the database cannot store is set aside
    (pipeline.storage), the others are stored."""
    prices = PriceBook.load()  # once per batch, not once per row
    return batch_store(kind=RequestEvent.KIND, events=events,
                       store=lambda chunk: _store(chunk, prices=prices))


def _store(events: Sequence[RequestEvent], *, prices: PriceBook) -> int:
    orgs = set(Organization.objects.filter(pk__in={e.org_id for e in events})
               .values_list("pk", flat=True))
    keys = set(ApiKey.objects.filter(pk__in={e.api_key_id for e in events})
               .values_list("pk", flat=True))
    seen = set(RequestLog.objects.filter(request_id__in=[e.request_id for e in events])
               .values_list("request_id", flat=True))
    rows = [_row(e, prices=prices, key_exists=e.api_key_id in keys) for e in events
            if e.org_id in orgs and e.request_id not in seen]
    RequestLog.objects.bulk_create(rows, ignore_conflicts=True)
    cache_lookups_add(lookups=[
        Lookup(row.organization_id, row.cache_key, row.cache_outcome, row.created_at)
        for row in rows])
    return len(rows)


def _row(event: RequestEvent, *, prices: PriceBook, key_exists: bool) -> RequestLog:
    created_at = datetime.fromtimestamp(event.created_at, tz=UTC)
    cost, saved_cost = request_costs(
        prices=prices,
        model=event.model_used or event.model_requested,
        hit=event.cache_outcome in HIT_OUTCOMES,
        status=event.status,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        at=created_at,
    )
    asked_cost, routing_saved = _routing_costs(event, prices=prices, at=created_at,
                                               paid=saved_cost if event.cache_outcome
                                               in HIT_OUTCOMES else cost)
    return RequestLog(
        request_id=event.request_id,
        organization_id=event.org_id,
        api_key_id=event.api_key_id if key_exists else None,
        endpoint=event.endpoint,
        model_requested=storable_text(event.model_requested)[:_MODEL_LENGTH],
        model_used=storable_text(event.model_used)[:_MODEL_LENGTH],
        provider=storable_text(event.provider)[:_PROVIDER_LENGTH],
        attempts=event.attempts,
        fallback=storable_text(event.fallback),
        cache_outcome=event.cache_outcome,
        cache_bypassed=event.cache_bypassed,
        cache_key=event.cache_key,
        status=event.status,
        error_type=storable_text(event.error_type),
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        latency_ms=event.latency_ms,
        upstream_latency_ms=event.upstream_latency_ms,
        streamed=event.streamed,
        cost=cost,
        saved_cost=saved_cost,
        route_mode=event.route_mode,
        route_tier=event.route_tier,
        route_score=event.route_score,
        route_model=storable_text(event.route_model)[:_MODEL_LENGTH],
        asked_cost=asked_cost,
        routing_saved_cost=routing_saved,
        created_at=created_at,
    )


def _routing_costs(event: RequestEvent, *, prices: PriceBook, at: datetime,
                   paid: Decimal | None) -> tuple[Decimal | None, Decimal | None]:
    """(asked_cost, routing_saved_cost) of a request smart routing decided: what the
    model asked for (for `auto`, the complex tier's) would have cost with these tokens,
    and that minus what was paid (`paid`: the cost, or on a hit the cache's saving, both
    priced on the model that answered). In shadow mode the model asked for answered,
    so the saving is the one the router's choice would have made. None: unpriced."""
    if not event.route_mode:
        return None, None
    if not 200 <= event.status < 300:
        return ZERO, ZERO
    tokens = (event.prompt_tokens, event.completion_tokens)
    if not any(tokens):
        return None, None
    asked = prices.cost(event.route_baseline, at, *tokens)
    if event.route_mode == "shadow":
        paid = prices.cost(event.route_model, at, *tokens)
    if asked is None or paid is None:
        return asked, None
    return asked, asked - paid


class RequestNotFound(Exception):
    """No request of this organization has that id (another organization's included)."""


def feedback_set(*, org_id: int, api_key_id: int | None, request_id: str,
                 score: float, rating: str = "", note: str = "") -> tuple[Feedback, bool]:
    """Store what the caller thought of its request `request_id`, replacing feedback
    given before; returns (feedback, created). Raises RequestNotFound unless the
    request is one of the organization's (its record written: records land within
    about COGNITUDE_EVENT_FLUSH_SECONDS)."""
    if not RequestLog.objects.filter(organization_id=org_id, request_id=request_id).exists():
        raise RequestNotFound(f"No request {request_id!r} in this organization")
    # The unique constraint keeps one row per request when two first feedbacks race
    # (update_or_create then finds and updates the winner's).
    return Feedback.objects.update_or_create(
        organization_id=org_id, request_id=request_id,
        defaults={"api_key_id": api_key_id, "score": score, "rating": rating,
                  "note": storable_text(note)})

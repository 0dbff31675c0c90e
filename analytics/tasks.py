"""Batches of request events into RequestLog rows. Idempotent: the request id is unique
and a redelivered batch inserts nothing twice."""

from datetime import UTC, datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from analytics.models import RequestLog
from analytics.prices import PriceBook, request_costs
from analytics.selectors import HIT_OUTCOMES
from caching.services import cache_hits_add
from organizations.models import ApiKey, Organization


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
        model_requested=event["model_requested"],
        model_used=event["model_used"],
        provider=event["provider"],
        cache_outcome=event["cache_outcome"],
        cache_bypassed=event["cache_bypassed"],
        cache_key=event["cache_key"],
        status=event["status"],
        error_type=event["error_type"],
        prompt_tokens=event["prompt_tokens"],
        completion_tokens=event["completion_tokens"],
        latency_ms=event["latency_ms"],
        upstream_latency_ms=event["upstream_latency_ms"],
        streamed=event["streamed"],
        cost=cost,
        saved_cost=saved_cost,
        created_at=created_at,
    )


# Retried only while the database is unreachable: any other error would fail the same
# way forever.
@shared_task(autoretry_for=(OperationalError, InterfaceError), retry_backoff=True,
             retry_backoff_max=60, max_retries=None)
def request_logs_store(events: list[dict]) -> int:
    """Insert request records; rows already there (same request id) are left alone.

    Records of an organization deleted meanwhile are dropped; a deleted key's records
    are kept without the key. The hourly rollup (HourlyUsage, HourlyLatency) follows the
    rows actually inserted: a trigger adds them in the same statement."""
    orgs = set(Organization.objects.filter(pk__in={e["org_id"] for e in events})
               .values_list("pk", flat=True))
    keys = set(ApiKey.objects.filter(pk__in={e["api_key_id"] for e in events})
               .values_list("pk", flat=True))
    # Records already stored (a redelivered batch) are neither stored nor counted again.
    seen = set(RequestLog.objects.filter(request_id__in=[e["request_id"] for e in events])
               .values_list("request_id", flat=True))
    prices = PriceBook.load()  # once per batch, not once per row
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


PRUNE_BATCH = 10_000


@shared_task(autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=600,
             max_retries=5)
def request_logs_prune() -> int:
    """Delete request records older than COGNITUDE_REQUEST_LOG_RETENTION_DAYS.

    In batches, each its own short statement, so the table is never locked long and a
    retry after a failure only redoes the batch that failed."""
    cutoff = timezone.now() - timedelta(days=settings.COGNITUDE_REQUEST_LOG_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(RequestLog.objects.filter(created_at__lt=cutoff)
                   .values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += RequestLog.objects.filter(pk__in=ids).delete()[0]

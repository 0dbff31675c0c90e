"""Batches of request events into RequestLog rows. Idempotent: the request id is unique
and a redelivered batch inserts nothing twice."""

from datetime import UTC, datetime

from celery import shared_task

from analytics.models import RequestLog


def _row(event: dict) -> RequestLog:
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
        created_at=datetime.fromtimestamp(event["created_at"], tz=UTC),
    )


@shared_task(autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=60,
             max_retries=None)
def request_logs_store(events: list[dict]) -> int:
    """Insert request records; rows already there (same request id) are left alone."""
    RequestLog.objects.bulk_create([_row(e) for e in events], ignore_conflicts=True)
    return len(events)

"""The request records' tasks: storing batches of request events, and retention."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from analytics import services
from analytics.events import RequestEvent
from analytics.models import RequestLog
from pipeline.storage import events_load


# Retried only while the database is unreachable: an event it refuses is set aside by
# the service, and anything else would fail the same way forever.
@shared_task(autoretry_for=(OperationalError, InterfaceError), retry_backoff=True,
             retry_backoff_max=settings.COGNITUDE_TASK_RETRY_MAX_SECONDS,
             max_retries=None)
def request_logs_store(events: list[dict]) -> int:
    return services.request_logs_store(events=events_load(RequestEvent, events))


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

"""Delivering AlertEvents: one attempt at a time, each claimed in the database, retried
with exponential backoff and jitter until COGNITUDE_ALERT_DELIVERY_MAX_SECONDS after
the event, then marked failed.

Exactly once per event on our side: an attempt starts only by a conditional UPDATE that
claims the row (pending or retrying, unclaimed or its claim run out, its retry due), so
a task delivered twice, or two workers holding the same event, send it once; a
delivered or failed event is never tried again. A worker that dies mid-attempt leaves a
claim that runs out after CLAIM_SECONDS, and the redelivered task (acks_late) or the
sweep takes it up. Receivers get the event's id (Cognitude-Event-Id, dedup_key) for the
one case no sender can rule out: an answer lost on its way back.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from prometheus_client import Counter

from alerts.channels import Channel, DeliveryError, channel_for
from alerts.models import AlertChannel, AlertEvent, AlertRule
from alerts.notifications import Notification, State
from organizations import crypto
from organizations.crypto import CredentialDecryptionError
from organizations.models import Organization

# The longest single wait between attempts, whatever the bound: a receiver that comes
# back is noticed within this.
MAX_BACKOFF_SECONDS = 900.0

_OPEN = (AlertEvent.Status.PENDING, AlertEvent.Status.RETRYING)

# Served by /metrics with the others (a worker on the same host: PROMETHEUS_MULTIPROC_DIR).
ATTEMPTS = Counter("cognitude_alert_delivery_attempts",
                   "Alert delivery attempts, by channel kind and the event's status after it "
                   "(delivered, retrying, failed)", ["kind", "status"])

_UNITS = {"spend_usd": "USD", "budget_used_pct": "%", "error_rate_pct": "%",
          "p95_latency_ms": "ms", "cache_hit_rate_pct": "%", "limit_rejections": "requests",
          "provider_failing": "targets", "no_traffic_minutes": "minutes"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt did. `status` is the event's status afterwards; `retry_in` the
    seconds until the next attempt is due (None: none will be made); `attempted` is
    False when this call made no attempt (not due, already delivered, claimed)."""

    status: str
    response: str
    retry_in: float | None = None
    attempted: bool = True


def _claim_seconds() -> float:
    # An attempt takes at most the receiver timeout (an SMTP exchange a few of them);
    # a claim outliving that only means a dead worker's event waits a little longer.
    return settings.COGNITUDE_ALERT_DELIVERY_TIMEOUT * 3 + 30


def backoff_seconds(*, attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: BACKOFF, doubling, with "equal
    jitter" (half fixed, half random), so that receivers coming back are not met by
    every retry at the same instant."""
    base = min(settings.COGNITUDE_ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** (attempts - 1),
               MAX_BACKOFF_SECONDS)
    return base / 2 + random.uniform(0, base / 2)


def dashboard_url(organization: Organization) -> str:
    """The alerts page of the organization, the link in every message."""
    path = reverse("dashboard:alerts", kwargs={"slug": organization.slug})
    return f"{settings.COGNITUDE_PUBLIC_URL}{path}"


def _filter_text(rule: AlertRule | None) -> str:
    if rule is None:
        return ""
    parts = [f"model {rule.model}" if rule.model else "",
             f"key {rule.api_key.prefix}" if rule.api_key_id else "",
             f"provider {rule.provider}" if rule.provider else ""]
    return ", ".join(part for part in parts if part)


def _metric_label(metric: str) -> str:
    # "Spend (USD)" -> "Spend": the unit is shown with the numbers.
    label = str(AlertRule.Metric(metric).label) if metric in AlertRule.Metric.values else metric
    return label.split(" (")[0]


def notification_for_event(event: AlertEvent) -> Notification:
    """The event as every channel formats it (the rule's window and filter if the rule
    still exists; the rest was copied onto the event when it was made)."""
    rule = event.rule
    comparison = event.comparison or (rule.comparison if rule else AlertRule.Comparison.GT)
    metric = event.metric or (rule.metric if rule else "")
    return Notification(
        state=State(event.transition),
        organization_name=event.organization.name,
        organization_slug=event.organization.slug,
        rule_id=event.rule_id,
        rule_name=event.rule_name or (rule.name if rule else "(deleted rule)"),
        metric=metric,
        metric_label=_metric_label(metric),
        comparison=str(AlertRule.Comparison(comparison).label),
        value=event.value,
        threshold=event.threshold if event.threshold is not None else (
            rule.threshold if rule else Decimal(0)),
        unit=_UNITS.get(metric, ""),
        window_seconds=rule.window_seconds if rule else 0,
        filter=_filter_text(rule),
        event_id=event.pk,
        seq=event.seq,
        occurred_at=event.created_at,
        dashboard_url=dashboard_url(event.organization),
    )


def _finish(event: AlertEvent, *, status: str, response: str, **fields: object) -> int:
    # Only the attempt holding the claim finishes (its number is the token): a claim
    # that ran out and was taken over belongs to the newer attempt.
    ATTEMPTS.labels(event.channel.kind if event.channel else "none", status).inc()
    return AlertEvent.objects.filter(pk=event.pk, status__in=_OPEN,
                                     attempts=event.attempts).update(
        status=status, response=response[:2000], claimed_until=None, **fields)


def alert_event_deliver(*, event_id: int) -> Outcome:
    """Make one delivery attempt of the event, if it is due and nobody else is making
    one; record it on the event. Safe to call any number of times."""
    now = timezone.now()
    claimed = (
        AlertEvent.objects.filter(pk=event_id, status__in=_OPEN)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(claimed_until=now + timedelta(seconds=_claim_seconds()),
                attempts=F("attempts") + 1)
    )
    if not claimed:
        current = AlertEvent.objects.filter(pk=event_id).values(
            "status", "response", "next_attempt_at").first()
        if current is None:
            return Outcome(status="missing", response="", attempted=False)
        due = current["next_attempt_at"]
        retry_in = (max(0.0, (due - now).total_seconds())
                    if current["status"] in _OPEN and due else None)
        return Outcome(status=current["status"], response=current["response"],
                       retry_in=retry_in, attempted=False)

    event = AlertEvent.objects.select_related(
        "organization", "rule", "rule__api_key", "channel").get(pk=event_id)
    channel = event.channel
    # A channel is only ever the event's organization's: checked here again so that no
    # row, however it was made, sends one organization's alert to another's receiver.
    if channel is None or channel.organization_id != event.organization_id:
        return _failed(event, "No channel: it was deleted")
    if not channel.enabled:
        return _failed(event, "The channel is disabled")
    try:
        sender = _sender(channel)
    except CredentialDecryptionError as exc:
        return _failed(event, str(exc))

    try:
        sent = sender.send(notification_for_event(event))
    except DeliveryError as exc:
        return _after_failure(event, exc)
    _finish(event, status=AlertEvent.Status.DELIVERED, response=sent.response,
            delivered_at=timezone.now(), next_attempt_at=None)
    return Outcome(status=AlertEvent.Status.DELIVERED, response=sent.response)


def _sender(channel: AlertChannel) -> Channel:
    secret = crypto.decrypt(channel.secret_encrypted) if channel.secret_encrypted else ""
    return channel_for(kind=channel.kind, target=crypto.decrypt(channel.target_encrypted),
                       secret=secret)


def _failed(event: AlertEvent, response: str) -> Outcome:
    _finish(event, status=AlertEvent.Status.FAILED, response=response, next_attempt_at=None)
    return Outcome(status=AlertEvent.Status.FAILED, response=response)


def _after_failure(event: AlertEvent, error: DeliveryError) -> Outcome:
    attempts = event.attempts  # read after the claim: this attempt included
    if not error.retryable:
        return _failed(event, error.response)
    now = timezone.now()
    deadline = event.created_at + timedelta(
        seconds=settings.COGNITUDE_ALERT_DELIVERY_MAX_SECONDS)
    left = (deadline - now).total_seconds()
    # The last attempt falls on the bound itself, not a backoff past it.
    wait = min(max(backoff_seconds(attempts=attempts), error.retry_after or 0), left)
    if wait <= 0:
        return _failed(event, f"{error.response} (gave up after {attempts} attempts)")
    _finish(event, status=AlertEvent.Status.RETRYING, response=error.response,
            next_attempt_at=now + timedelta(seconds=wait))
    return Outcome(status=AlertEvent.Status.RETRYING, response=error.response, retry_in=wait)


def alert_events_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Open events whose attempt is due and unclaimed, oldest first: what the sweep
    enqueues again (an enqueue lost with a broker outage, a worker that died holding a
    claim). Events a task is already waiting on are included once due; their second
    task finds nothing to do."""
    now = now or timezone.now()
    return list(
        AlertEvent.objects.filter(status__in=_OPEN, channel__isnull=False)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("created_at").values_list("pk", flat=True)[:limit]
    )


def alert_test_send(*, channel: AlertChannel) -> AlertEvent:
    """"Send a test notification": one attempt now (the person who asked is waiting for
    the answer), recorded in the history as a test event with what the receiver said."""
    event = AlertEvent.objects.create(
        organization_id=channel.organization_id, transition=AlertEvent.Transition.TEST,
        rule_name="Test notification", channel=channel, channel_name=channel.name,
        channel_key=channel.pk, threshold=Decimal(0), metric="", comparison="")
    event.organization = channel.organization
    outcome = alert_event_deliver(event_id=event.pk)
    if outcome.status == AlertEvent.Status.RETRYING:
        # Nobody retries a test: what the receiver said is the answer.
        AlertEvent.objects.filter(pk=event.pk, status=AlertEvent.Status.RETRYING).update(
            status=AlertEvent.Status.FAILED, next_attempt_at=None)
    event.refresh_from_db()
    return event

"""Delivering AlertEvents to real receivers on loopback: once, retried while the
receiver is down, failed past the bound, never to another organization."""

import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from alerts import delivery
from alerts.channels import SIGNATURE_HEADER
from alerts.models import AlertChannel, AlertEvent, AlertRule
from alerts.services import alert_channel_create
from alerts.tasks import deliver, deliver_due
from organizations import crypto
from organizations.models import Organization
from organizations.services import organization_create
from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.alerts.test_channels import documented_verifier
from tests.workers import wait_until

SECRET = "whsec_delivery_test"


def make_channel(org: Organization, kind: str, target: str, *, secret: str = "",
                 name: str = "") -> AlertChannel:
    return AlertChannel.objects.create(
        organization=org, name=name or f"{kind} {AlertChannel.objects.count()}", kind=kind,
        target_encrypted=crypto.encrypt(target),
        secret_encrypted=crypto.encrypt(secret) if secret else "")


def make_event(channel: AlertChannel, *, transition: str = "firing",
               org: Organization | None = None, **fields) -> AlertEvent:
    org = org or channel.organization
    rule, _ = AlertRule.objects.get_or_create(
        organization=org, name="Spend over $10",
        defaults={"metric": "spend_usd", "comparison": "gt", "threshold": Decimal("10"),
                  "window_seconds": 3600})
    return AlertEvent.objects.create(
        organization=org, rule=rule, rule_name=rule.name, metric=rule.metric,
        comparison=rule.comparison, transition=transition, seq=1, value=Decimal("12.5"),
        threshold=rule.threshold, channel=channel, channel_name=channel.name,
        channel_key=channel.pk, **fields)


def status_of(event: AlertEvent) -> AlertEvent:
    event.refresh_from_db()
    return event


@pytest.fixture
def fast_retries(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True  # the receivers are on loopback
    settings.COGNITUDE_ALERT_DELIVERY_BACKOFF_SECONDS = 0.1
    settings.COGNITUDE_ALERT_DELIVERY_MAX_SECONDS = 3
    settings.COGNITUDE_ALERT_DELIVERY_TIMEOUT = 2


@pytest.fixture
def receiver():
    started = HttpReceiver().start()
    yield started
    started.stop()


@pytest.fixture
def org_a(db) -> Organization:
    return organization_create(name="Org A")


@pytest.fixture
def org_b(db) -> Organization:
    return organization_create(name="Org B")


def test_it_delivers_an_event_and_records_the_attempt(org_a, receiver, fast_retries):
    event = make_event(make_channel(org_a, "webhook", f"{receiver.url}/in", secret=SECRET))

    deliver.delay(event.pk)

    event = status_of(event)
    assert (event.status, event.attempts, event.response) == ("delivered", 1, "HTTP 200: ok")
    assert event.delivered_at is not None and event.claimed_until is None
    [got] = receiver.received
    assert documented_verifier()(got.body, got.headers[SIGNATURE_HEADER], SECRET)
    body = json.loads(got.body)
    assert body["id"] == f"evt_{event.pk}" and body["value"] == 12.5
    assert body["organization"]["slug"] == org_a.slug
    assert body["dashboard_url"] == f"http://127.0.0.1:8000/orgs/{org_a.slug}/alerts/"


def test_it_delivers_once_when_the_task_runs_twice(org_a, receiver, fast_retries):
    event = make_event(make_channel(org_a, "slack", receiver.url))

    deliver.apply(args=[event.pk])
    deliver.apply(args=[event.pk])  # the broker redelivered it

    assert len(receiver.received) == 1
    assert (status_of(event).status, event.attempts) == ("delivered", 1)


@pytest.mark.django_db(transaction=True)
def test_it_delivers_once_when_two_workers_race(receiver, fast_retries):
    org = organization_create(name="Org A")
    events = [make_event(make_channel(org, "webhook", receiver.url, secret=SECRET))]
    barrier = threading.Barrier(4)
    outcomes = []

    def worker() -> None:
        barrier.wait()
        try:
            outcomes.append(delivery.alert_event_deliver(event_id=events[0].pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(receiver.received) == 1
    assert sorted(o.attempted for o in outcomes) == [False, False, False, True]
    assert (status_of(events[0]).status, events[0].attempts) == ("delivered", 1)


@pytest.mark.django_db(transaction=True)
def test_it_retries_while_the_receiver_is_down_then_delivers_once(settings, fast_retries):
    org = organization_create(name="Org A")
    down = HttpReceiver()  # not listening yet: connections are refused
    event = make_event(make_channel(org, "webhook", down.url, secret=SECRET))
    settings.COGNITUDE_ALERT_DELIVERY_MAX_SECONDS = 20  # a loaded machine is slow

    deliver.delay(event.pk)
    assert status_of(event).status == "retrying" and event.attempts == 1
    assert "Cannot connect" in event.response
    down.start_in(0.5)
    try:
        wait_until(lambda: status_of(event).status == "delivered", timeout=15,
                   what="the delivery")
    finally:
        down.stop()

    assert event.attempts >= 2 and event.response == "HTTP 200: ok"
    assert len(down.received) == 1
    assert json.loads(down.received[0].body)["id"] == f"evt_{event.pk}"


@pytest.mark.django_db(transaction=True)
def test_it_marks_the_delivery_failed_past_the_bound(settings, fast_retries):
    settings.COGNITUDE_ALERT_DELIVERY_MAX_SECONDS = 1
    org = organization_create(name="Org A")
    receiver = HttpReceiver(default=(503, "busy")).start()
    event = make_event(make_channel(org, "slack", receiver.url))
    try:
        deliver.delay(event.pk)
        wait_until(lambda: status_of(event).status == "failed", timeout=8,
                   what="the delivery to fail")
    finally:
        receiver.stop()

    assert event.attempts >= 3 and event.attempts == len(receiver.received)
    assert event.response.startswith("HTTP 503: busy (gave up after")
    assert event.delivered_at is None and event.next_attempt_at is None
    # Given up at the bound (plus what a loaded machine adds), not after more backoff.
    assert timezone.now() - event.created_at < timedelta(seconds=1 + 3)


def failed_slack_attempts() -> float:
    return REGISTRY.get_sample_value("cognitude_alert_delivery_attempts_total",
                                     {"kind": "slack", "status": "failed"}) or 0


def test_it_fails_at_once_on_a_permanent_refusal_and_counts_it(org_a, receiver,
                                                               fast_retries):
    receiver.answers = [(404, "no_service")]
    event = make_event(make_channel(org_a, "slack", receiver.url))
    before = failed_slack_attempts()

    deliver.delay(event.pk)

    assert (status_of(event).status, event.attempts) == ("failed", 1)
    assert event.response == "HTTP 404: no_service"
    assert failed_slack_attempts() == before + 1


def test_it_waits_at_least_what_retry_after_asks(org_a, receiver, fast_retries):
    receiver.answers = [(429, "slow down")]
    receiver.headers = {"Retry-After": "2"}
    event = make_event(make_channel(org_a, "slack", receiver.url))

    outcome = delivery.alert_event_deliver(event_id=event.pk)
    assert (outcome.status, outcome.retry_in) == ("retrying", 2)
    assert status_of(event).next_attempt_at - timezone.now() > timedelta(seconds=1.5)

    # Asked again before then (a duplicate task, the sweep): nothing is sent.
    again = delivery.alert_event_deliver(event_id=event.pk)
    assert again.attempted is False and len(receiver.received) == 1
    assert delivery.alert_events_due() == []


def test_it_refuses_a_webhook_to_a_private_address_at_send(org_a, receiver, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    # Stored while private hosts were allowed (or before a name was re-pointed).
    event = make_event(make_channel(org_a, "webhook", receiver.url, secret=SECRET))

    deliver.delay(event.pk)

    assert (status_of(event).status, event.attempts) == ("failed", 1)
    assert "private, loopback or link-local" in event.response
    assert receiver.received == []


def test_it_refuses_a_private_webhook_when_the_channel_is_saved(org_a, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    for target in ("http://10.0.0.7/hook", "http://[::1]:8080/hook",
                   "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(ValidationError) as raised:
            alert_channel_create(organization=org_a, name="ops", kind="webhook",
                                 target=target)
        assert "private, loopback or link-local" in raised.value.messages[0]
    assert not AlertChannel.objects.filter(organization=org_a).exists()


def test_it_keeps_targets_and_signing_secrets_encrypted_at_rest(org_a, receiver,
                                                               fast_retries):
    url = f"{receiver.url}/T0/B0/secret-path"
    created = alert_channel_create(organization=org_a, name="ops", kind="webhook", target=url)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM alerts_alertchannel WHERE id = %s", [created.channel.pk])
        row = " ".join(str(value) for value in cursor.fetchone())
    assert created.secret and created.secret not in row
    assert "secret-path" not in row

    deliver.delay(make_event(created.channel).pk)
    got = receiver.received[0]
    assert got.path == "/T0/B0/secret-path"
    assert documented_verifier()(got.body, got.headers[SIGNATURE_HEADER], created.secret)


def test_it_never_sends_an_organizations_alert_to_another(org_a, org_b, fast_retries):
    a_receiver, b_receiver = HttpReceiver().start(), HttpReceiver().start()
    try:
        a_channel = make_channel(org_a, "webhook", a_receiver.url, secret=SECRET)
        b_channel = make_channel(org_b, "webhook", b_receiver.url, secret="whsec_b")
        event = make_event(a_channel)
        # A row that names B's channel for A's alert, however it came to be.
        crossed = make_event(b_channel, org=org_a, transition="resolved")

        deliver.delay(event.pk)
        deliver.delay(crossed.pk)

        assert len(a_receiver.received) == 1 and b_receiver.received == []
        assert json.loads(a_receiver.received[0].body)["organization"]["slug"] == org_a.slug
        assert status_of(crossed).status == "failed"
        assert b_channel.events.filter(status="delivered").count() == 0
    finally:
        a_receiver.stop()
        b_receiver.stop()


def test_it_takes_over_a_claim_that_ran_out(org_a, receiver, fast_retries):
    channel = make_channel(org_a, "slack", receiver.url)
    held = make_event(channel, claimed_until=timezone.now() + timedelta(seconds=60),
                      attempts=1)
    dead = make_event(channel, transition="resolved", attempts=1,
                      claimed_until=timezone.now() - timedelta(seconds=1))

    assert delivery.alert_event_deliver(event_id=held.pk).attempted is False
    assert delivery.alert_events_due() == [dead.pk]
    assert deliver_due.apply().get() == 1

    assert (status_of(dead).status, dead.attempts) == ("delivered", 2)
    assert status_of(held).status == "pending" and len(receiver.received) == 1
    assert delivery.alert_events_due() == []


def test_it_delivers_email_through_smtp(org_a, settings, fast_retries):
    smtp = SmtpReceiver().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    try:
        event = make_event(make_channel(org_a, "email", "ops@example.com"),
                           transition="resolved")
        deliver.delay(event.pk)
    finally:
        smtp.stop()

    [message] = smtp.messages
    assert message["Subject"] == "[Cognitude] Resolved: Spend over $10 (Org A)"
    assert {part.get_content_type() for part in message.iter_parts()} == {
        "text/plain", "text/html"}
    assert (status_of(event).status, event.response) == ("delivered", "Sent to ops@example.com")


def test_it_sends_a_test_notification_and_keeps_it_in_the_history(org_a, receiver,
                                                                  fast_retries):
    channel = make_channel(org_a, "slack", receiver.url)

    event = delivery.alert_test_send(channel=channel)

    assert (event.transition, event.status, event.attempts) == ("test", "delivered", 1)
    assert event.organization_id == org_a.pk and event.channel_id == channel.pk
    message = json.loads(receiver.received[0].body)
    assert message["blocks"][0]["text"]["text"] == "Test notification"
    assert "this channel works" in message["text"]


def test_it_reports_a_failed_test_notification_without_retrying(org_a, receiver,
                                                                fast_retries):
    receiver.default = (503, "down for maintenance")
    event = delivery.alert_test_send(channel=make_channel(org_a, "slack", receiver.url))

    assert (event.status, event.attempts) == ("failed", 1)
    assert event.response == "HTTP 503: down for maintenance"
    assert len(receiver.received) == 1


@pytest.mark.xdist_group("broker")  # RabbitMQ must stay up (the broker tests stop it)
@pytest.mark.django_db(transaction=True)
# This process runs tasks inline; send_task is how it reaches the worker instead.
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_it_retries_through_the_broker_and_a_duplicate_message_delivers_once():
    from cognitude.celery import app
    from tests.workers import start_worker, vhost_create

    org = organization_create(name="Org A")
    down = HttpReceiver()
    event = make_event(make_channel(org, "webhook", down.url, secret=SECRET))
    vhost = vhost_create()
    worker = start_worker(vhost.url, {"COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "true",
                                      "COGNITUDE_ALERT_DELIVERY_BACKOFF_SECONDS": "0.2",
                                      "COGNITUDE_ALERT_DELIVERY_MAX_SECONDS": "10"})
    try:
        with app.connection_for_write(vhost.url) as connection:
            for _ in range(2):  # the second is a redelivery of the first
                app.send_task("alerts.deliver", args=[event.pk], connection=connection)
        wait_until(lambda: status_of(event).status == "retrying", timeout=10,
                   what="a failed attempt")
        down.start_in(0.5)
        wait_until(lambda: status_of(event).status == "delivered", timeout=10,
                   what="the delivery")
        time.sleep(0.3)  # a stray second send would land by now
    finally:
        worker.kill()
        vhost.delete()
        down.stop()

    assert len(down.received) == 1
    assert event.attempts >= 2
    assert any("retry" in line.lower() for line in worker.log)

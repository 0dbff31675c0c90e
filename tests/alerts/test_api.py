"""/api/alerts: rules, channels and history through the caller's organization only;
targets and secrets write-only; errors in OpenAI's shape."""

from decimal import Decimal

import pytest
from django.utils import timezone

from alerts.evaluation import alerts_evaluate
from alerts.models import AlertChannel, AlertEvent, AlertRule
from organizations.models import AuditEntry
from tests.alerts.helpers import add_records, add_rule, add_webhook
from tests.alerts.receivers import HttpReceiver
from tests.organizations.apiclients import (
    admin_key_client,
    assert_error,
    key_client,
    session_for,
)

pytestmark = pytest.mark.django_db


def post(client, url, **body):
    return client.post(url, body, content_type="application/json")


def test_it_creates_a_channel_and_a_rule_and_shows_the_history(world):
    client = session_for(world.alice)
    made = post(client, "/api/alerts/channels", name="ops", kind="webhook",
                target="http://127.0.0.1:9/hook")
    assert made.status_code == 201, made.content
    channel = made.json()
    assert channel["signing_secret"].startswith("whsec_")
    assert channel["target_hint"] == "127.0.0.1" and "target" not in channel
    assert made["Cache-Control"] == "no-store"
    listed = client.get("/api/alerts/channels").json()
    assert [c["name"] for c in listed] == ["ops"] and "signing_secret" not in listed[0]

    rule = post(client, "/api/alerts/rules", name="Spend", metric="spend_usd",
                threshold="1.5", window_seconds=3600, channels=[channel["id"]])
    assert rule.status_code == 201, rule.content
    body = rule.json()
    assert (body["state"], body["threshold"], body["channels"]) == ("ok", "1.500000",
                                                                   [channel["id"]])
    add_records(world.a.org, timezone.now(), 4,
                cost="0.5")
    alerts_evaluate(org_ids=[world.a.org.pk])
    events = client.get(f"/api/alerts/events?rule={body['id']}&transition=firing").json()
    assert [(e["rule_name"], e["value"], e["threshold"], e["channel_name"]) for e in events] \
        == [("Spend", "2.000000", "1.500000", "ops")]
    assert {a.action for a in AuditEntry.objects.filter(organization=world.a.org)} >= {
        "alert_channel.create", "alert_rule.create"}


def test_it_refuses_bad_input_in_openai_shape(world):
    client = session_for(world.alice)
    assert_error(post(client, "/api/alerts/rules", name="x", metric="nope", threshold="1"),
                 400, "must be one of", param="metric")
    assert_error(post(client, "/api/alerts/rules", name="x", metric="spend_usd",
                      threshold="1", window_seconds=5), 400, param="window_seconds")
    assert_error(post(client, "/api/alerts/rules", name="x", metric="spend_usd",
                      threshold="1", channels=[999999]), 400, "No such channel",
                 param="channels[0]")
    assert_error(post(client, "/api/alerts/channels", name="x", kind="email",
                      target="not an address"), 400)


def test_it_lets_a_member_read_but_not_write(world):
    client = session_for(world.bob)
    assert client.get("/api/alerts/rules").status_code == 200
    assert_error(post(client, "/api/alerts/rules", name="x", metric="spend_usd",
                      threshold="1"), 403)
    assert_error(key_client(world.a.raw_key).get("/api/alerts/rules"), 403,
                 "proxy scope")


def test_it_checks_ownership(world, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    hook = add_webhook(world.a.org, "http://127.0.0.1:9/hook")
    rule = add_rule(world.a.org, metric="spend_usd", threshold="0", channels=[hook])
    add_records(world.a.org, timezone.now(), 1,
                cost="1")
    alerts_evaluate(org_ids=[world.a.org.pk])
    assert AlertEvent.objects.filter(organization=world.a.org).exists()
    for client in (session_for(world.charlie), admin_key_client(world.b.org)):
        assert_error(client.get(f"/api/alerts/rules/{rule.pk}"), 404)
        assert_error(client.put(f"/api/alerts/rules/{rule.pk}", {}, "application/json"), 404)
        assert_error(client.delete(f"/api/alerts/rules/{rule.pk}"), 404)
        assert_error(client.get(f"/api/alerts/channels/{hook.pk}"), 404)
        assert_error(client.patch(f"/api/alerts/channels/{hook.pk}", {"name": "x"},
                                  "application/json"), 404)
        assert_error(client.delete(f"/api/alerts/channels/{hook.pk}"), 404)
        assert_error(client.post(f"/api/alerts/channels/{hook.pk}/test"), 404)
        names = {r["name"] for r in client.get("/api/alerts/rules").json()}
        assert rule.name not in names
        assert client.get("/api/alerts/channels").json() == []
        assert client.get("/api/alerts/events").json() == []
        assert client.get(f"/api/alerts/events?rule={rule.pk}").json() == []
        # Org A's channel cannot be named in org B's rule.
        assert_error(post(client, "/api/alerts/rules", name="steal", metric="spend_usd",
                          threshold="1", channels=[hook.pk]), 400, param="channels[0]")
    assert AlertRule.objects.filter(pk=rule.pk).exists()
    assert AlertChannel.objects.filter(pk=hook.pk, name="hook").exists()
    assert Decimal(AlertRule.objects.get(pk=rule.pk).threshold) == 0


def test_it_sends_a_test_notification_and_keeps_it_in_the_history(world):
    receiver = HttpReceiver().start()
    try:
        hook = add_webhook(world.a.org, f"{receiver.url}/hook")
        answer = post(session_for(world.alice), f"/api/alerts/channels/{hook.pk}/test")
        assert answer.status_code == 200, answer.content
        assert (answer.json()["transition"], answer.json()["status"]) == ("test", "delivered")
        assert len(receiver.accepted) == 1
        assert_error(post(session_for(world.bob), f"/api/alerts/channels/{hook.pk}/test"),
                     403)
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_it_is_in_the_schema(client):
    schema = client.get("/api/schema/?format=json").json()
    assert {"/api/alerts/rules", "/api/alerts/rules/{rule_id}", "/api/alerts/channels",
            "/api/alerts/channels/{channel_id}", "/api/alerts/channels/{channel_id}/test",
            "/api/alerts/events"} <= set(schema["paths"])

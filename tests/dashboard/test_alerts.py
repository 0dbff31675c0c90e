"""The Alerts page: every member sees the rules, channels and history (with the value
that crossed); owners and admins change them; nobody else sees any of it."""

import pytest
from django.utils import timezone

from alerts.evaluation import alerts_evaluate
from alerts.models import AlertChannel, AlertRule
from tests.alerts.helpers import add_records, add_rule, add_webhook

pytestmark = pytest.mark.django_db


def url(org, tail: str = "") -> str:
    return f"/orgs/{org.slug}/alerts/{tail}"


def rule_form(**fields) -> dict:
    return {"name": "Spend", "metric": "spend_usd", "comparison": "gt", "threshold": "2",
            "window": "1h", "cooldown": "30m", "model": "", "provider": "", "api_key": "",
            "enabled": "on", **fields}


def test_it_shows_rules_channels_and_the_value_that_crossed_to_a_member(client, world):
    hook = add_webhook(world.a.org, "http://127.0.0.1:9/hook", name="ops-hook")
    rule = add_rule(world.a.org, name="Spend over 1", metric="spend_usd", threshold="1",
                    window_seconds=3600, channels=[hook])
    add_records(world.a.org, timezone.now(), 3, cost="0.75")
    alerts_evaluate(org_ids=[world.a.org.pk])
    client.force_login(world.bob)
    html = client.get(url(world.a.org)).content.decode()
    assert 'aria-current="page">Alerts<' in html
    assert "Spend over 1" in html and "Budget 80% used" in html  # the defaults too
    assert "ops-hook" in html and "127.0.0.1" in html and "/hook" not in html
    assert f'data-rule="{rule.pk}"' in html and "firing" in html
    assert "2.25" in html  # the value that crossed, in the history
    assert 'id="rule-form"' not in html  # a member reads

    filtered = client.get(url(world.a.org) + "?transition=resolved").content.decode()
    assert "2.25" not in filtered.split('id="events-table"')[1]


def test_it_lets_an_owner_add_change_and_remove_rules_and_channels(client, world):
    client.force_login(world.alice)
    added = client.post(url(world.a.org, "channels/"), {
        "name": "ops", "kind": "webhook", "target": "http://127.0.0.1:9/hook"}, follow=True)
    assert "signing secret, shown only now: whsec_" in added.content.decode()
    channel = AlertChannel.objects.get(organization=world.a.org, name="ops")
    response = client.post(url(world.a.org, "rules/"), rule_form(channels=[channel.pk]))
    assert response.status_code == 302
    rule = AlertRule.objects.get(organization=world.a.org, name="Spend")
    assert (rule.window_seconds, rule.cooldown_seconds, list(rule.channels.all())) == (
        3600, 1800, [channel])
    bad = client.post(url(world.a.org, "rules/"), rule_form(name="Other", window="soon"))
    assert bad.status_code == 400 and "is not a duration" in bad.content.decode()

    edit = client.get(url(world.a.org, f"rules/{rule.pk}/")).content.decode()
    assert 'value="1h"' in edit and 'value="30m"' in edit
    assert client.post(url(world.a.org, f"rules/{rule.pk}/"),
                       rule_form(threshold="5")).status_code == 302
    rule.refresh_from_db()
    assert rule.threshold == 5 and not rule.channels.exists()

    assert client.post(url(world.a.org, f"rules/{rule.pk}/delete/")).status_code == 302
    assert client.post(url(world.a.org, f"channels/{channel.pk}/delete/")).status_code == 302
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    assert not AlertChannel.objects.filter(pk=channel.pk).exists()


def test_it_refuses_changes_by_a_member(client, world):
    rule = add_rule(world.a.org, metric="spend_usd", threshold="1")
    client.force_login(world.bob)
    assert client.post(url(world.a.org, "rules/"), rule_form()).status_code == 403
    assert client.post(url(world.a.org, f"rules/{rule.pk}/"), rule_form()).status_code == 403
    assert client.post(url(world.a.org, f"rules/{rule.pk}/delete/")).status_code == 403
    assert AlertRule.objects.filter(pk=rule.pk, name=rule.name).exists()


def test_it_checks_ownership(client, world):
    hook = add_webhook(world.a.org, "http://127.0.0.1:9/hook", name="org-a-pager")
    rule = add_rule(world.a.org, metric="spend_usd", threshold="1")
    client.force_login(world.charlie)
    assert client.get(url(world.a.org)).status_code == 404
    assert client.get(url(world.a.org, f"rules/{rule.pk}/")).status_code == 404
    for tail in (f"rules/{rule.pk}/", f"rules/{rule.pk}/delete/",
                 f"channels/{hook.pk}/delete/", f"channels/{hook.pk}/test/"):
        # Through charlie's own organization, org A's ids are unknown.
        assert client.post(url(world.b.org, tail), rule_form()).status_code == 404
    html = client.get(url(world.b.org)).content.decode()
    assert rule.name not in html and "org-a-pager" not in html
    assert AlertRule.objects.filter(pk=rule.pk).exists()
    assert AlertChannel.objects.filter(pk=hook.pk).exists()

"""add_alert_rule and evaluate_alerts as an operator runs them."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts.models import AlertChannel, AlertEvent, AlertRule
from alerts.selectors import alert_channel_target
from organizations.models import AuditEntry
from organizations.services import organization_create
from tests.alerts.helpers import add_records

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_adds_a_rule_with_its_channels_and_evaluates_it(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    org = organization_create(name="Acme")
    out = run("add_alert_rule", "--org", "acme", "--metric", "spend_usd", "--threshold",
              "1.5", "--window", "1h", "--cooldown", "2h", "--channel",
              "webhook:http://127.0.0.1:9/hook", "--channel", "email:ops@example.com")
    assert "signing secret whsec_" in out
    rule = AlertRule.objects.get(organization=org, metric="spend_usd")
    assert out.strip().endswith(f"rule {rule.pk}: {rule.name}")
    assert (rule.threshold, rule.window_seconds, rule.cooldown_seconds, rule.comparison) == (
        Decimal("1.5"), 3600, 7200, "gt")
    kinds = {c.kind: alert_channel_target(channel=c) for c in rule.channels.all()}
    assert kinds == {"webhook": "http://127.0.0.1:9/hook", "email": "ops@example.com"}
    assert AuditEntry.objects.filter(organization=org, action="alert_rule.create",
                                     actor_label="manage.py add_alert_rule").exists()

    # The same channel again is reused, not duplicated.
    run("add_alert_rule", "--org", "acme", "--metric", "error_rate_pct", "--threshold", "5",
        "--channel", "email:ops@example.com")
    assert AlertChannel.objects.filter(organization=org, kind="email").count() == 1

    add_records(org, timezone.now() - timedelta(minutes=5), 2, cost="1")
    out = run("evaluate_alerts")
    assert f"rule {rule.pk}: firing" in out and "transitions" in out.splitlines()[-1]
    assert AlertEvent.objects.filter(rule=rule, transition="firing").count() == 2


@pytest.mark.parametrize("args, words", [
    (["--org", "nope", "--metric", "spend_usd", "--threshold", "1"], "No organization"),
    (["--org", "acme", "--metric", "spend_usd", "--threshold", "x"], "must be a number"),
    (["--org", "acme", "--metric", "spend_usd", "--threshold", "1", "--window", "soon"],
     "not a duration"),
    (["--org", "acme", "--metric", "spend_usd", "--threshold", "1", "--channel", "sms:1"],
     "KIND:TARGET"),
    (["--org", "acme", "--metric", "spend_usd", "--threshold", "1", "--key", "cog_nope"],
     "No API key"),
])
def test_it_says_what_is_wrong(args, words):
    organization_create(name="Acme")
    with pytest.raises(CommandError, match=words):
        run("add_alert_rule", *args)
    assert not AlertRule.objects.filter(is_default=False).exists()

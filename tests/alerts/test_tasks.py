"""A budget rule fires from the request path: the limits' settlement reports the budget
passing a percent, the pipeline hands it to alerts.tasks.budget_usage_evaluate, and
the rule fires within seconds, with no evaluation tick."""

from decimal import Decimal

import pytest

from alerts.models import AlertEvent, AlertRule
from tests.alerts.helpers import add_webhook
from tests.alerts.receivers import HttpReceiver
from tests.live import start_gateway
from tests.ratelimit.conftest import LIMITS_ENV
from tests.ratelimit.helpers import chat, post, set_budget, set_price
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def gateway(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        started = start_gateway(LIMITS_ENV)
    yield started
    started.stop()


def test_it_fires_the_budget_80_rule_from_the_request_path(gateway, live_world):
    receiver = HttpReceiver().start()
    try:
        a = live_world.a
        set_price("gpt-4o-mini", input_per_million="2", output_per_million="2")
        set_budget(a, "0.0045")  # about $0.002 a request: the second passes 80 %
        rule = AlertRule.objects.get(organization=a.org, name="Budget 80% used")
        rule.channels.set([add_webhook(a.org, f"{receiver.url}/hook")])
        for i in range(2):
            assert post(gateway.url, a.raw_key,
                        chat(f"budget {i} " + "x" * 4000, max_tokens=16)).status_code == 200
        [event] = wait_until(lambda: list(AlertEvent.objects.filter(rule=rule)), timeout=5,
                             what="the firing")
        assert event.transition == "firing"
        assert Decimal(80) <= event.value < Decimal(100)
        [delivered] = wait_until(lambda: receiver.accepted, timeout=5, what="the webhook")
        assert b'"budget_used_pct"' in delivered.body
        # The 100 % rule has not fired; org B's rules saw nothing.
        assert not AlertEvent.objects.filter(rule__name="Budget 100% used").exists()
        assert not AlertEvent.objects.filter(organization=live_world.b.org).exists()
    finally:
        receiver.stop()

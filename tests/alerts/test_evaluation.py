"""The lifecycle of a rule as its channels see it: fires once, re-notifies after its
cool-down, resolves once; several processes evaluating at once still make one event;
usage metrics come from the rollup, not from scanning the records."""

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.evaluation import alerts_evaluate
from alerts.models import AlertEvent, AlertRule
from organizations.services import organization_create
from tests.alerts.helpers import add_records, add_rule, add_webhook
from tests.alerts.receivers import HttpReceiver
from tests.live import PROJECT_DIR
from tests.live import test_database_url as database_url
from tests.workers import wait_until


@pytest.fixture
def org(db):
    return organization_create(name="Acme")


def transitions(rule: AlertRule) -> list[tuple[str, int]]:
    return list(AlertEvent.objects.filter(rule=rule).order_by("seq")
                .values_list("transition", "seq"))


def test_it_creates_the_default_rules_with_each_organization(org):
    rules = {(r.name, r.metric, r.comparison, r.threshold, r.window_seconds, r.is_default)
             for r in AlertRule.objects.filter(organization=org)}
    assert rules == {
        ("Budget 80% used", "budget_used_pct", "gte", Decimal(80), 300, True),
        ("Budget 100% used", "budget_used_pct", "gte", Decimal(100), 300, True),
        ("Error rate over 10%", "error_rate_pct", "gt", Decimal(10), 300, True),
    }


def test_it_fires_once_renotifies_after_the_cooldown_and_resolves_once(org):
    now = timezone.now()
    rule = add_rule(org, metric="spend_usd", threshold="1", window_seconds=7200,
                    cooldown_seconds=600)
    add_records(org, now - timedelta(minutes=30), 3, cost="0.5")
    alerts_evaluate(now=now, org_ids=[org.pk])
    alerts_evaluate(now=now + timedelta(minutes=5), org_ids=[org.pk])  # within cool-down
    assert transitions(rule) == [("firing", 1)]
    [event] = AlertEvent.objects.filter(rule=rule)
    assert (event.value, event.threshold, event.status) == (Decimal("1.5"), Decimal(1),
                                                            "delivered")  # no channel

    alerts_evaluate(now=now + timedelta(minutes=11), org_ids=[org.pk])
    alerts_evaluate(now=now + timedelta(minutes=12), org_ids=[org.pk])
    assert transitions(rule) == [("firing", 1), ("renotify", 2)]

    # Two hours on, the records are out of the window.
    alerts_evaluate(now=now + timedelta(minutes=95), org_ids=[org.pk])
    alerts_evaluate(now=now + timedelta(minutes=96), org_ids=[org.pk])
    assert transitions(rule) == [("firing", 1), ("renotify", 2), ("resolved", 3)]
    rule.refresh_from_db()
    assert (rule.state, rule.last_value) == ("ok", Decimal(0))


def test_it_does_not_fire_on_a_rate_without_requests(org):
    rule = add_rule(org, metric="cache_hit_rate_pct", comparison="lt", threshold="50")
    alerts_evaluate(org_ids=[org.pk])
    assert transitions(rule) == []


def test_it_reads_error_rate_and_latency_from_the_rollup_not_the_records(org):
    now = timezone.now().replace(minute=30)
    # 24 whole hours of traffic, 2,400 records; the window's partial hours hold 200.
    for hours in range(1, 25):
        add_records(org, now - timedelta(hours=hours), 80, latency_ms=100)
        add_records(org, now - timedelta(hours=hours), 20, status=500, latency_ms=900)
    errors = add_rule(org, metric="error_rate_pct", threshold="15", window_seconds=86400)
    slow = add_rule(org, metric="p95_latency_ms", threshold="500", window_seconds=86400)
    AlertRule.objects.filter(organization=org, is_default=True).update(enabled=False)

    def records_read() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                           "FROM pg_stat_xact_user_tables WHERE relname = 'analytics_requestlog'")
            return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        # The planner's view of a big table: on 2,400 rows a whole scan is cheaper.
        cursor.execute("ANALYZE analytics_requestlog")
    before = records_read()
    with CaptureQueriesContext(connection) as queries:
        result = alerts_evaluate(now=now, org_ids=[org.pk])
    read = records_read() - before

    assert sorted(result.transitions) == sorted([(errors.pk, "firing"), (slow.pk, "firing")])
    errors.refresh_from_db()
    slow.refresh_from_db()
    assert errors.last_value == Decimal(20)
    assert Decimal(850) < slow.last_value < Decimal(1000)  # the histogram's estimate of 900
    usage = [q["sql"] for q in queries if "analytics_hourlyusage" in q["sql"]]
    assert len(usage) == 1  # both rules share the one query of their scope
    assert "analytics_hourlylatency" in usage[0]
    # The records of the first and last partial hours only (the current hour is empty).
    assert read <= 200, read


def evaluate_in_a_process() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "evaluate_alerts"], cwd=PROJECT_DIR,
        env={**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": "",
             "REDIS_URL": "", "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "true"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.django_db(transaction=True)
def test_it_sends_one_alert_when_two_processes_evaluate_at_once(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    receiver = HttpReceiver().start()
    try:
        org = organization_create(name="Racing")
        hook = add_webhook(org, f"{receiver.url}/hook")
        rule = add_rule(org, metric="spend_usd", threshold="1", window_seconds=3600,
                        channels=[hook])
        add_records(org, timezone.now() - timedelta(minutes=1), 4, cost="0.5")
        # Hold the rule's row so that both processes reach their conditional UPDATE of
        # it and wait there: then both try the same transition at the same moment.
        with psycopg.connect(database_url()) as holder:
            holder.execute("SELECT 1 FROM alerts_alertrule WHERE id = %s FOR UPDATE",
                           [rule.pk])
            racers = [evaluate_in_a_process(), evaluate_in_a_process()]
            with psycopg.connect(database_url(), autocommit=True) as watcher:
                wait_until(lambda: watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                    " AND query LIKE 'UPDATE \"alerts_alertrule\"%'").fetchone()[0] == 2,
                    timeout=20, what="both processes waiting on the rule")
            holder.rollback()
        outputs = [racer.communicate(timeout=20)[0] for racer in racers]
        assert [racer.returncode for racer in racers] == [0, 0], outputs
        assert sorted(f"rule {rule.pk}: firing" in out for out in outputs) == [False, True]
        [event] = AlertEvent.objects.filter(rule=rule)
        assert (event.transition, event.seq, event.channel_id) == ("firing", 1, hook.pk)
        wait_until(lambda: receiver.accepted, timeout=10, what="the delivery")
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_it_counts_open_breakers_of_the_organizations_providers(world, settings,
                                                               clean_redis):
    import time

    from organizations.models import Provider
    from routing.breakers import STATE_KEY
    from tests.conftest import TEST_REDIS_URL

    settings.REDIS_URL = TEST_REDIS_URL
    [provider] = Provider.objects.filter(organization=world.a.org)
    [other] = Provider.objects.filter(organization=world.b.org)
    rule = add_rule(world.a.org, metric="provider_failing", comparison="gte", threshold="1",
                    provider=provider.name)
    theirs = add_rule(world.b.org, metric="provider_failing", comparison="gte", threshold="1")
    clean_redis.hset(STATE_KEY, mapping={
        f"{provider.pk}:gpt-4o": f"5 {time.time() + 60:.3f} 0.000",
        f"{provider.pk}:gpt-4o-mini": f"5 {time.time() + 60:.3f} 0.000",
        f"{other.pk}:gpt-4o": "2 0.000 0.000",  # failing, not open
    })
    alerts_evaluate(org_ids=[world.a.org.pk, world.b.org.pk])
    rule.refresh_from_db()
    theirs.refresh_from_db()
    assert (rule.state, rule.last_value) == ("firing", Decimal(2))
    assert (theirs.state, theirs.last_value) == ("ok", Decimal(0))
    clean_redis.delete(STATE_KEY)
    alerts_evaluate(org_ids=[world.a.org.pk])
    assert transitions(rule) == [("firing", 1), ("resolved", 2)]


def test_it_sets_a_disabled_rule_back_to_ok(org):
    from alerts.services import RuleSpec, alert_rule_update

    rule = add_rule(org, name="spend", metric="spend_usd", threshold="0", window_seconds=3600)
    add_records(org, timezone.now(), 1, cost="1")
    alerts_evaluate(org_ids=[org.pk])
    rule.refresh_from_db()
    assert rule.state == "firing"
    alert_rule_update(rule=rule, spec=RuleSpec(name="spend", metric="spend_usd", threshold="0",
                                               window_seconds=3600, enabled=False))
    rule.refresh_from_db()
    assert (rule.state, rule.seq) == ("ok", 2)
    alerts_evaluate(org_ids=[org.pk])
    assert transitions(rule) == [("firing", 1)]

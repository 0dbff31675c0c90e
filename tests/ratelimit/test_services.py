"""Limits, budgets and policies as services: every change audited; and the reads the
request path and the rebuild rely on."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from analytics.models import RequestLog
from organizations.services import api_key_create
from ratelimit.models import Budget, BudgetCrossing, Limit, LimitChange
from ratelimit.selectors import org_limits_get, period_spend
from ratelimit.services import (
    Actor,
    budget_crossing_record,
    budget_delete,
    budget_set,
    limit_policy_set,
    limit_set,
)
from ratelimit.snapshot import BudgetSpec

pytestmark = pytest.mark.django_db

EMPTY = {"requests_per_minute": None, "tokens_per_minute": None, "requests_per_day": None,
         "concurrent_requests": None}


def test_it_sets_limits_a_few_at_a_time_and_audits_each_change(world):
    actor = Actor.of_user(world.alice)
    limit_set(organization=world.a.org, values={"requests_per_minute": 60}, actor=actor)
    limit = limit_set(organization=world.a.org, values={"tokens_per_minute": 1000},
                      actor=actor)
    assert (limit.requests_per_minute, limit.tokens_per_minute) == (60, 1000)

    first, second = LimitChange.objects.order_by("pk")
    assert (first.old, first.new) == (None, {**EMPTY, "requests_per_minute": 60})
    assert second.old == {**EMPTY, "requests_per_minute": 60}
    assert second.new == {**EMPTY, "requests_per_minute": 60, "tokens_per_minute": 1000}
    assert (second.actor, second.actor_label, second.target, second.subject) == (
        world.alice, "alice", "limit", "organization")


def test_it_removes_a_limit_at_zero_and_the_row_with_the_last(world):
    actor = Actor(label="tests")
    limit_set(organization=world.a.org, values={"requests_per_minute": 5,
                                                "requests_per_day": 50}, actor=actor)
    kept = limit_set(organization=world.a.org, values={"requests_per_minute": 0}, actor=actor)
    assert (kept.requests_per_minute, kept.requests_per_day) == (None, 50)
    assert limit_set(organization=world.a.org, values={"requests_per_day": None},
                     actor=actor) is None
    assert not Limit.objects.exists()
    assert LimitChange.objects.order_by("pk").last().new is None


def test_it_does_not_audit_a_change_that_changes_nothing(world):
    actor = Actor(label="tests")
    limit_set(organization=world.a.org, values={"requests_per_minute": 5}, actor=actor)
    limit_set(organization=world.a.org, values={"requests_per_minute": 5}, actor=actor)
    assert LimitChange.objects.count() == 1


def test_it_keeps_the_scopes_apart(world):
    actor = Actor(label="tests")
    key = api_key_create(organization=world.a.org).api_key
    limit_set(organization=world.a.org, values={"requests_per_minute": 1}, actor=actor)
    limit_set(organization=world.a.org, model="gpt-4o", values={"requests_per_minute": 2},
              actor=actor)
    limit_set(organization=world.a.org, api_key=key, values={"requests_per_minute": 3},
              actor=actor)
    limit_set(organization=world.a.org, api_key=key, model="gpt-4o",
              values={"requests_per_minute": 4}, actor=actor)
    assert sorted(Limit.objects.values_list("requests_per_minute", flat=True)) == [1, 2, 3, 4]
    assert LimitChange.objects.order_by("pk").last().subject == f"key {key.prefix} / model gpt-4o"


def test_it_refuses_another_orgs_key_and_bad_numbers(world):
    actor = Actor(label="tests")
    with pytest.raises(ValidationError, match="another organization"):
        limit_set(organization=world.a.org, api_key=api_key_create(
            organization=world.b.org).api_key, values={"requests_per_minute": 1}, actor=actor)
    with pytest.raises(ValidationError, match="0 or more"):
        limit_set(organization=world.a.org, values={"requests_per_minute": -1}, actor=actor)
    with pytest.raises(ValidationError, match="Unknown limit"):
        limit_set(organization=world.a.org, values={"requests_per_hour": 1}, actor=actor)
    with pytest.raises(ValidationError, match="period"):
        budget_set(organization=world.a.org, period="week", limit_usd=Decimal(1), actor=actor)
    with pytest.raises(ValidationError, match="0 or more"):
        budget_set(organization=world.a.org, period="day", limit_usd=Decimal(-1), actor=actor)
    assert not LimitChange.objects.exists()


def test_it_sets_changes_and_deletes_budgets_audited(world):
    actor = Actor(label="manage.py set_budget")
    budget_set(organization=world.a.org, period="day", limit_usd=Decimal("5"), actor=actor)
    budget = budget_set(organization=world.a.org, period="day", limit_usd=Decimal("7.5"),
                        soft=True, actor=actor)
    budget_delete(budget=budget, actor=actor)
    assert not Budget.objects.exists()
    assert [(c.old, c.new) for c in LimitChange.objects.order_by("pk")] == [
        (None, {"period": "day", "limit_usd": "5.0000", "soft": False}),
        ({"period": "day", "limit_usd": "5.0000", "soft": False},
         {"period": "day", "limit_usd": "7.5000", "soft": True}),
        ({"period": "day", "limit_usd": "7.5000", "soft": True}, None),
    ]


def test_it_audits_the_policy(world):
    limit_policy_set(organization=world.a.org, fail_closed=True, actor=Actor(label="x"))
    change = LimitChange.objects.get()
    assert (change.target, change.old, change.new) == (
        "policy", {"fail_closed": False}, {"fail_closed": True})


def test_it_records_a_crossing_once_per_budget_and_period(world):
    budget = budget_set(organization=world.a.org, period="month", limit_usd=Decimal("1"),
                        soft=True, actor=Actor(label="x"))
    spec = BudgetSpec(id=budget.pk, key_id=None, key_prefix="", period="month",
                      limit_usd=budget.limit_usd, soft=True)
    assert budget_crossing_record(org_id=world.a.org.pk, budget=spec,
                                  period_start=date(2030, 1, 1), spend_usd=Decimal("1.2"))
    assert not budget_crossing_record(org_id=world.a.org.pk, budget=spec,
                                      period_start=date(2030, 1, 1), spend_usd=Decimal("1.5"))
    assert budget_crossing_record(org_id=world.a.org.pk, budget=spec,
                                  period_start=date(2030, 2, 1), spend_usd=Decimal("1.1"))
    # Another organization cannot record against this budget.
    assert not budget_crossing_record(org_id=world.b.org.pk, budget=spec,
                                      period_start=date(2030, 3, 1), spend_usd=Decimal(2))
    assert BudgetCrossing.objects.filter(budget=budget).count() == 2


def test_it_snapshots_an_orgs_limits_budgets_and_time_zone(world):
    world.a.org.time_zone = "Asia/Tokyo"
    world.a.org.save(update_fields=["time_zone"])
    actor = Actor(label="x")
    limit_set(organization=world.a.org, model="gpt-4o", values={"tokens_per_minute": 9},
              actor=actor)
    budget_set(organization=world.a.org, period="month", limit_usd=Decimal(3), actor=actor)
    limit_set(organization=world.b.org, values={"requests_per_minute": 1}, actor=actor)
    limit_policy_set(organization=world.a.org, fail_closed=True, actor=actor)

    snapshot = org_limits_get(org_id=world.a.org.pk)
    assert snapshot.time_zone == ZoneInfo("Asia/Tokyo") and snapshot.fail_closed
    assert list(snapshot.limits) == [(None, "gpt-4o")]
    assert snapshot.limits[(None, "gpt-4o")].tokens_per_minute == 9
    [budget] = snapshot.budgets
    assert (budget.period, budget.limit_usd, budget.soft) == ("month", Decimal(3), False)
    assert not org_limits_get(org_id=world.b.org.pk).fail_closed


def _log(org, key=None, *, cost, at, request_id):
    RequestLog.objects.create(request_id=request_id, organization=org, api_key=key,
                              endpoint="chat/completions", cache_outcome="miss", status=200,
                              cost=cost, latency_ms=1, created_at=at)


def test_it_sums_a_periods_spend_from_the_records(world):
    key = world.a.org.api_keys.first()
    start = datetime(2030, 5, 1, tzinfo=UTC)
    _log(world.a.org, key, cost=Decimal("0.5"), at=start, request_id="r1")
    _log(world.a.org, None, cost=Decimal("0.25"), at=start + timedelta(hours=1),
         request_id="r2")
    _log(world.a.org, key, cost=None, at=start + timedelta(hours=2), request_id="r3")
    _log(world.a.org, key, cost=Decimal("9"), at=start - timedelta(seconds=1),
         request_id="before")
    _log(world.b.org, None, cost=Decimal("9"), at=start, request_id="other org")
    assert period_spend(org_id=world.a.org.pk, key_id=None, since=start) == Decimal("0.75")
    assert period_spend(org_id=world.a.org.pk, key_id=key.pk, since=start) == Decimal("0.5")

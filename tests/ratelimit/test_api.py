"""/api/limits and /api/budgets: who may read and change them, what they say, and the
audit of every change."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.models import RequestLog
from organizations.services import api_key_create
from ratelimit.models import Budget, Limit, LimitChange
from ratelimit.services import Actor, budget_set, limit_set
from tests.organizations.apiclients import (
    admin_key_client,
    assert_error,
    key_client,
    session_for,
)

pytestmark = pytest.mark.django_db


def post(client, url, **body):
    return client.post(url, body, content_type="application/json")


def test_it_sets_reads_and_removes_limits(world):
    client = session_for(world.alice)
    key = api_key_create(organization=world.a.org, name="app").api_key
    created = post(client, "/api/limits", api_key=key.prefix, requests_per_minute=30)
    assert created.status_code == 200, created.content
    body = created.json()
    assert (body["api_key"], body["model"], body["requests_per_minute"]) == (key.prefix, "", 30)
    assert body["in_use"] == {"rpm": 0}

    changed = post(client, "/api/limits", api_key=key.prefix, tokens_per_minute=500)
    assert (changed.json()["requests_per_minute"], changed.json()["tokens_per_minute"]) == (
        30, 500)
    assert [row["id"] for row in client.get("/api/limits").json()] == [body["id"]]

    assert client.delete(f"/api/limits/{body['id']}").status_code == 204
    assert not Limit.objects.exists()
    assert [c.actor_label for c in LimitChange.objects.all()] == ["alice"] * 3


def test_it_answers_204_when_the_last_limit_goes(world):
    client = admin_key_client(world.a.org)
    post(client, "/api/limits", requests_per_day=10)
    assert post(client, "/api/limits", requests_per_day=0).status_code == 204
    assert LimitChange.objects.order_by("pk").last().actor_label.startswith("API key cog_")


def test_it_sets_budgets_and_shows_the_periods_spend(world):
    client = session_for(world.alice)
    made = post(client, "/api/budgets", period="day", limit_usd="2.5")
    assert made.status_code == 200, made.content
    RequestLog.objects.create(request_id="r", organization=world.a.org,
                              endpoint="chat/completions", cache_outcome="miss", status=200,
                              cost=Decimal("0.5"), latency_ms=1, created_at=timezone.now())
    [budget] = client.get("/api/budgets").json()
    assert (budget["period"], budget["limit_usd"], budget["soft"]) == ("day", 2.5, False)
    assert (budget["spent_usd"], budget["used"]) == (0.5, 0.2)
    assert datetime.fromisoformat(budget["period_start"]) <= datetime.now(UTC)
    assert client.delete(f"/api/budgets/{budget['id']}").status_code == 204
    assert not Budget.objects.exists()


def test_it_sets_the_policy(world):
    client = session_for(world.alice)
    assert client.get("/api/limits/policy").json() == {"fail_closed": False}
    response = client.put("/api/limits/policy", {"fail_closed": True},
                          content_type="application/json")
    assert response.json() == {"fail_closed": True}


def test_it_shows_the_audit(world):
    client = session_for(world.alice)
    post(client, "/api/limits", requests_per_minute=5)
    [change] = client.get("/api/limits/changes").json()
    assert (change["target"], change["subject"], change["actor"]) == (
        "limit", "organization", "alice")
    assert change["old"] is None and change["new"]["requests_per_minute"] == 5


def test_it_counts_rejections_by_reason(world):
    now = timezone.now()
    for i, reason in enumerate(["rate_limit_rpm", "rate_limit_rpm", "budget_day", ""]):
        RequestLog.objects.create(request_id=f"r{i}", organization=world.a.org,
                                  endpoint="chat/completions", cache_outcome="none",
                                  status=429 if reason else 200, error_type=reason,
                                  latency_ms=1, created_at=now)
    RequestLog.objects.create(request_id="b", organization=world.b.org,
                              endpoint="chat/completions", cache_outcome="none", status=429,
                              error_type="rate_limit_tpm", latency_ms=1, created_at=now)
    body = session_for(world.alice).get("/api/limits/rejections?period=24h").json()
    assert body["data"] == [
        {"reason": "rate_limit_rpm", "label": "requests per minute", "requests": 2},
        {"reason": "budget_day", "label": "daily budget", "requests": 1},
    ]


def test_it_lets_members_read_and_only_owners_and_admins_write(world):
    limit_set(organization=world.a.org, values={"requests_per_minute": 5},
              actor=Actor(label="x"))
    bob = session_for(world.bob)
    assert bob.get("/api/limits").status_code == 200
    assert_error(post(bob, "/api/limits", requests_per_minute=500), 403, "owner or admin")
    assert_error(post(bob, "/api/budgets", period="day", limit_usd="1"), 403)
    assert Limit.objects.get().requests_per_minute == 5


def test_it_refuses_a_proxy_scoped_key_but_shows_it_the_rejections(world):
    client = key_client(world.a.raw_key)
    assert_error(client.get("/api/limits"), 403, "admin-scoped")
    assert_error(client.get("/api/budgets"), 403, "admin-scoped")
    # Like the analytics API: what the limits refused, for the key's own organization.
    assert client.get("/api/limits/rejections").json()["organization"] == world.a.org.slug
    assert_error(client.get(f"/api/limits/rejections?org={world.b.org.slug}"), 404)


def test_it_checks_ownership(world):
    """charlie (org B) never reads nor changes org A's limits and budgets."""
    limit = limit_set(organization=world.a.org, values={"requests_per_minute": 5},
                      actor=Actor(label="x"))
    budget = budget_set(organization=world.a.org, period="day", limit_usd=Decimal(1),
                        actor=Actor(label="x"))
    charlie = session_for(world.charlie)
    assert_error(charlie.get(f"/api/limits?org={world.a.org.slug}"), 404)
    assert_error(charlie.get(f"/api/limits/{limit.pk}"), 404)
    assert_error(charlie.delete(f"/api/limits/{limit.pk}"), 404)
    assert_error(charlie.delete(f"/api/budgets/{budget.pk}"), 404)
    b_key = admin_key_client(world.b.org)
    assert_error(b_key.get(f"/api/budgets/{budget.pk}"), 404)
    # A key of org A named from org B is no key of org B's.
    a_key = api_key_create(organization=world.a.org).api_key
    assert_error(post(b_key, "/api/limits", api_key=a_key.prefix, requests_per_minute=1), 404)
    assert Limit.objects.count() == 1 and Budget.objects.count() == 1


def test_it_answers_bad_input_in_openais_shape(world):
    client = session_for(world.alice)
    assert_error(post(client, "/api/limits", requests_per_minute=-1), 400,
                 param="requests_per_minute")
    assert_error(post(client, "/api/budgets", period="week", limit_usd="1"), 400,
                 "must be one of day, month", param="period")


def test_it_is_described_in_the_openapi_schema(world):
    from django.test import Client

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert {"/api/limits", "/api/limits/{limit_id}", "/api/limits/policy",
            "/api/limits/changes", "/api/limits/rejections", "/api/budgets",
            "/api/budgets/{budget_id}", "/api/budgets/crossings"} <= set(schema["paths"])
    # Its own component names: none shadows another app's (the schema would be wrong).
    assert {"Limit", "LimitInput", "Budget", "BudgetInput", "LimitRejectionRow",
            "LimitRejections"} <= set(schema["components"]["schemas"])

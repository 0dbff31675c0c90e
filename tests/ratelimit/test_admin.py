"""Limits and budgets in the admin: saved through the services, so audited as the user."""

from decimal import Decimal

import pytest

from organizations.services import api_key_create
from ratelimit.models import Budget, Limit, LimitChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, world):
    world.alice.is_staff = world.alice.is_superuser = True
    world.alice.save()
    client.force_login(world.alice)
    return client


def form(**fields) -> dict:
    return {"model": "", "requests_per_minute": "", "tokens_per_minute": "",
            "requests_per_day": "", "concurrent_requests": "", **fields}


def test_it_adds_changes_and_deletes_a_limit_audited(admin_client, world):
    added = admin_client.post("/admin/ratelimit/limit/add/",
                              form(organization=world.a.org.pk, requests_per_minute="10"))
    assert added.status_code == 302, added.content.decode()[:2000]
    limit = Limit.objects.get()
    changed = admin_client.post(f"/admin/ratelimit/limit/{limit.pk}/change/",
                                form(requests_per_minute="20", tokens_per_minute="900"))
    assert changed.status_code == 302
    limit.refresh_from_db()
    assert (limit.requests_per_minute, limit.tokens_per_minute) == (20, 900)
    admin_client.post(f"/admin/ratelimit/limit/{limit.pk}/delete/", {"post": "yes"})
    assert not Limit.objects.exists()
    assert [(c.actor, c.new is None) for c in LimitChange.objects.order_by("pk")] == [
        (world.alice, False), (world.alice, False), (world.alice, True)]


def test_it_refuses_another_orgs_key_and_an_empty_limit(admin_client, world):
    other = api_key_create(organization=world.b.org).api_key
    wrong = admin_client.post("/admin/ratelimit/limit/add/",
                              form(organization=world.a.org.pk, api_key=other.pk,
                                   requests_per_minute="1"))
    assert wrong.status_code == 200 and b"another organization" in wrong.content
    empty = admin_client.post("/admin/ratelimit/limit/add/", form(organization=world.a.org.pk))
    assert empty.status_code == 200 and b"at least one limit" in empty.content
    assert not Limit.objects.exists() and not LimitChange.objects.exists()


def test_it_adds_a_budget_audited(admin_client, world):
    response = admin_client.post("/admin/ratelimit/budget/add/", {
        "organization": world.a.org.pk, "period": "month", "limit_usd": "12.5", "soft": "on"})
    assert response.status_code == 302
    budget = Budget.objects.get()
    assert (budget.limit_usd, budget.soft) == (Decimal("12.5"), True)
    assert LimitChange.objects.get().actor_label == "alice"


def test_it_keeps_the_audit_read_only(admin_client, world):
    admin_client.post("/admin/ratelimit/limit/add/",
                      form(organization=world.a.org.pk, requests_per_minute="10"))
    change = LimitChange.objects.get()
    assert admin_client.get("/admin/ratelimit/limitchange/").status_code == 200
    assert admin_client.post(f"/admin/ratelimit/limitchange/{change.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert LimitChange.objects.exists()

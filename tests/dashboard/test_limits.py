"""The Limits page: every member sees limits with what is in use and budgets with what is
spent; owners and admins change them (audited as themselves); nobody else sees them."""

from decimal import Decimal

import pytest

from organizations.services import api_key_create
from ratelimit.models import Budget, Limit, LimitChange, LimitPolicy
from ratelimit.services import Actor, budget_set, limit_set
from tests.dashboard.helpers import make_request_log

pytestmark = pytest.mark.django_db


def url(world, tail: str = "") -> str:
    return f"/orgs/{world.a.org.slug}/limits/{tail}"


def limit_form(**fields) -> dict:
    return {"api_key": "", "model": "", "requests_per_minute": "", "tokens_per_minute": "",
            "requests_per_day": "", "concurrent_requests": "", **fields}


def test_it_shows_limits_budgets_spend_and_refusals_to_a_member(client, world):
    limit_set(organization=world.a.org, values={"requests_per_minute": 60,
                                                "concurrent_requests": 4},
              actor=Actor(label="ops"))
    budget_set(organization=world.a.org, period="day", limit_usd=Decimal("2"),
               actor=Actor(label="ops"))
    make_request_log(world.a.org, cost=Decimal("0.5"))
    make_request_log(world.a.org, status=429, error_type="budget_day", cost=Decimal(0))
    client.force_login(world.bob)
    html = client.get(url(world)).content.decode()
    assert 'aria-current="page">Limits<' in html
    assert '<span class="usage">0 / 60</span>' in html
    assert '<span class="usage">0 / 4</span>' in html
    assert '<span class="usage">$0.5000</span>' in html and "$2.00" in html
    assert 'data-reason="budget_day"' in html and "daily budget" in html
    assert "ops" in html  # the audit: who changed what
    assert 'id="limit-form"' not in html  # a plain member changes nothing
    assert client.post(url(world, "set/"), limit_form(requests_per_minute="1")).status_code == 403


def test_it_lets_an_owner_set_and_remove_limits_audited(client, world):
    key = api_key_create(organization=world.a.org, name="batch").api_key
    client.force_login(world.alice)
    response = client.post(url(world, "set/"), limit_form(api_key=key.pk, model="gpt-4o",
                                                          tokens_per_minute="5000"))
    assert response.status_code == 302
    limit = Limit.objects.get()
    assert (limit.api_key, limit.model, limit.tokens_per_minute) == (key, "gpt-4o", 5000)
    assert client.post(url(world, f"{limit.pk}/delete/")).status_code == 302
    assert not Limit.objects.exists()
    assert [c.actor for c in LimitChange.objects.all()] == [world.alice, world.alice]


def test_it_shows_form_errors(client, world):
    client.force_login(world.alice)
    empty = client.post(url(world, "set/"), limit_form())
    assert empty.status_code == 400 and "Set at least one limit." in empty.content.decode()
    # A key of another organization is not among the choices.
    other = api_key_create(organization=world.b.org).api_key
    wrong = client.post(url(world, "set/"), limit_form(api_key=other.pk,
                                                       requests_per_minute="5"))
    assert wrong.status_code == 400
    assert not Limit.objects.exists()


def test_it_lets_an_owner_set_budgets_and_the_policy(client, world):
    client.force_login(world.alice)
    response = client.post(f"/orgs/{world.a.org.slug}/budgets/set/",
                           {"api_key": "", "period": "month", "limit_usd": "100", "soft": "on"})
    assert response.status_code == 302
    budget = Budget.objects.get()
    assert (budget.period, budget.limit_usd, budget.soft) == ("month", Decimal(100), True)
    client.post(url(world, "policy/"), {"fail_closed": "on"})
    assert LimitPolicy.objects.get(organization=world.a.org).fail_closed
    client.post(f"/orgs/{world.a.org.slug}/budgets/{budget.pk}/delete/")
    assert not Budget.objects.exists()


def test_it_checks_ownership(client, world):
    """charlie (org B) neither sees nor changes org A's limits; ids of A's rows are 404
    under B's own pages too."""
    limit = limit_set(organization=world.a.org, values={"requests_per_minute": 5},
                      actor=Actor(label="x"))
    budget = budget_set(organization=world.a.org, period="day", limit_usd=Decimal(1),
                        actor=Actor(label="x"))
    client.force_login(world.charlie)
    assert client.get(url(world)).status_code == 404
    assert client.post(url(world, "set/"), limit_form(requests_per_minute="1")).status_code == 404
    b = f"/orgs/{world.b.org.slug}"
    assert client.post(f"{b}/limits/{limit.pk}/delete/").status_code == 404
    assert client.post(f"{b}/budgets/{budget.pk}/delete/").status_code == 404
    assert Limit.objects.count() == 1 and Budget.objects.count() == 1

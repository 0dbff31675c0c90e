"""The Smart routing page: the policy (owners and admins edit, members read) and what
each tier did: requests, spend, savings by routing next to the cache's, feedback."""

from decimal import Decimal
from importlib import import_module

import pytest
from django.apps import apps as django_apps

from analytics.models import Feedback
from routing.models import RoutingPolicy
from routing.policies import routing_policy_set
from tests.dashboard.helpers import make_request_log

pytestmark = pytest.mark.django_db
FORM = {"mode": "on", "simple_model": "gpt-4o-mini", "standard_model": "gpt-4.1-mini",
        "complex_model": "gpt-4o", "simple_below": "0.3", "complex_from": "0.6",
        "apply_to": "gpt-4-turbo, o3"}


@pytest.fixture(autouse=True)
def prices(db):
    import_module("analytics.migrations.0003_model_prices_data").add_prices(django_apps, None)


def url(world, rest: str = "") -> str:
    return f"/orgs/{world.a.org.slug}/routing/{rest}"


def test_it_shows_each_tier_with_its_savings_and_feedback(client, world):
    org = world.a.org
    routing_policy_set(organization=org, mode="on", **{k: FORM[k] for k in (
        "simple_model", "standard_model", "complex_model")})
    rated = make_request_log(org, route_mode="on", route_tier="simple", route_score=0.1,
                             cost=Decimal("0.001"), routing_saved_cost=Decimal("0.009"))
    make_request_log(org, route_mode="on", route_tier="simple", route_score=0.2,
                     cost=Decimal("0.001"), routing_saved_cost=Decimal("0.009"))
    make_request_log(org, route_mode="shadow", route_tier="standard", route_score=0.4,
                     routing_saved_cost=Decimal("0.5"))
    make_request_log(world.b.org, route_mode="on", route_tier="complex", route_score=0.9)
    Feedback.objects.create(organization=org, request_id=rated.request_id, score=0.0,
                            rating="down")
    client.force_login(world.bob)  # a member

    page = client.get(url(world)).content.decode()

    assert 'data-tier="on-simple"' in page and 'data-tier="shadow-standard"' in page
    assert "complex" not in page.split('id="tiers-table"')[1]  # org B's tier is not here
    assert '<strong id="routing-saved">$0.0180</strong>' in page
    assert '<strong id="shadow-saving">$0.5000</strong>' in page
    row = page.split('data-tier="on-simple"')[1].split("</tr>")[0]
    assert "<td>2</td>" in row and "<td>1.00</td>" in row  # 2 requests, all feedback down
    assert 'id="routing-policy-form"' not in page  # members read


def test_it_lets_an_owner_save_the_policy(client, world):
    client.force_login(world.alice)

    saved = client.post(url(world, "policy/"), FORM)
    bad = client.post(url(world, "policy/"), {**FORM, "standard_model": "@nowhere"})

    assert saved.status_code == 302
    policy = RoutingPolicy.objects.get(organization=world.a.org)
    assert (policy.mode, policy.complex_from, policy.apply_to) == ("on", 0.6,
                                                                   ["gpt-4-turbo", "o3"])
    assert bad.status_code == 400
    assert "not a route of this organization" in bad.content.decode()
    assert RoutingPolicy.objects.get().generation == 1
    assert 'id="routing-policy-form"' in client.get(url(world)).content.decode()


def test_it_checks_ownership(client, world):
    client.force_login(world.bob)  # a member of A: reads, cannot write
    assert client.post(url(world, "policy/"), FORM).status_code == 403
    client.force_login(world.charlie)  # org B
    assert client.get(url(world)).status_code == 404
    assert client.post(url(world, "policy/"), FORM).status_code == 404
    assert not RoutingPolicy.objects.exists()

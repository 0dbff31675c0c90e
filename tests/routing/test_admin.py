"""Routes in the Django admin: a route with its targets inline, written through
routing.services, so the admin refuses what the API refuses."""

import re

import pytest
from django.test import Client

from organizations.selectors import provider_for_org
from routing.models import ModelRoute, RouteTarget
from tests.routing.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db

ADD = "/admin/routing/modelroute/add/"


@pytest.fixture
def operator(world, client) -> Client:
    world.alice.is_staff = world.alice.is_superuser = True
    world.alice.save(update_fields=["is_staff", "is_superuser"])
    client.force_login(world.alice)
    return client


def form(org, *targets: dict, initial: int = 0, **route) -> dict:
    """The add/change form as a browser posts it, targets in the inline."""
    data = {"organization": org.pk, "name": "gpt-4o", "strategy": "priority",
            "retry_on": ["connect", "timeout", "429", "5xx"], **route,
            "targets-TOTAL_FORMS": str(len(targets)), "targets-INITIAL_FORMS": str(initial),
            "targets-MIN_NUM_FORMS": "0", "targets-MAX_NUM_FORMS": "1000"}
    for i, target in enumerate(targets):
        values = {"weight": "1", "priority": str(i), "enabled": "on", **target}
        data.update({f"targets-{i}-{field}": value for field, value in values.items()})
    return data


def errors(response) -> str:
    return " ".join(re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>',
                               response.content.decode(), re.S))


def test_it_lists_and_opens_routes(operator, world):
    route = make_route(world.a.org, "gpt-4o", (provider_for_org(organization=world.a.org),
                                               "gpt-4o"))

    assert "default:gpt-4o" in operator.get("/admin/routing/modelroute/").content.decode()
    assert operator.get(ADD).status_code == 200
    assert operator.get(f"/admin/routing/modelroute/{route.pk}/change/").status_code == 200


def test_it_keeps_non_staff_out(world, client):
    client.force_login(world.bob)

    assert client.get("/admin/routing/modelroute/").status_code == 302


def test_it_adds_a_route_with_its_targets(operator, world):
    default = provider_for_org(organization=world.a.org)
    backup = make_provider(world.a.org, "backup")

    response = operator.post(ADD, form(
        world.a.org, {"provider": default.pk, "upstream_model": "gpt-4o", "weight": "3"},
        {"provider": backup.pk, "upstream_model": "gpt-4o-2024-08-06"},
        strategy="weighted", retry_on=["5xx"]))

    assert response.status_code == 302, errors(response)
    route = ModelRoute.objects.get(organization=world.a.org, name="gpt-4o")
    assert (route.strategy, route.retry_on) == ("weighted", ["5xx"])
    assert [(t.provider, t.upstream_model, t.weight, t.priority)
            for t in RouteTarget.objects.filter(route=route)] == [
        (default, "gpt-4o", 3, 0), (backup, "gpt-4o-2024-08-06", 1, 1)]


def test_it_refuses_a_provider_of_another_organization(operator, world):
    theirs = provider_for_org(organization=world.b.org)

    response = operator.post(ADD, form(world.a.org, {"provider": theirs.pk,
                                                     "upstream_model": "gpt-4o"}))

    assert response.status_code == 200
    assert "is not one of this organization&#x27;s providers" in errors(response)
    assert not ModelRoute.objects.exists()


def test_it_refuses_a_loop_of_aliases(operator, world):
    make_route(world.a.org, "a", (provider_for_org(organization=world.a.org), "x"))
    b = make_route(world.a.org, "b", (None, "a"))
    a = ModelRoute.objects.get(name="a")

    response = operator.post(f"/admin/routing/modelroute/{a.pk}/change/",
                             form(world.a.org, {"upstream_model": "b"}, name="a"))

    assert response.status_code == 200
    assert "Aliases would loop: a -&gt; b -&gt; a" in errors(response)
    assert RouteTarget.objects.get(route=a).upstream_model == "x"
    assert RouteTarget.objects.get(route=b).upstream_model == "a"


def test_it_refuses_a_weight_below_one(operator, world):
    default = provider_for_org(organization=world.a.org)

    response = operator.post(ADD, form(world.a.org, {"provider": default.pk,
                                                     "upstream_model": "gpt-4o",
                                                     "weight": "0"}))

    assert response.status_code == 200
    assert "weight must be between 1" in errors(response)


def test_it_replaces_the_targets_and_renames(operator, world):
    default = provider_for_org(organization=world.a.org)
    route = make_route(world.a.org, "old", (default, "gpt-4o"), (default, "gpt-4o-mini"))
    [first, second] = RouteTarget.objects.filter(route=route)

    response = operator.post(f"/admin/routing/modelroute/{route.pk}/change/", form(
        world.a.org,
        {"id": first.pk, "route": route.pk, "provider": default.pk,
         "upstream_model": "gpt-4o", "priority": "1"},
        {"id": second.pk, "route": route.pk, "provider": default.pk,
         "upstream_model": "gpt-4o-mini", "priority": "0", "DELETE": "on"},
        initial=2, name="new"))

    assert response.status_code == 302, errors(response)
    route.refresh_from_db()
    assert route.name == "new"
    assert [(t.upstream_model, t.priority) for t in RouteTarget.objects.filter(route=route)] == [
        ("gpt-4o", 1)]


def test_it_offers_only_the_routes_own_providers(operator, world):
    route = make_route(world.a.org, "gpt-4o", (provider_for_org(organization=world.a.org),
                                               "gpt-4o"))
    make_provider(world.b.org, "b-only")

    page = operator.get(f"/admin/routing/modelroute/{route.pk}/change/").content.decode()

    assert "b-only" not in page

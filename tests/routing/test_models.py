"""What the database itself guarantees about routes, whatever writes them."""

import pytest
from django.db import IntegrityError
from django.db.models import RestrictedError

from routing.models import ModelRoute, RouteTarget, default_retry_on
from routing.table import RETRY_ON, STRATEGIES
from tests.routing.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db


def test_it_offers_exactly_the_strategies_the_request_path_knows():
    assert tuple(ModelRoute.Strategy.values) == STRATEGIES
    assert default_retry_on() == sorted(RETRY_ON)


def test_it_keeps_route_names_unique_per_organization(world):
    ModelRoute.objects.create(organization=world.a.org, name="fast")
    ModelRoute.objects.create(organization=world.b.org, name="fast")

    with pytest.raises(IntegrityError):
        ModelRoute.objects.create(organization=world.a.org, name="fast")


def test_it_keeps_a_provider_its_routes_target(world):
    provider = make_provider(world.a.org, "second")
    route = make_route(world.a.org, "gpt-4o", (provider, "gpt-4o"))

    with pytest.raises(RestrictedError):
        provider.delete()

    route.delete()
    assert not RouteTarget.objects.exists()
    provider.delete()


def test_it_drops_routes_with_their_organization(world):
    make_route(world.a.org, "gpt-4o", (make_provider(world.a.org, "second"), "gpt-4o"))

    world.a.org.delete()

    assert not ModelRoute.objects.exists() and not RouteTarget.objects.exists()

"""routing_table_for_org: the snapshot the request path routes by, built from the
database in a fixed number of queries."""

import pytest

from organizations.crypto import CredentialDecryptionError
from organizations.models import Provider
from organizations.selectors import provider_for_org
from organizations.services import provider_update
from routing.errors import RouteNotFound
from routing.models import ModelRoute
from routing.selectors import route_get_for_org, routes_for_org, routing_table_for_org
from routing.services import TargetSpec
from routing.table import RETRY_ON, ProviderConfig, Route, Target
from tests.routing.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db


def config(provider: Provider, api_key: str) -> ProviderConfig:
    return ProviderConfig(id=provider.pk, name=provider.name, kind=provider.kind,
                          base_url=provider.base_url, api_key=api_key,
                          api_version=provider.api_version)


def summary(route: Route) -> list[tuple[str, str, int, int]]:
    return [(t.provider.name, t.upstream_model, t.weight, t.priority) for t in route.targets]


def test_it_builds_the_table_with_decrypted_keys(world):
    default = provider_for_org(organization=world.a.org)
    azure = make_provider(world.a.org, "azure", kind="azure", api_version="2024-10-21",
                          api_key="az-secret-1111")
    make_route(world.a.org, "gpt-4o", (azure, "gpt4o-deployment", 2), (default, "gpt-4o"),
               strategy="weighted", retry_on=["5xx"])

    table = routing_table_for_org(organization_id=world.a.org.pk)

    default_config = config(default, world.a.provider_key)
    azure_config = config(azure, "az-secret-1111")
    assert table.default == default_config
    assert table.providers == {"default": default_config, "azure": azure_config}
    assert table.routes == {"gpt-4o": Route(
        name="gpt-4o", strategy="weighted", retry_on=frozenset({"5xx"}), explicit=True,
        targets=(Target(azure_config, "gpt4o-deployment", weight=2, priority=0),
                 Target(default_config, "gpt-4o", weight=1, priority=1)),
    )}
    assert table.route_for("gpt-4o").targets[0].provider.api_version == "2024-10-21"
    # No route: the default provider, asked for the model as named.
    assert table.route_for("o3-mini") == Route(
        name="o3-mini", targets=(Target(default_config, "o3-mini"),), explicit=False)


def test_it_holds_only_the_organizations_own_providers_and_routes(world):
    make_route(world.b.org, "theirs", (provider_for_org(organization=world.b.org), "x"))

    table = routing_table_for_org(organization_id=world.a.org.pk)

    assert table.routes == {}
    assert list(table.providers) == ["default"]
    assert table.default.api_key == world.a.provider_key
    assert routing_table_for_org(organization_id=world.b.org.pk).default.api_key == (
        world.b.provider_key)


def test_it_sorts_targets_by_priority(world):
    default = provider_for_org(organization=world.a.org)
    second = make_provider(world.a.org, "second")
    make_route(world.a.org, "gpt-4o", TargetSpec(default, "late", priority=9),
               TargetSpec(second, "first", priority=0), TargetSpec(default, "tied", priority=0))

    route = routing_table_for_org(organization_id=world.a.org.pk).routes["gpt-4o"]

    # Equal priorities stay equal, in the order given.
    assert summary(route) == [("second", "first", 1, 0), ("default", "tied", 1, 0),
                              ("default", "late", 1, 1)]
    assert route.retry_on == RETRY_ON and route.strategy == "priority"


def test_it_leaves_out_disabled_targets_and_disabled_providers(world):
    default = provider_for_org(organization=world.a.org)
    off = make_provider(world.a.org, "off", enabled=False)
    make_route(world.a.org, "gpt-4o", (off, "gpt-4o"),
               TargetSpec(default, "disabled-target", enabled=False), (default, "gpt-4o"))

    table = routing_table_for_org(organization_id=world.a.org.pk)

    assert summary(table.routes["gpt-4o"]) == [("default", "gpt-4o", 1, 0)]
    assert "off" not in table.providers


def test_it_marks_a_route_with_no_enabled_target(world):
    off = make_provider(world.a.org, "off")
    make_route(world.a.org, "gpt-4o", (off, "gpt-4o"))
    provider_update(provider=off, enabled=False)

    table = routing_table_for_org(organization_id=world.a.org.pk)

    # Still a route, so the request path answers "unavailable" rather than quietly
    # sending gpt-4o to the default provider.
    assert table.route_for("gpt-4o") == Route(name="gpt-4o", targets=(), explicit=True)


def test_it_has_no_default_when_the_default_provider_is_disabled(world):
    provider_update(provider=provider_for_org(organization=world.a.org), enabled=False)

    table = routing_table_for_org(organization_id=world.a.org.pk)

    assert table.default is None and table.providers == {}
    assert table.route_for("gpt-4o") is None


def test_it_flattens_aliases_in_place(world):
    default = provider_for_org(organization=world.a.org)
    second = make_provider(world.a.org, "second")
    make_route(world.a.org, "smart", (second, "gpt-4o"), (default, "gpt-4o"))
    make_route(world.a.org, "fast", (default, "gpt-4o-mini"), (None, "smart"),
               (second, "last-resort"))

    table = routing_table_for_org(organization_id=world.a.org.pk)

    assert summary(table.routes["fast"]) == [
        ("default", "gpt-4o-mini", 2, 0), ("second", "gpt-4o", 1, 1),
        ("default", "gpt-4o", 1, 2), ("second", "last-resort", 2, 3)]
    assert summary(table.routes["smart"]) == [("second", "gpt-4o", 1, 0),
                                              ("default", "gpt-4o", 1, 1)]


def test_it_splits_an_aliases_weight_among_its_targets(world):
    default = provider_for_org(organization=world.a.org)
    second = make_provider(world.a.org, "second")
    make_route(world.a.org, "pool", (second, "a", 1), (second, "b", 3))
    make_route(world.a.org, "mix", (default, "direct", 1), (None, "pool", 1),
               strategy="weighted")

    route = routing_table_for_org(organization_id=world.a.org.pk).routes["mix"]

    # Half the traffic direct, the other half split 1:3 inside the pool.
    weights = {t.upstream_model: t.weight for t in route.targets}
    assert weights == {"direct": 4, "a": 1, "b": 3}


def test_it_flattens_nested_aliases(world):
    default = provider_for_org(organization=world.a.org)
    make_route(world.a.org, "c", (default, "deep"))
    make_route(world.a.org, "b", (None, "c"))
    make_route(world.a.org, "a", (None, "b"), (default, "after"))

    route = routing_table_for_org(organization_id=world.a.org.pk).routes["a"]

    assert summary(route) == [("default", "deep", 1, 0), ("default", "after", 1, 1)]


def test_it_counts_a_target_reached_twice_once(world):
    default = provider_for_org(organization=world.a.org)
    make_route(world.a.org, "inner", (default, "gpt-4o"))
    make_route(world.a.org, "outer", (default, "gpt-4o"), (None, "inner"),
               (default, "other"))

    route = routing_table_for_org(organization_id=world.a.org.pk).routes["outer"]

    assert summary(route) == [("default", "gpt-4o", 2, 0), ("default", "other", 1, 1)]


def test_it_skips_an_alias_whose_route_has_no_enabled_target(world):
    default = provider_for_org(organization=world.a.org)
    off = make_provider(world.a.org, "off")
    make_route(world.a.org, "dead", (off, "gpt-4o"))
    make_route(world.a.org, "fast", (None, "dead"), (default, "gpt-4o-mini", 5))
    provider_update(provider=off, enabled=False)

    table = routing_table_for_org(organization_id=world.a.org.pk)

    assert summary(table.routes["fast"]) == [("default", "gpt-4o-mini", 5, 0)]
    assert table.routes["dead"].targets == ()


def test_it_builds_the_table_in_four_queries_whatever_its_size(world,
                                                                 django_assert_num_queries):
    providers = [make_provider(world.a.org, f"p{i}") for i in range(4)]
    for i in range(12):
        make_route(world.a.org, f"model-{i}", *[(p, f"m{i}") for p in providers])
    make_route(world.a.org, "alias", *[(None, f"model-{i}") for i in range(12)])

    with django_assert_num_queries(4):  # providers, routes, targets, routing policy
        table = routing_table_for_org(organization_id=world.a.org.pk)

    assert len(table.routes) == 13 and len(table.routes["alias"].targets) == 48
    assert table.policy is None


def test_it_refuses_to_build_a_table_with_an_unreadable_key(world):
    Provider.objects.filter(organization=world.a.org).update(api_key_encrypted="garbage")

    with pytest.raises(CredentialDecryptionError):
        routing_table_for_org(organization_id=world.a.org.pk)


def test_it_finds_routes_only_in_their_own_organization(world):
    theirs = make_route(world.b.org, "theirs",
                        (provider_for_org(organization=world.b.org), "x"))
    mine = make_route(world.a.org, "mine", (provider_for_org(organization=world.a.org), "y"))

    with pytest.raises(RouteNotFound):
        route_get_for_org(organization=world.a.org, route_id=theirs.pk)
    assert route_get_for_org(organization=world.a.org, route_id=mine.pk) == mine
    assert list(routes_for_org(organization=world.a.org)) == [mine]
    assert ModelRoute.objects.count() == 2

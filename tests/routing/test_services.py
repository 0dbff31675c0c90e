"""Routes through routing.services: what is accepted, what is refused (and then nothing
is written), aliases and their loops."""

import pytest
from django.core.exceptions import ValidationError

from routing.errors import RouteInUse
from routing.models import ModelRoute, RouteTarget
from routing.services import (
    TargetSpec,
    route_delete,
    route_set,
    route_target_text,
    route_targets_parse,
    route_update,
)
from tests.routing.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db


@pytest.fixture
def providers(world):
    return make_provider(world.a.org, "openai"), make_provider(world.a.org, "backup")


def rows(route: ModelRoute) -> list[tuple]:
    return [(t.provider.name if t.provider else None, t.upstream_model, t.weight, t.priority,
             t.enabled) for t in RouteTarget.objects.filter(route=route)]


def test_it_creates_a_route_with_targets_in_the_order_given(world, providers):
    openai, backup = providers

    route, created = route_set(
        organization=world.a.org, name="gpt-4o-mini", strategy="weighted",
        retry_on=["5xx", "timeout"],
        targets=[TargetSpec(openai, "gpt-4o-mini", weight=3),
                 TargetSpec(backup, "gpt-4o-mini-2024-07-18", enabled=False)],
    )

    assert created
    stored = ModelRoute.objects.get(pk=route.pk)
    assert (stored.organization, stored.name, stored.strategy, stored.retry_on) == (
        world.a.org, "gpt-4o-mini", "weighted", ["5xx", "timeout"])
    assert rows(route) == [("openai", "gpt-4o-mini", 3, 0, True),
                           ("backup", "gpt-4o-mini-2024-07-18", 1, 1, False)]


def test_it_retries_on_every_failure_kind_by_default(world, providers):
    route = make_route(world.a.org, "gpt-4o", (providers[0], "gpt-4o"))

    assert ModelRoute.objects.get(pk=route.pk).retry_on == ["429", "5xx", "connect", "timeout"]


def test_it_replaces_a_route_of_the_same_name(world, providers):
    openai, backup = providers
    first = make_route(world.a.org, "gpt-4o", (openai, "gpt-4o"), (backup, "gpt-4o"))

    again, created = route_set(organization=world.a.org, name="gpt-4o", strategy="latency",
                               targets=[TargetSpec(backup, "gpt-4o-2024-08-06",
                                                   priority=5)])

    assert not created and again.pk == first.pk
    assert ModelRoute.objects.get(pk=first.pk).strategy == "latency"
    assert rows(first) == [("backup", "gpt-4o-2024-08-06", 1, 5, True)]
    assert ModelRoute.objects.filter(organization=world.a.org).count() == 1


def test_it_allows_a_route_whose_targets_are_all_disabled(world, providers):
    route = make_route(world.a.org, "gpt-4o",
                       TargetSpec(providers[0], "gpt-4o", enabled=False))

    assert rows(route) == [("openai", "gpt-4o", 1, 0, False)]


@pytest.mark.parametrize("change,message", [
    ({"strategy": "fastest"}, "Unknown strategy 'fastest': one of priority, weighted, latency"),
    ({"retry_on": ["5xx", "404"]}, "Unknown retry_on 404"),
    ({"weight": 0}, "weight must be between 1 and 1000000 \\(got 0\\)"),
    ({"weight": -2}, "weight must be between 1"),
    ({"priority": -1}, "priority must be between 0"),
    ({"name": "has space"}, "Invalid route name"),
    ({"name": ""}, "Invalid route name"),
    ({"upstream_model": ""}, "Invalid upstream model"),
    ({"targets": []}, "at least one target"),
])
def test_it_refuses_a_bad_route_and_writes_nothing(world, providers, change, message):
    target = {"provider": providers[0], "upstream_model": "gpt-4o"}
    for field in ("weight", "priority", "upstream_model"):
        if field in change:
            target[field] = change.pop(field)
    arguments = {"name": "gpt-4o", "targets": [TargetSpec(**target)], **change}

    with pytest.raises(ValidationError, match=message):
        route_set(organization=world.a.org, **arguments)

    assert not ModelRoute.objects.exists() and not RouteTarget.objects.exists()


def test_it_refuses_a_provider_of_another_organization(world, providers):
    theirs = make_provider(world.b.org, "theirs")

    with pytest.raises(ValidationError, match="'theirs' is not one of this organization's"):
        make_route(world.a.org, "gpt-4o", (providers[0], "gpt-4o"), (theirs, "gpt-4o"))

    assert not ModelRoute.objects.filter(organization=world.a.org).exists()


def test_it_refuses_the_same_target_twice(world, providers):
    with pytest.raises(ValidationError, match="openai:gpt-4o is listed twice"):
        make_route(world.a.org, "gpt-4o", (providers[0], "gpt-4o"), (providers[0], "gpt-4o"))


def test_it_refuses_a_failed_replacement_and_keeps_the_route(world, providers):
    route = make_route(world.a.org, "gpt-4o", (providers[0], "gpt-4o", 2))

    with pytest.raises(ValidationError, match="weight"):
        make_route(world.a.org, "gpt-4o", (providers[1], "gpt-4o", 0))

    assert rows(route) == [("openai", "gpt-4o", 2, 0, True)]


# --- aliases -------------------------------------------------------------------------------

def test_it_accepts_an_alias_of_another_route(world, providers):
    make_route(world.a.org, "gpt-4o", (providers[0], "gpt-4o"))

    fast = make_route(world.a.org, "fast", (None, "gpt-4o"), (providers[1], "gpt-4o-mini"))

    assert rows(fast) == [(None, "gpt-4o", 1, 0, True), ("backup", "gpt-4o-mini", 1, 1, True)]


def test_it_refuses_an_alias_of_a_route_that_does_not_exist(world):
    with pytest.raises(ValidationError, match="has no route 'nowhere'"):
        make_route(world.a.org, "fast", (None, "nowhere"))


def test_it_refuses_an_alias_of_a_route_of_another_organization(world, providers):
    make_route(world.b.org, "theirs", (make_provider(world.b.org, "b"), "gpt-4o"))

    with pytest.raises(ValidationError, match="has no route 'theirs'"):
        make_route(world.a.org, "fast", (None, "theirs"))


def test_it_refuses_an_alias_of_itself(world, providers):
    with pytest.raises(ValidationError, match="'fast' cannot be an alias of itself"):
        make_route(world.a.org, "fast", (None, "fast"))
    make_route(world.a.org, "fast", (providers[0], "gpt-4o"))
    with pytest.raises(ValidationError, match="'fast' cannot be an alias of itself"):
        make_route(world.a.org, "fast", (None, "fast"))


def test_it_refuses_a_loop_of_two_aliases(world, providers):
    make_route(world.a.org, "a", (providers[0], "gpt-4o"))
    make_route(world.a.org, "b", (None, "a"))

    with pytest.raises(ValidationError, match="Aliases would loop: a -> b -> a"):
        make_route(world.a.org, "a", (None, "b"))

    assert rows(ModelRoute.objects.get(name="a")) == [("openai", "gpt-4o", 1, 0, True)]


def test_it_refuses_a_longer_loop(world, providers):
    make_route(world.a.org, "a", (providers[0], "gpt-4o"))
    make_route(world.a.org, "b", (None, "a"))
    make_route(world.a.org, "c", (None, "b"), (providers[1], "x"))

    with pytest.raises(ValidationError, match="Aliases would loop: a -> c -> b -> a"):
        make_route(world.a.org, "a", (providers[0], "gpt-4o"), (None, "c"))


def test_it_accepts_two_routes_aliasing_the_same_one(world, providers):
    make_route(world.a.org, "base", (providers[0], "gpt-4o"))
    make_route(world.a.org, "one", (None, "base"))
    make_route(world.a.org, "two", (None, "base"), (None, "one"))

    assert ModelRoute.objects.filter(organization=world.a.org).count() == 3


def test_it_refuses_to_delete_or_rename_a_route_others_alias(world, providers):
    base = make_route(world.a.org, "base", (providers[0], "gpt-4o"))
    make_route(world.a.org, "fast", (None, "base"))

    with pytest.raises(RouteInUse, match="'base' is aliased by 'fast'"):
        route_delete(route=base)
    with pytest.raises(RouteInUse, match="cannot be renamed"):
        route_update(route=base, name="renamed", targets=[TargetSpec(providers[0], "gpt-4o")])

    assert ModelRoute.objects.filter(name="base").exists()


def test_it_renames_and_deletes_a_route_nobody_aliases(world, providers):
    route = make_route(world.a.org, "old", (providers[0], "gpt-4o"))
    make_route(world.a.org, "taken", (providers[0], "gpt-4o"))

    with pytest.raises(ValidationError, match="already has a route named 'taken'"):
        route_update(route=route, name="taken", targets=[TargetSpec(providers[0], "gpt-4o")])
    renamed = route_update(route=route, name="new", strategy="weighted",
                           targets=[TargetSpec(providers[1], "gpt-4o-mini")])

    assert (renamed.pk, renamed.name, renamed.strategy) == (route.pk, "new", "weighted")
    assert rows(renamed) == [("backup", "gpt-4o-mini", 1, 0, True)]

    route_delete(route=renamed)

    assert not ModelRoute.objects.filter(pk=route.pk).exists()
    assert not RouteTarget.objects.filter(route_id=route.pk).exists()


# --- the PROVIDER:MODEL[:WEIGHT] notation ---------------------------------------------------

def test_it_reads_targets_as_the_commands_write_them(world, providers):
    openai, backup = providers

    specs = route_targets_parse(organization=world.a.org, texts=[
        "openai:gpt-4o", "backup:gpt-4o-mini:3", "openai:llama3:8b", "backup:llama3:8b:2",
        "@fast", "@fast-2:4", "#backup:gpt-4o:2", "# @fast",
    ])

    assert specs == [
        TargetSpec(openai, "gpt-4o", 1), TargetSpec(backup, "gpt-4o-mini", 3),
        TargetSpec(openai, "llama3:8b", 1), TargetSpec(backup, "llama3:8b", 2),
        TargetSpec(None, "fast", 1), TargetSpec(None, "fast-2", 4),
        TargetSpec(backup, "gpt-4o", 2, enabled=False), TargetSpec(None, "fast", 1, enabled=False),
    ]


def test_it_writes_targets_in_the_notation_it_reads(world, providers):
    make_route(world.a.org, "base", (providers[0], "x"))
    route = make_route(world.a.org, "mix", (providers[0], "llama3:8b", 3), (None, "base"),
                       TargetSpec(providers[1], "gpt-4o", enabled=False))
    texts = [route_target_text(t) for t in RouteTarget.objects.filter(route=route)]

    assert texts == ["openai:llama3:8b:3", "@base:1", "#backup:gpt-4o:1"]
    assert route_targets_parse(organization=world.a.org, texts=texts) == [
        TargetSpec(providers[0], "llama3:8b", 3), TargetSpec(None, "base", 1),
        TargetSpec(providers[1], "gpt-4o", 1, enabled=False)]


@pytest.mark.parametrize("text,message", [
    ("gpt-4o", "Invalid target 'gpt-4o'"),
    ("openai:", "Invalid target"),
    ("openai: gpt-4o", "Invalid target"),
    ("@", "Invalid target"),
    ("#", "Invalid target"),
    ("nope:gpt-4o", "No provider named 'nope' in this organization"),
])
def test_it_refuses_a_malformed_target(world, providers, text, message):
    with pytest.raises(ValidationError, match=message):
        route_targets_parse(organization=world.a.org, texts=[text])


def test_it_reads_provider_names_in_the_callers_organization_only(world, providers):
    make_provider(world.b.org, "theirs")

    with pytest.raises(ValidationError, match="No provider named 'theirs'"):
        route_targets_parse(organization=world.a.org, texts=["theirs:gpt-4o"])

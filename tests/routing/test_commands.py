"""set_route as an operator runs it: a process of its own on the test database."""

import pytest

from organizations.selectors import provider_for_org
from organizations.services import organization_create, provider_credential_set
from routing.models import ModelRoute
from routing.selectors import routing_table_for_org
from tests.commands import assert_refused, last_line, manage
from tests.routing.helpers import make_provider

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def org():
    org = organization_create(name="Org A")
    provider_credential_set(organization=org, kind="openai", base_url="https://8.8.8.8/v1",
                            api_key="sk-default-1111")
    make_provider(org, "backup")
    return org


def targets(org, model: str) -> list[tuple[str, str, int, int]]:
    route = routing_table_for_org(organization_id=org.pk).routes[model]
    return [(t.provider.name, t.upstream_model, t.weight, t.priority) for t in route.targets]


def test_it_sets_a_route_tried_in_the_order_of_its_targets(org):
    out = last_line(manage("set_route", "--org", org.slug, "--model", "gpt-4o",
                           "--target", "backup:gpt-4o-2024-08-06", "--target", "default:gpt-4o"))

    assert out == (f"{org.slug}: created gpt-4o (priority) -> backup:gpt-4o-2024-08-06:1, "
                   "default:gpt-4o:1")
    assert targets(org, "gpt-4o") == [("backup", "gpt-4o-2024-08-06", 1, 0),
                                      ("default", "gpt-4o", 1, 1)]


def test_it_replaces_a_route_with_weights_and_a_strategy(org):
    last_line(manage("set_route", "--org", org.slug, "--model", "gpt-4o",
                     "--target", "default:gpt-4o"))

    out = last_line(manage("set_route", "--org", org.slug, "--model", "gpt-4o",
                           "--strategy", "weighted", "--target", "default:gpt-4o:3",
                           "--target", "backup:llama3:8b:1"))

    assert out.startswith(f"{org.slug}: replaced gpt-4o (weighted)")
    assert targets(org, "gpt-4o") == [("default", "gpt-4o", 3, 0), ("backup", "llama3:8b", 1, 1)]
    assert ModelRoute.objects.get(name="gpt-4o").strategy == "weighted"


def test_it_sets_an_alias(org):
    last_line(manage("set_route", "--org", org.slug, "--model", "gpt-4o-mini",
                     "--target", "backup:gpt-4o-mini"))

    last_line(manage("set_route", "--org", org.slug, "--model", "fast",
                     "--target", "@gpt-4o-mini", "--target", "default:gpt-4o-mini"))

    assert targets(org, "fast") == [("backup", "gpt-4o-mini", 1, 0),
                                    ("default", "gpt-4o-mini", 1, 1)]


@pytest.mark.parametrize("args,words", [
    (("--target", "nope:gpt-4o"), ["No provider named 'nope' in this organization"]),
    (("--target", "gpt-4o"), ["Invalid target 'gpt-4o'", "PROVIDER:MODEL[:WEIGHT]"]),
    (("--target", "default:gpt-4o:0"), ["weight must be between 1"]),
    (("--target", "@nowhere"), ["has no route 'nowhere'"]),
    (("--target", "default:gpt-4o", "--strategy", "random"), ["invalid choice: 'random'"]),
    ((), ["--target"]),
])
def test_it_refuses_a_bad_route(org, args, words):
    assert_refused(manage("set_route", "--org", org.slug, "--model", "gpt-4o", *args), *words)

    assert not ModelRoute.objects.exists()


def test_it_refuses_a_loop_of_aliases(org):
    last_line(manage("set_route", "--org", org.slug, "--model", "a", "--target", "default:x"))
    last_line(manage("set_route", "--org", org.slug, "--model", "b", "--target", "@a"))

    assert_refused(manage("set_route", "--org", org.slug, "--model", "a", "--target", "@b"),
                   "Aliases would loop: a -> b -> a")

    assert targets(org, "a") == [("default", "x", 1, 0)]


def test_it_never_targets_another_organizations_provider(org):
    other = organization_create(name="Org B")
    make_provider(other, "theirs")

    assert_refused(manage("set_route", "--org", org.slug, "--model", "gpt-4o",
                          "--target", "theirs:gpt-4o"), "No provider named 'theirs'")
    assert provider_for_org(organization=other).name == "theirs"

"""The routes pages: every route with its targets in the set_route notation; owners and
admins set, change and delete routes, refused as the API refuses them."""

import pytest

from organizations.selectors import provider_for_org
from routing.models import ModelRoute, RouteTarget
from tests.routing.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db

FORM = {"name": "gpt-4o", "strategy": "priority", "targets": "default:gpt-4o\n",
        "retry_on": ["connect", "timeout", "429", "5xx"]}


def url(world) -> str:
    return f"/orgs/{world.a.org.slug}/routes/"


def edit_url(route) -> str:
    return f"/orgs/{route.organization.slug}/routes/{route.pk}/"


def rows(route) -> list[tuple]:
    return [(t.provider.name if t.provider else None, t.upstream_model, t.weight,
             t.priority, t.enabled) for t in RouteTarget.objects.filter(route=route)]


def test_it_lists_the_routes_in_the_set_route_notation(world, client):
    default = provider_for_org(organization=world.a.org)
    make_route(world.a.org, "gpt-4o", (default, "gpt-4o", 2), strategy="weighted")
    make_route(world.a.org, "fast", (None, "gpt-4o"))
    make_route(world.b.org, "theirs", (provider_for_org(organization=world.b.org), "x"))
    client.force_login(world.bob)

    html = client.get(url(world)).content.decode()

    assert "<code>default:gpt-4o:2</code>" in html and "<code>@gpt-4o:1</code>" in html
    assert "Weighted" in html and 'data-name="fast"' in html
    assert "theirs" not in html
    assert 'name="targets"' not in html  # a member gets no form


def test_it_shows_where_models_without_a_route_go(world, client):
    client.force_login(world.alice)
    default = provider_for_org(organization=world.a.org)

    html = client.get(url(world)).content.decode()
    default.enabled = False
    default.save(update_fields=["enabled"])
    without = client.get(url(world)).content.decode()

    assert "every model goes to the default provider" in html
    assert f'<a href="/orgs/{world.a.org.slug}/providers/{default.pk}/">default</a>' in html
    assert "none is set (or it is disabled)" in without


def test_it_sets_a_route_from_the_form(world, client):
    make_provider(world.a.org, "backup")
    client.force_login(world.alice)

    response = client.post(url(world), {**FORM, "strategy": "weighted",
                                        "targets": "default:gpt-4o:3\r\n\r\n"
                                                   "#backup:gpt-4o-2024-08-06\r\n",
                                        "retry_on": ["5xx"]})

    assert response.status_code == 302
    route = ModelRoute.objects.get(organization=world.a.org, name="gpt-4o")
    assert (route.strategy, route.retry_on) == ("weighted", ["5xx"])
    assert rows(route) == [("default", "gpt-4o", 3, 0, True),
                           ("backup", "gpt-4o-2024-08-06", 1, 1, False)]


def test_it_edits_a_route_with_its_targets_filled_in(world, client):
    default = provider_for_org(organization=world.a.org)
    route = make_route(world.a.org, "old", (default, "gpt-4o", 2))
    client.force_login(world.alice)

    page = client.get(edit_url(route)).content.decode()
    response = client.post(edit_url(route), {**FORM, "name": "new",
                                             "targets": "default:gpt-4o-mini"})

    assert "default:gpt-4o:2</textarea>" in page
    assert response.status_code == 302
    route.refresh_from_db()
    assert route.name == "new"
    assert rows(route) == [("default", "gpt-4o-mini", 1, 0, True)]


@pytest.mark.parametrize("change,message", [
    ({"targets": "nope:gpt-4o"}, "No provider named &#x27;nope&#x27;"),
    ({"targets": "gpt-4o"}, "Invalid target &#x27;gpt-4o&#x27;"),
    ({"targets": "default:gpt-4o:0"}, "weight must be between 1"),
    ({"targets": "@nowhere"}, "has no route &#x27;nowhere&#x27;"),
    ({"strategy": "random"}, "Select a valid choice"),
    ({"name": "two words"}, "Invalid route name"),
])
def test_it_refuses_a_bad_route_clearly(world, client, change, message):
    client.force_login(world.alice)

    response = client.post(url(world), {**FORM, **change})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ModelRoute.objects.exists()


def test_it_refuses_a_loop_of_aliases(world, client):
    default = provider_for_org(organization=world.a.org)
    a = make_route(world.a.org, "a", (default, "x"))
    make_route(world.a.org, "b", (None, "a"))
    client.force_login(world.alice)

    response = client.post(edit_url(a), {**FORM, "name": "a", "targets": "@b"})

    assert response.status_code == 400
    assert "Aliases would loop: a -&gt; b -&gt; a" in response.content.decode()
    assert rows(a) == [("default", "x", 1, 0, True)]


def test_it_deletes_a_route_unless_another_aliases_it(world, client):
    default = provider_for_org(organization=world.a.org)
    base = make_route(world.a.org, "base", (default, "x"))
    fast = make_route(world.a.org, "fast", (None, "base"))
    client.force_login(world.alice)

    refused = client.post(f"{edit_url(base)}delete/", follow=True)
    deleted = client.post(f"{edit_url(fast)}delete/")

    assert "aliased by &#x27;fast&#x27;" in refused.content.decode()
    assert ModelRoute.objects.filter(pk=base.pk).exists()
    assert deleted.status_code == 302 and not ModelRoute.objects.filter(pk=fast.pk).exists()


def test_it_lets_a_member_read_but_not_change_a_route(world, client):
    route = make_route(world.a.org, "gpt-4o", (provider_for_org(organization=world.a.org), "x"))
    client.force_login(world.bob)

    html = client.get(edit_url(route)).content.decode()

    assert "default:x" in html and 'name="targets"' not in html and "/delete/" not in html
    assert client.post(url(world), FORM).status_code == 403
    assert client.post(edit_url(route), FORM).status_code == 403
    assert client.post(f"{edit_url(route)}delete/").status_code == 403
    assert rows(route) == [("default", "x", 1, 0, True)]


def test_it_checks_ownership_of_each_route(world, client):
    theirs = make_route(world.b.org, "theirs",
                        (provider_for_org(organization=world.b.org), "gpt-4o"))
    client.force_login(world.alice)
    under_mine = f"/orgs/{world.a.org.slug}/routes/{theirs.pk}/"

    assert client.get(under_mine).status_code == 404
    assert client.post(under_mine, FORM).status_code == 404
    assert client.post(f"{under_mine}delete/").status_code == 404
    assert client.get(edit_url(theirs)).status_code == 404
    # Org B's provider is unknown to org A's routes.
    make_provider(world.b.org, "b-only")
    response = client.post(url(world), {**FORM, "targets": "b-only:gpt-4o"})
    assert "No provider named &#x27;b-only&#x27;" in response.content.decode()
    assert response.status_code == 400
    assert ModelRoute.objects.get(pk=theirs.pk).name == "theirs"
    assert not ModelRoute.objects.filter(organization=world.a.org).exists()

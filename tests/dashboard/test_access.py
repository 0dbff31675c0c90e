"""Who may open which page and do which action, for every page and action.

alice owns org A, bob is a plain member of org A, charlie owns org B (a stranger to A).
"""

import pytest
from django.test import Client

from caching.models import CacheEntry
from organizations.models import ApiKey, Provider
from organizations.selectors import provider_for_org
from organizations.services import provider_add
from routing.models import ModelRoute, RouteTarget
from routing.services import TargetSpec, route_set
from tests.dashboard.helpers import PAGES, csrf_client, csrf_token, make_cache_entry, page_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def routed(world):
    """Org A has a spare provider (no route uses it) and a route, for the actions."""
    provider_add(organization=world.a.org, name="spare", kind="openai",
                 base_url="https://8.8.8.8/v1", api_key="sk-spare-0000")
    route_set(organization=world.a.org, name="gpt-4o",
              targets=[TargetSpec(provider_for_org(organization=world.a.org), "gpt-4o")])


def action(world, name: str) -> tuple[str, dict]:
    """(URL, form data) of a state-changing POST on org A."""
    slug = world.a.org.slug
    key = ApiKey.objects.get(organization=world.a.org)
    default = Provider.objects.get(organization=world.a.org, name="default")
    spare = Provider.objects.get(organization=world.a.org, name="spare")
    route = ModelRoute.objects.get(organization=world.a.org)
    route_form = {"name": "gpt-4o", "strategy": "weighted", "targets": "default:gpt-4o",
                  "retry_on": ["5xx"]}
    return {
        "key-create": (f"/orgs/{slug}/keys/new/", {"name": "new key", "expires_in_days": ""}),
        "key-revoke": (f"/orgs/{slug}/keys/{key.pk}/revoke/", {}),
        "provider-add": (f"/orgs/{slug}/providers/",
                         {"name": "new", "kind": "openai",
                          "base_url": "https://api.example.com/v1",
                          "api_key": "sk-changed-9999", "enabled": "on"}),
        "provider-edit": (f"/orgs/{slug}/providers/{default.pk}/",
                          {"name": "default", "kind": "openai",
                           "base_url": "https://api.example.com/v1", "api_key": "",
                           "enabled": "on", "is_default": "on"}),
        "provider-delete": (f"/orgs/{slug}/providers/{spare.pk}/delete/", {}),
        "route-set": (f"/orgs/{slug}/routes/", {**route_form, "name": "new"}),
        "route-edit": (f"/orgs/{slug}/routes/{route.pk}/", route_form),
        "route-delete": (f"/orgs/{slug}/routes/{route.pk}/delete/", {}),
        "cache-clear": (f"/orgs/{slug}/cache/clear/", {"tier": "all"}),
    }[name]


ACTIONS = ["key-create", "key-revoke", "provider-add", "provider-edit", "provider-delete",
           "route-set", "route-edit", "route-delete", "cache-clear"]


def org_a_state(world) -> tuple:
    """Everything the actions could change about org A."""
    return (
        sorted(ApiKey.objects.filter(organization=world.a.org)
               .values_list("pk", "revoked_at")),
        sorted(Provider.objects.filter(organization=world.a.org).values_list(
            "pk", "name", "base_url", "api_key_encrypted", "enabled", "is_default")),
        sorted(RouteTarget.objects.filter(route__organization=world.a.org).values_list(
            "route__name", "route__strategy", "provider__name", "upstream_model")),
        CacheEntry.objects.filter(organization=world.a.org).count(),
    )


@pytest.mark.parametrize("page", PAGES)
def test_it_sends_anonymous_visitors_to_log_in(world, client, page):
    url = page_url(world.a.org, page)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize("name", ACTIONS)
def test_it_sends_anonymous_actions_to_log_in(world, client, name):
    make_cache_entry(world.a.org)
    before = org_a_state(world)
    url, data = action(world, name)

    response = client.post(url, data)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert org_a_state(world) == before


def test_it_sends_anonymous_visitors_of_the_index_to_log_in(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


@pytest.mark.parametrize("page", PAGES)
def test_it_checks_ownership_of_every_page(world, client, page):
    client.force_login(world.charlie)

    response = client.get(page_url(world.a.org, page))

    assert response.status_code == 404


def test_it_checks_ownership_of_the_confirmation_page(world, client):
    client.force_login(world.charlie)

    response = client.get(f"/orgs/{world.a.org.slug}/cache/clear/?tier=all")

    assert response.status_code == 404


@pytest.mark.parametrize("name", ACTIONS)
def test_it_checks_ownership_of_every_action(world, client, name):
    make_cache_entry(world.a.org)
    before = org_a_state(world)
    client.force_login(world.charlie)
    url, data = action(world, name)

    response = client.post(url, data)

    assert response.status_code == 404
    assert org_a_state(world) == before


def test_it_gives_404_for_another_orgs_key_under_ones_own_org(world, client):
    client.force_login(world.charlie)
    alices_key = ApiKey.objects.get(organization=world.a.org)

    response = client.post(f"/orgs/{world.b.org.slug}/keys/{alices_key.pk}/revoke/")

    assert response.status_code == 404
    alices_key.refresh_from_db()
    assert alices_key.revoked_at is None


def test_it_gives_404_for_an_unknown_org(world, client):
    client.force_login(world.alice)

    assert client.get("/orgs/no-such-org/").status_code == 404


@pytest.mark.parametrize("page", PAGES)
def test_it_lets_a_member_read_every_page(world, client, page):
    client.force_login(world.bob)

    response = client.get(page_url(world.a.org, page))

    assert response.status_code == 200


@pytest.mark.parametrize("name", ACTIONS)
def test_it_forbids_a_member_every_action(world, client, name):
    make_cache_entry(world.a.org)
    before = org_a_state(world)
    client.force_login(world.bob)
    url, data = action(world, name)

    response = client.post(url, data)

    assert response.status_code == 403
    assert org_a_state(world) == before


def test_it_forbids_a_member_the_confirmation_page(world, client):
    client.force_login(world.bob)

    response = client.get(f"/orgs/{world.a.org.slug}/cache/clear/?tier=all")

    assert response.status_code == 403


@pytest.mark.parametrize("page", ["cache", "keys", "providers", "routes"])
def test_it_shows_a_member_no_manage_controls(world, client, page):
    client.force_login(world.bob)

    html = client.get(page_url(world.a.org, page)).content.decode()

    assert "/cache/clear/" not in html
    assert "/keys/new/" not in html
    assert "/revoke/" not in html
    assert 'name="api_key"' not in html
    assert 'name="targets"' not in html


@pytest.mark.parametrize("role", ["owner", "admin"])
@pytest.mark.parametrize("name", [name for name in ACTIONS if name != "cache-clear"])
def test_it_lets_owners_and_admins_act(world, client, role, name):
    from organizations.services import membership_set

    membership_set(organization=world.a.org, user=world.bob, role=role)
    before = org_a_state(world)
    client.force_login(world.bob)
    url, data = action(world, name)

    response = client.post(url, data)

    assert response.status_code in (200, 302)
    assert org_a_state(world) != before


@pytest.mark.parametrize("name", ACTIONS)
def test_it_enforces_csrf_on_every_action(world, name):
    make_cache_entry(world.a.org)
    before = org_a_state(world)
    client = csrf_client(world.alice)
    url, data = action(world, name)

    response = client.post(url, data)

    assert response.status_code == 403
    assert org_a_state(world) == before


@pytest.mark.parametrize("name,form_page", [
    ("key-create", "keys"), ("key-revoke", "keys"), ("provider-add", "providers"),
    ("route-set", "routes"),
])
def test_it_accepts_actions_carrying_the_pages_csrf_token(world, name, form_page):
    before = org_a_state(world)
    client = csrf_client(world.alice)
    token = csrf_token(client, page_url(world.a.org, form_page))
    url, data = action(world, name)

    response = client.post(url, {**data, "csrfmiddlewaretoken": token})

    assert response.status_code in (200, 302)
    assert org_a_state(world) != before


def test_it_enforces_csrf_on_the_account_forms(world):
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post("/accounts/login/", {"username": "alice",
                                               "password": "pw-alice"}).status_code == 403

    client = csrf_client(world.alice)
    assert client.post("/accounts/logout/").status_code == 403
    assert client.post("/accounts/password/", {
        "old_password": "pw-alice", "new_password1": "a-new-long-pass-42",
        "new_password2": "a-new-long-pass-42"}).status_code == 403
    world.alice.refresh_from_db()
    assert world.alice.check_password("pw-alice")

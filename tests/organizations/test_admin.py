"""The Django admin as an operator uses it: alice is a superuser, bob is not staff."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.test import Client
from django.utils import timezone

from organizations import keys
from organizations.models import ApiKey, Provider
from organizations.selectors import provider_api_key
from organizations.services import AuthFailure, api_key_authenticate, organization_create

RAW_KEY_ON_PAGE = re.compile(r'<code id="raw-key"[^>]*>(cog_[0-9A-Za-z]{38})</code>')
ANY_RAW_KEY = re.compile(r"cog_[0-9A-Za-z]{38}")


@pytest.fixture
def operator(world, client) -> Client:
    world.alice.is_staff = world.alice.is_superuser = True
    world.alice.save(update_fields=["is_staff", "is_superuser"])
    client.force_login(world.alice)
    return client


def add_api_key(operator: Client, org, **fields) -> tuple[str, str]:
    """Submit the admin's add form; returns (page HTML, raw key shown on it)."""
    response = operator.post("/admin/organizations/apikey/add/",
                             {"organization": org.pk, "name": "", "scope": "proxy", **fields})
    assert response.status_code == 200
    page = response.content.decode()
    match = RAW_KEY_ON_PAGE.search(page)
    assert match, page
    return page, match.group(1)


@pytest.mark.parametrize("model", ["organization", "membership", "apikey",
                                   "provider"])
def test_it_lists_every_model(operator, world, model):
    response = operator.get(f"/admin/organizations/{model}/")

    assert response.status_code == 200


def test_it_lists_both_organizations_keys_by_prefix_only(operator, world):
    page = operator.get("/admin/organizations/apikey/").content.decode()

    assert keys.lookup_prefix(world.a.raw_key) in page
    assert keys.lookup_prefix(world.b.raw_key) in page
    assert ANY_RAW_KEY.search(page) is None


@pytest.mark.parametrize("model", ["organization", "membership", "apikey",
                                   "provider"])
def test_it_keeps_non_staff_out(world, client, model):
    client.force_login(world.bob)

    response = client.get(f"/admin/organizations/{model}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_opens_the_add_forms(operator):
    assert operator.get("/admin/organizations/apikey/add/").status_code == 200
    assert operator.get("/admin/organizations/provider/add/").status_code == 200


def test_it_shows_a_new_api_key_exactly_once(operator, world):
    page, raw_key = add_api_key(operator, world.a.org, name="from the admin")

    assert page.count(raw_key) == 1
    assert "shown only once" in page
    result = api_key_authenticate(raw_key=raw_key)
    assert result.ok
    assert result.api_key.organization == world.a.org
    assert result.api_key.name == "from the admin"
    assert result.api_key.created_by == world.alice
    # The page names the key the way lists will show it.
    assert f"prefix {keys.lookup_prefix(raw_key)}" in page
    assert "from the admin" in page


def test_it_sets_the_expiry_from_the_add_form(operator, world):
    before = timezone.now()

    page, raw_key = add_api_key(operator, world.a.org, expires_in_days="30")

    api_key = api_key_authenticate(raw_key=raw_key).api_key
    assert before + timedelta(days=30) <= api_key.expires_at <= timezone.now() + timedelta(days=30)
    assert "· expires " in page


def test_it_never_shows_the_raw_key_again(operator, world):
    _, raw_key = add_api_key(operator, world.a.org, name="ci")
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(raw_key))

    pages = {
        url: operator.get(url)
        for url in ["/admin/organizations/apikey/",
                    f"/admin/organizations/apikey/{api_key.pk}/change/",
                    f"/admin/organizations/apikey/{api_key.pk}/history/",
                    "/admin/"]
    }

    for url, response in pages.items():
        assert response.status_code == 200, url
        assert raw_key not in response.content.decode(), url
        assert raw_key[12:] not in response.content.decode(), url
    assert api_key.prefix in pages["/admin/organizations/apikey/"].content.decode()


def test_it_records_the_new_key_in_the_admin_history(operator, world):
    _, raw_key = add_api_key(operator, world.a.org, name="ci")
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(raw_key))

    entry = LogEntry.objects.get(action_flag=ADDITION)
    history = operator.get(f"/admin/organizations/apikey/{api_key.pk}/history/")

    assert entry.object_id == str(api_key.pk)
    assert entry.user == world.alice
    assert "Added" in history.content.decode()


def test_it_renames_a_key_without_touching_the_secret(operator, world):
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))

    response = operator.post(f"/admin/organizations/apikey/{api_key.pk}/change/",
                             {"name": "renamed"})

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.name == "renamed"
    assert api_key_authenticate(raw_key=world.a.raw_key).ok


def test_it_revokes_selected_keys(operator, world):
    api_key = ApiKey.objects.get(prefix=keys.lookup_prefix(world.a.raw_key))

    response = operator.post("/admin/organizations/apikey/",
                             {"action": "revoke", "_selected_action": [api_key.pk]},
                             follow=True)

    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.content.decode()
    assert api_key_authenticate(raw_key=world.a.raw_key).failure is AuthFailure.REVOKED
    assert api_key_authenticate(raw_key=world.b.raw_key).ok


def test_it_stores_a_provider_key_from_the_add_form_encrypted(operator, world, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    org = organization_create(name="Org C")

    response = operator.post("/admin/organizations/provider/add/", {
        "organization": org.pk, "name": "openai", "kind": "openai",
        "base_url": "https://8.8.8.8/v1/", "api_key": "sk-admin-added-secret-5678",
        "enabled": "on",
    })

    assert response.status_code == 302
    credential = Provider.objects.get(organization=org)
    assert credential.base_url == "https://8.8.8.8/v1"
    assert "sk-admin-added-secret-5678" not in credential.api_key_encrypted
    assert provider_api_key(credential=credential) == "sk-admin-added-secret-5678"

    for url in [f"/admin/organizations/provider/{credential.pk}/change/",
                "/admin/organizations/provider/"]:
        page = operator.get(url).content.decode()
        assert "…5678" in page, url
        assert "sk-admin-added-secret-5678" not in page, url
        assert "sk-admin-added" not in page, url


def test_it_keeps_the_provider_key_when_the_field_is_left_empty(operator, world):
    credential = Provider.objects.get(organization=world.a.org)

    response = operator.post(f"/admin/organizations/provider/{credential.pk}/change/", {
        "name": "default", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
        "api_key": "", "enabled": "on", "make_default": "on",
    })

    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.base_url == "http://127.0.0.1:9/v1"
    assert provider_api_key(credential=credential) == world.a.provider_key
    assert Provider.objects.count() == 2


def test_it_requires_a_key_for_a_new_provider(operator, world):
    org = organization_create(name="Org C")

    response = operator.post("/admin/organizations/provider/add/", {
        "organization": org.pk, "name": "openai", "kind": "openai",
        "base_url": "https://8.8.8.8/v1", "api_key": "", "enabled": "on",
    })

    assert response.status_code == 200
    assert "A new provider needs an API key" in response.content.decode()
    assert not Provider.objects.filter(organization=org).exists()


@pytest.mark.parametrize(("base_url", "error"), [
    ("http://169.254.169.254/", "169.254.169.254 resolves to 169.254.169.254"),
    ("http://localhost:8080/v1", "localhost resolves to 127.0.0.1"),
    ("http://metadata.google.internal/", "is a cloud metadata address"),
    ("https://8.8.8.8:99999/v1", "not a valid URL"),
])
def test_it_refuses_a_private_base_url(operator, world, settings, base_url, error):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    org = organization_create(name="Org C")

    response = operator.post("/admin/organizations/provider/add/", {
        "organization": org.pk, "name": "openai", "kind": "openai", "base_url": base_url,
        "api_key": "sk-org-c-secret-9999", "enabled": "on",
    })

    assert response.status_code == 200
    assert error in response.content.decode()
    assert "sk-org-c-secret-9999" not in response.content.decode()
    assert not Provider.objects.filter(organization=org).exists()


def test_it_edits_a_provider_without_moving_it_to_another_organization(operator, world):
    org = organization_create(name="Org C")
    credential = Provider.objects.get(organization=world.a.org)

    response = operator.post(f"/admin/organizations/provider/{credential.pk}/change/", {
        "organization": org.pk, "name": "default", "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1", "api_key": "", "enabled": "on",
        "make_default": "on",
    })

    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.organization == world.a.org
    assert credential.base_url == "http://127.0.0.1:9/v1"
    assert provider_api_key(credential=credential) == world.a.provider_key
    assert not Provider.objects.filter(organization=org).exists()


def test_it_adds_a_second_provider_and_moves_the_default(operator, world):
    response = operator.post("/admin/organizations/provider/add/", {
        "organization": world.a.org.pk, "name": "claude", "kind": "anthropic",
        "base_url": "http://127.0.0.1:9", "api_key": "sk-ant-admin-1234", "enabled": "on",
        "make_default": "on",
    })

    assert response.status_code == 302
    providers = {p.name: p for p in Provider.objects.filter(organization=world.a.org)}
    assert providers["claude"].is_default and not providers["default"].is_default
    assert provider_api_key(credential=providers["claude"]) == "sk-ant-admin-1234"
    assert Provider.objects.get(organization=world.b.org).is_default


def test_it_refuses_a_taken_provider_name(operator, world):
    response = operator.post("/admin/organizations/provider/add/", {
        "organization": world.a.org.pk, "name": "default", "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x-1234", "enabled": "on",
    })

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Provider.objects.filter(organization=world.a.org).count() == 1


def test_it_sets_an_api_keys_scope_once(operator, world):
    _, raw_key = add_api_key(operator, world.a.org, scope="admin")
    api_key = api_key_authenticate(raw_key=raw_key).api_key

    assert api_key.scope == "admin"
    operator.post(f"/admin/organizations/apikey/{api_key.pk}/change/",
                  {"name": "renamed", "scope": "proxy"})
    api_key.refresh_from_db()
    assert (api_key.name, api_key.scope) == ("renamed", "admin")

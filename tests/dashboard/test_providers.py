"""The providers pages: every provider listed with its key's last four only; owners and
admins add, change and delete them, with the services' checks."""

import pytest

from organizations.models import Provider
from organizations.selectors import provider_api_key, provider_for_org
from organizations.services import membership_set, organization_create, provider_add
from routing.services import TargetSpec, route_set

pytestmark = pytest.mark.django_db

NEW = {"name": "claude", "kind": "anthropic", "base_url": "https://api.example.com",
       "api_version": "", "api_key": "sk-ant-dash-5151", "enabled": "on"}


def url(world) -> str:
    return f"/orgs/{world.a.org.slug}/providers/"


def edit_url(provider) -> str:
    return f"/orgs/{provider.organization.slug}/providers/{provider.pk}/"


def form_of(provider, **changes) -> dict:
    """The edit form as the browser posts it: what is stored, the key left empty."""
    data = {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url,
            "api_version": provider.api_version, "api_key": "", **changes}
    for box in ("enabled", "is_default"):
        if changes.get(box, getattr(provider, box)):
            data[box] = "on"
        else:
            data.pop(box, None)
    return data


def test_it_lists_the_providers_with_only_the_keys_last_four(world, client):
    provider_add(organization=world.a.org, name="spare", kind="openai",
                 base_url="https://8.8.8.8/v1", api_key="sk-spare-secret-6060", enabled=False)
    client.force_login(world.bob)

    html = client.get(url(world)).content.decode()

    assert world.a.provider_key not in html and "sk-spare-secret" not in html
    assert f"…{world.a.provider_key[-4:]}" in html and "…6060" in html
    assert provider_for_org(organization=world.a.org).base_url in html
    assert 'data-name="spare"' in html and "Disabled" in html
    assert world.b.org.name not in html


def test_it_adds_a_provider(world, client):
    client.force_login(world.alice)

    response = client.post(url(world), NEW)

    assert response.status_code == 302
    provider = Provider.objects.get(organization=world.a.org, name="claude")
    assert (provider.kind, provider.base_url, provider.enabled, provider.is_default) == (
        "anthropic", "https://api.example.com", True, False)
    assert provider_api_key(credential=provider) == "sk-ant-dash-5151"
    html = client.get(url(world)).content.decode()
    assert "…5151" in html and "sk-ant-dash" not in html


def test_it_changes_a_provider_and_keeps_the_key_when_left_empty(world, client):
    client.force_login(world.alice)
    provider = provider_for_org(organization=world.a.org)

    response = client.post(edit_url(provider), form_of(
        provider, base_url="https://api.example.com/v1/"))

    assert response.status_code == 302
    stored = Provider.objects.get(pk=provider.pk)
    assert stored.base_url == "https://api.example.com/v1" and stored.is_default
    assert provider_api_key(credential=stored) == world.a.provider_key


def test_it_replaces_the_key(world, client):
    client.force_login(world.alice)
    provider = provider_for_org(organization=world.a.org)

    client.post(edit_url(provider), form_of(provider, api_key="sk-brand-new-7788"))

    stored = Provider.objects.get(pk=provider.pk)
    assert provider_api_key(credential=stored) == "sk-brand-new-7788"
    assert stored.api_key_last4 == "7788"
    html = client.get(edit_url(provider)).content.decode()
    assert "…7788" in html and "sk-brand-new" not in html and 'type="password"' in html


def test_it_moves_the_default(world, client):
    client.force_login(world.alice)
    old = provider_for_org(organization=world.a.org)

    client.post(url(world), {**NEW, "is_default": "on"})

    assert provider_for_org(organization=world.a.org).name == "claude"
    assert not Provider.objects.get(pk=old.pk).is_default


@pytest.mark.parametrize("base_url,message", [
    ("http://127.0.0.1:9/v1", "private, loopback or link-local"),
    ("http://169.254.169.254/latest", "private, loopback or link-local"),
    ("ftp://api.example.com/v1", "must start with http:// or https://"),
    ("https://user:pw@api.example.com/v1", "not in the URL"),
])
def test_it_applies_the_same_url_checks_as_the_admin(world, client, settings, base_url,
                                                     message):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    provider = provider_for_org(organization=world.a.org)
    before = provider.base_url
    client.force_login(world.alice)

    added = client.post(url(world), {**NEW, "base_url": base_url})
    changed = client.post(edit_url(provider), form_of(provider, base_url=base_url,
                                                      api_key="sk-x-1234"))

    for response in (added, changed):
        assert response.status_code == 400
        assert message in response.content.decode()
    stored = Provider.objects.get(pk=provider.pk)
    assert stored.base_url == before
    assert provider_api_key(credential=stored) == world.a.provider_key
    assert Provider.objects.filter(organization=world.a.org).count() == 1


@pytest.mark.parametrize("change,message", [
    ({"name": "default"}, "already has a provider named"),
    ({"name": "no spaces"}, "Invalid provider name"),
    ({"api_version": "2024-10-21"}, "applies to Azure OpenAI providers only"),
    ({"api_key": ""}, "A new provider needs an API key."),
])
def test_it_refuses_a_bad_provider_clearly(world, client, change, message):
    client.force_login(world.alice)

    response = client.post(url(world), {**NEW, **change})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert Provider.objects.filter(organization=world.a.org).count() == 1


def test_it_needs_a_key_for_a_new_organizations_first_provider(world, client):
    org = organization_create(name="Fresh")
    membership_set(organization=org, user=world.alice, role="admin")
    client.force_login(world.alice)

    page = client.get(f"/orgs/{org.slug}/providers/").content.decode()
    response = client.post(f"/orgs/{org.slug}/providers/", {**NEW, "api_key": ""})

    assert "No provider yet" in page
    assert response.status_code == 400
    assert not Provider.objects.filter(organization=org).exists()


def test_it_deletes_a_provider_unless_a_route_uses_it(world, client):
    client.force_login(world.alice)
    spare = provider_add(organization=world.a.org, name="spare", kind="openai",
                         base_url="https://8.8.8.8/v1", api_key="sk-spare-1111")
    used = provider_for_org(organization=world.a.org)
    route_set(organization=world.a.org, name="gpt-4o", targets=[TargetSpec(used, "gpt-4o")])

    refused = client.post(f"{edit_url(used)}delete/", follow=True)
    deleted = client.post(f"{edit_url(spare)}delete/")

    assert "target of the route(s) &#x27;gpt-4o&#x27;" in refused.content.decode()
    assert Provider.objects.filter(pk=used.pk).exists()
    assert deleted.status_code == 302
    assert not Provider.objects.filter(pk=spare.pk).exists()


def test_it_shows_a_member_the_provider_without_controls(world, client):
    client.force_login(world.bob)
    provider = provider_for_org(organization=world.a.org)

    html = client.get(edit_url(provider)).content.decode()
    refused = client.post(edit_url(provider), form_of(provider, enabled=False))

    assert f"…{world.a.provider_key[-4:]}" in html
    assert 'name="api_key"' not in html and "/delete/" not in html
    assert refused.status_code == 403
    assert Provider.objects.get(pk=provider.pk).enabled


def test_it_checks_ownership_of_each_provider(world, client):
    theirs = provider_for_org(organization=world.b.org)
    client.force_login(world.alice)
    under_mine = f"/orgs/{world.a.org.slug}/providers/{theirs.pk}/"

    assert client.get(under_mine).status_code == 404
    assert client.post(under_mine, form_of(theirs, enabled=False)).status_code == 404
    assert client.post(f"{under_mine}delete/").status_code == 404
    assert client.get(edit_url(theirs)).status_code == 404
    stored = Provider.objects.get(pk=theirs.pk)
    assert stored.enabled and provider_api_key(credential=stored) == world.b.provider_key

"""The organization's upstream: set by owners and admins, the key write-only."""

import pytest

from organizations.models import Provider
from organizations.selectors import provider_api_key
from organizations.services import organization_create

pytestmark = pytest.mark.django_db


def url(world) -> str:
    return f"/orgs/{world.a.org.slug}/providers/"


def test_it_shows_the_provider_with_only_the_keys_last_four(world, client):
    client.force_login(world.alice)

    html = client.get(url(world)).content.decode()

    assert world.a.provider_key not in html
    assert f"…{world.a.provider_key[-4:]}" in html
    assert Provider.objects.get(organization=world.a.org).base_url in html
    assert 'type="password"' in html


def test_it_changes_the_url_and_keeps_the_key_when_left_empty(world, client):
    client.force_login(world.alice)

    response = client.post(url(world), {"kind": "openai",
                                        "base_url": "https://api.example.com/v1/",
                                        "api_key": ""})

    assert response.status_code == 302
    credential = Provider.objects.get(organization=world.a.org)
    assert credential.base_url == "https://api.example.com/v1"
    assert provider_api_key(credential=credential) == world.a.provider_key


def test_it_replaces_the_key(world, client):
    client.force_login(world.alice)

    client.post(url(world), {"kind": "openai", "base_url": "https://api.example.com/v1",
                             "api_key": "sk-brand-new-7788"})

    credential = Provider.objects.get(organization=world.a.org)
    assert provider_api_key(credential=credential) == "sk-brand-new-7788"
    assert credential.api_key_last4 == "7788"
    html = client.get(url(world)).content.decode()
    assert "…7788" in html and "sk-brand-new" not in html


@pytest.mark.parametrize("base_url,message", [
    ("http://127.0.0.1:9/v1", "private, loopback or link-local"),
    ("http://169.254.169.254/latest", "private, loopback or link-local"),
    ("ftp://api.example.com/v1", "must start with http:// or https://"),
    ("https://user:pw@api.example.com/v1", "not in the URL"),
])
def test_it_applies_the_same_url_checks_as_the_admin(world, client, settings, base_url,
                                                     message):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    before = Provider.objects.get(organization=world.a.org).base_url
    client.force_login(world.alice)

    response = client.post(url(world), {"kind": "openai", "base_url": base_url,
                                        "api_key": "sk-x-1234"})

    assert response.status_code == 400
    assert message in response.content.decode()
    credential = Provider.objects.get(organization=world.a.org)
    assert credential.base_url == before
    assert provider_api_key(credential=credential) == world.a.provider_key


def test_it_needs_a_key_for_a_new_provider(world, client):
    from organizations.services import membership_set

    org = organization_create(name="Fresh")
    membership_set(organization=org, user=world.alice, role="admin")
    client.force_login(world.alice)

    page = client.get(f"/orgs/{org.slug}/providers/").content.decode()
    response = client.post(f"/orgs/{org.slug}/providers/",
                           {"kind": "openai", "base_url": "https://api.example.com/v1"})

    assert "No provider yet" in page
    assert response.status_code == 400
    assert "A new provider needs an API key." in response.content.decode()
    assert not Provider.objects.filter(organization=org).exists()

"""/api/providers: an organization's providers through the management API, by a
member's session or an admin-scoped key; the keys write-only."""

import pytest
from django.test import Client

from organizations.models import Provider
from organizations.selectors import provider_api_key, provider_for_org
from organizations.services import membership_set, provider_add
from routing.services import TargetSpec, route_set
from tests.organizations.apiclients import (
    admin_key_client,
    assert_error,
    key_client,
    session_for,
)

pytestmark = pytest.mark.django_db

LIST = "/api/providers"
NEW = {"name": "claude", "kind": "anthropic", "base_url": "https://8.8.8.8/v1/",
       "api_key": "sk-ant-very-secret-4242"}


def detail(provider) -> str:
    return f"/api/providers/{provider.pk}"


def test_it_lists_the_providers_without_their_keys(world):
    for client in (session_for(world.alice), session_for(world.bob),
                   admin_key_client(world.a.org)):
        response = client.get(LIST)

        assert response.status_code == 200
        [default] = response.json()
        assert default["name"] == "default" and default["is_default"] is True
        assert default["api_key_last4"] == world.a.provider_key[-4:]
        assert world.a.provider_key not in response.content.decode()
        assert "api_key_encrypted" not in default and "api_key" not in default


def test_it_creates_a_provider_and_never_shows_its_key(world):
    response = admin_key_client(world.a.org).post(LIST, NEW, content_type="application/json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert "sk-ant-very-secret" not in response.content.decode()
    assert {k: body[k] for k in ("name", "kind", "base_url", "api_key_last4", "enabled",
                                 "is_default", "api_version")} == {
        "name": "claude", "kind": "anthropic", "base_url": "https://8.8.8.8/v1",
        "api_key_last4": "4242", "enabled": True, "is_default": False, "api_version": ""}
    stored = Provider.objects.get(pk=body["id"])
    assert stored.organization == world.a.org
    assert provider_api_key(credential=stored) == "sk-ant-very-secret-4242"


def test_it_lets_an_owner_create_by_session(world):
    response = session_for(world.alice).post(
        LIST, {**NEW, "kind": "azure", "api_version": "2024-10-21", "is_default": True},
        content_type="application/json")

    assert response.status_code == 201, response.content
    assert provider_for_org(organization=world.a.org).name == "claude"


def test_it_gets_updates_and_deletes_a_provider(world):
    client = admin_key_client(world.a.org)
    provider = provider_add(organization=world.a.org, name="spare", kind="openai",
                            base_url="https://8.8.8.8/v1", api_key="sk-spare-1111")

    assert client.get(detail(provider)).json()["name"] == "spare"
    response = client.patch(detail(provider), {"enabled": False, "name": "old-spare"},
                            content_type="application/json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["enabled"]) == ("old-spare", False)
    assert provider_api_key(credential=Provider.objects.get(pk=provider.pk)) == "sk-spare-1111"

    response = client.patch(detail(provider), {"api_key": "sk-rotated-2222"},
                            content_type="application/json")
    assert response.json()["api_key_last4"] == "2222"
    assert "sk-rotated" not in response.content.decode()
    assert provider_api_key(credential=Provider.objects.get(pk=provider.pk)) == (
        "sk-rotated-2222")

    assert client.delete(detail(provider)).status_code == 204
    assert not Provider.objects.filter(pk=provider.pk).exists()


def test_it_refuses_to_delete_a_provider_in_use(world):
    provider = provider_for_org(organization=world.a.org)
    route_set(organization=world.a.org, name="gpt-4o",
              targets=[TargetSpec(provider, "gpt-4o")])

    response = admin_key_client(world.a.org).delete(detail(provider))

    error = assert_error(response, 409, "target of the route(s) 'gpt-4o'")
    assert error["code"] == "provider_in_use"
    assert Provider.objects.filter(pk=provider.pk).exists()


@pytest.mark.parametrize("change,status,words,param", [
    ({"kind": "claude"}, 400, ["kind", "openai, azure, anthropic", "claude"], "kind"),
    ({"name": "default"}, 400, ["already has a provider named 'default'"], None),
    ({"name": "a b"}, 400, ["Invalid provider name"], None),
    ({"api_key": ""}, 400, ["api_key", "may not be blank"], "api_key"),
    ({"base_url": "ftp://8.8.8.8"}, 400, ["must start with http:// or https://"], None),
    ({"base_url": "http://10.0.0.5/v1"}, 400, ["private, loopback or link-local"], None),
    ({"api_version": "2024-10-21"}, 400, ["applies to Azure OpenAI providers only"], None),
    ({"enabled": "maybe"}, 400, ["enabled", "Must be a valid boolean"], "enabled"),
])
def test_it_refuses_bad_input_clearly(world, settings, change, status, words, param):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False

    response = admin_key_client(world.a.org).post(LIST, {**NEW, **change},
                                                  content_type="application/json")

    assert_error(response, status, *words, param=param)
    assert Provider.objects.filter(organization=world.a.org).count() == 1


def test_it_refuses_a_bad_update_and_changes_nothing(world):
    provider = provider_for_org(organization=world.a.org)

    response = admin_key_client(world.a.org).patch(detail(provider),
                                                   {"api_version": "2024-10-21"},
                                                   content_type="application/json")

    assert_error(response, 400, "applies to Azure OpenAI providers only")
    assert Provider.objects.get(pk=provider.pk).api_version == ""


def test_it_lets_a_member_read_but_not_write(world):
    client = session_for(world.bob)
    provider = provider_for_org(organization=world.a.org)

    assert client.get(detail(provider)).status_code == 200
    for response in (client.post(LIST, NEW, content_type="application/json"),
                     client.patch(detail(provider), {"enabled": False},
                                  content_type="application/json"),
                     client.delete(detail(provider))):
        assert_error(response, 403, "Only an owner or admin")
    assert Provider.objects.get(pk=provider.pk).enabled


def test_it_lets_an_admin_member_write(world):
    membership_set(organization=world.a.org, user=world.bob, role="admin")

    response = session_for(world.bob).post(LIST, NEW, content_type="application/json")

    assert response.status_code == 201


def test_it_refuses_a_proxy_scoped_key_on_every_operation(world):
    client = key_client(world.a.raw_key)  # the default scope: proxy
    provider = provider_for_org(organization=world.a.org)

    for response in (client.get(LIST), client.post(LIST, NEW, content_type="application/json"),
                     client.get(detail(provider)),
                     client.patch(detail(provider), {"enabled": False},
                                  content_type="application/json"),
                     client.delete(detail(provider))):
        error = assert_error(response, 403, "proxy scope", "admin-scoped key")
        assert error["code"] == "insufficient_scope"
    assert Provider.objects.get(pk=provider.pk).enabled


def test_it_refuses_anonymous_callers(world):
    response = Client().get(LIST)

    assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_checks_ownership(world):
    theirs = provider_for_org(organization=world.b.org)
    for client in (session_for(world.alice), admin_key_client(world.a.org)):
        assert_error(client.get(detail(theirs)), 404, "No such provider")
        assert_error(client.patch(detail(theirs), {"enabled": False},
                                  content_type="application/json"), 404)
        assert_error(client.delete(detail(theirs)), 404)
        assert_error(client.get(LIST, {"org": world.b.org.slug}), 404, "No such organization")
        assert_error(client.post(f"{LIST}?org={world.b.org.slug}", NEW,
                                 content_type="application/json"), 404)
    # And the other way: org B's admin key sees only org B's provider.
    [only] = admin_key_client(world.b.org).get(LIST).json()
    assert only["id"] == theirs.pk
    stored = Provider.objects.get(pk=theirs.pk)
    assert stored.enabled and provider_api_key(credential=stored) == world.b.provider_key
    assert Provider.objects.filter(organization=world.b.org).count() == 1

"""An organization's providers through their services and selectors: many per
organization, one default, keys encrypted, URLs checked, reached through the org."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from organizations.errors import ProviderInUse, ProviderNotFound
from organizations.models import Provider
from organizations.selectors import (
    provider_api_key,
    provider_for_org,
    provider_get_by_name,
    provider_get_for_org,
    providers_for_org,
)
from organizations.services import (
    organization_create,
    provider_add,
    provider_credential_set,
    provider_delete,
    provider_update,
)
from routing.services import TargetSpec, route_set

PUBLIC = "https://8.8.8.8/v1"


def add(org, name, **fields) -> Provider:
    values = {"kind": "openai", "base_url": PUBLIC, "api_key": f"sk-{name}-secret-1234",
              **fields}
    return provider_add(organization=org, name=name, **values)


def test_it_adds_providers_with_encrypted_keys(world):
    azure = add(world.a.org, "azure-east", kind="azure", api_version="2024-10-21",
                base_url="https://8.8.8.8/", api_key="az-key-9876")
    claude = add(world.a.org, "claude", kind="anthropic", api_key="sk-ant-5555")

    stored = Provider.objects.get(pk=azure.pk)
    assert (stored.kind, stored.api_version, stored.base_url, stored.api_key_last4) == (
        "azure", "2024-10-21", "https://8.8.8.8", "9876")
    assert "az-key-9876" not in stored.api_key_encrypted
    assert provider_api_key(credential=stored) == "az-key-9876"
    assert provider_api_key(credential=Provider.objects.get(pk=claude.pk)) == "sk-ant-5555"
    assert not stored.is_default and stored.enabled
    assert [p.name for p in providers_for_org(organization=world.a.org)] == [
        "default", "azure-east", "claude"]


def test_it_makes_the_first_provider_of_an_organization_its_default(db, settings):
    org = organization_create(name="Fresh")

    first = add(org, "first")
    second = add(org, "second")

    assert Provider.objects.get(pk=first.pk).is_default
    assert not Provider.objects.get(pk=second.pk).is_default
    assert provider_for_org(organization=org) == first


def test_it_moves_the_default(world):
    old = provider_for_org(organization=world.a.org)

    new = add(world.a.org, "backup", is_default=True)

    assert provider_for_org(organization=world.a.org) == new
    assert not Provider.objects.get(pk=old.pk).is_default
    assert provider_for_org(organization=world.b.org).organization == world.b.org

    provider_update(provider=Provider.objects.get(pk=old.pk), is_default=True)

    assert provider_for_org(organization=world.a.org) == old
    assert list(Provider.objects.filter(organization=world.a.org, is_default=True)) == [old]


def test_it_has_no_default_provider_when_the_default_is_disabled(world):
    provider_update(provider=provider_for_org(organization=world.a.org), enabled=False)

    assert provider_for_org(organization=world.a.org) is None


def test_it_never_stores_two_defaults(world):
    with pytest.raises(IntegrityError):
        Provider.objects.create(organization=world.a.org, name="second", base_url=PUBLIC,
                                api_key_encrypted="x", is_default=True)


@pytest.mark.parametrize("fields,message", [
    ({"name": "default"}, "already has a provider named 'default'"),
    ({"name": "has space"}, "Invalid provider name"),
    ({"name": "open:ai"}, "Invalid provider name"),
    ({"name": "@alias"}, "Invalid provider name"),
    ({"name": ""}, "Invalid provider name"),
    ({"kind": "claude"}, "Unknown provider kind 'claude'"),
    ({"api_version": "2024-10-21"}, "applies to Azure OpenAI providers only"),
    ({"api_key": ""}, "needs an API key"),
    ({"base_url": "ftp://8.8.8.8/v1"}, "must start with http:// or https://"),
])
def test_it_refuses_a_bad_provider(world, fields, message):
    with pytest.raises(ValidationError, match=message):
        add(world.a.org, fields.pop("name", "second"), **fields)

    assert Provider.objects.filter(organization=world.a.org).count() == 1


def test_it_refuses_a_private_base_url_unless_allowed(world, settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False

    with pytest.raises(ValidationError, match="private, loopback or link-local"):
        add(world.a.org, "local", base_url="http://127.0.0.1:11434/v1")
    with pytest.raises(ValidationError, match="cloud metadata"):
        provider_update(provider=provider_for_org(organization=world.a.org),
                        base_url="http://metadata.google.internal/v1")

    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    assert add(world.a.org, "local", base_url="http://127.0.0.1:11434/v1").pk


def test_it_lets_two_organizations_use_the_same_name(world):
    a = add(world.a.org, "shared")
    b = add(world.b.org, "shared")

    assert provider_get_by_name(organization=world.a.org, name="shared") == a
    assert provider_get_by_name(organization=world.b.org, name="shared") == b


def test_it_updates_only_what_is_given_and_keeps_the_key(world):
    provider = add(world.a.org, "second")
    encrypted = provider.api_key_encrypted

    provider_update(provider=provider, name="renamed", base_url="https://8.8.4.4/v2/",
                    enabled=False)

    stored = Provider.objects.get(pk=provider.pk)
    assert (stored.name, stored.base_url, stored.enabled, stored.kind) == (
        "renamed", "https://8.8.4.4/v2", False, "openai")
    assert stored.api_key_encrypted == encrypted

    provider_update(provider=stored, api_key="sk-new-secret-4444")

    assert provider_api_key(credential=Provider.objects.get(pk=provider.pk)) == (
        "sk-new-secret-4444")


def test_it_refuses_a_bad_update_and_changes_nothing(world):
    provider = add(world.a.org, "second")

    with pytest.raises(ValidationError, match="already has a provider named 'default'"):
        provider_update(provider=provider, name="default")
    with pytest.raises(ValidationError, match="applies to Azure OpenAI providers only"):
        provider_update(provider=Provider.objects.get(pk=provider.pk), api_version="2024-10-21")

    stored = Provider.objects.get(pk=provider.pk)
    assert (stored.name, stored.kind) == ("second", "openai")


def test_it_finds_providers_only_in_their_own_organization(world):
    b_provider = provider_for_org(organization=world.b.org)

    with pytest.raises(ProviderNotFound):
        provider_get_for_org(organization=world.a.org, provider_id=b_provider.pk)
    with pytest.raises(ProviderNotFound, match="No provider named 'nope'"):
        provider_get_by_name(organization=world.a.org, name="nope")
    assert provider_get_for_org(organization=world.b.org, provider_id=b_provider.pk) == (
        b_provider)


def test_it_deletes_a_provider_no_route_uses(world):
    provider = add(world.a.org, "second")

    provider_delete(provider=provider)

    assert not Provider.objects.filter(pk=provider.pk).exists()


def test_it_refuses_to_delete_a_provider_a_route_targets(world):
    provider = add(world.a.org, "second")
    route_set(organization=world.a.org, name="gpt-4o",
              targets=[TargetSpec(provider, "gpt-4o")])

    with pytest.raises(ProviderInUse, match="target of the route\\(s\\) 'gpt-4o'"):
        provider_delete(provider=provider)

    assert Provider.objects.filter(pk=provider.pk).exists()


def test_it_sets_the_default_provider_for_the_single_provider_paths(world):
    second = add(world.a.org, "second", is_default=True)

    provider_credential_set(organization=world.a.org, kind="openai",
                            base_url="https://8.8.4.4/v1", api_key="sk-via-set-3333")

    stored = Provider.objects.get(pk=second.pk)
    assert stored.base_url == "https://8.8.4.4/v1"
    assert provider_api_key(credential=stored) == "sk-via-set-3333"
    assert Provider.objects.filter(organization=world.a.org).count() == 2


def test_it_creates_a_default_provider_named_default(db):
    org = organization_create(name="Fresh")

    provider_credential_set(organization=org, kind="openai", base_url=PUBLIC,
                            api_key="sk-fresh-1111")

    [provider] = Provider.objects.filter(organization=org)
    assert (provider.name, provider.is_default) == ("default", True)

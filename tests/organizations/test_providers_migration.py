"""The data migration from one ProviderCredential per organization to many providers,
run by Django's migration executor on the test database, forward and back."""

import pytest

from organizations import crypto
from organizations.models import Provider
from organizations.selectors import provider_api_key
from tests.migrations import at_migrations, migrate

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("organizations", "0001_initial")]
AFTER = [("organizations", "0002_providers")]


@pytest.fixture
def old_schema():
    """The database at 0001; put back to the latest state whatever the test does."""
    yield from at_migrations(BEFORE)


def test_it_makes_each_credential_its_organizations_default_provider(old_schema):
    organizations = old_schema.get_model("organizations", "Organization").objects
    credentials = old_schema.get_model("organizations", "ProviderCredential").objects
    legacy = organizations.create(name="Legacy", slug="legacy")
    other = organizations.create(name="Other", slug="other")
    bare = organizations.create(name="Bare", slug="bare")
    for org, key in ((legacy, "sk-legacy-4321"), (other, "sk-other-8765")):
        credentials.create(organization=org, kind="openai",
                           base_url=f"https://{org.slug}.example.com/v1",
                           api_key_encrypted=crypto.encrypt(key), api_key_last4=key[-4:])
    updated_at = credentials.get(organization=legacy).updated_at

    migrate(AFTER)

    provider = Provider.objects.get(organization_id=legacy.pk)
    assert (provider.name, provider.kind, provider.base_url, provider.api_key_last4) == (
        "default", "openai", "https://legacy.example.com/v1", "4321")
    assert provider.is_default and provider.enabled and provider.api_version == ""
    assert provider_api_key(credential=provider) == "sk-legacy-4321"
    assert provider.updated_at == updated_at
    assert provider_api_key(credential=Provider.objects.get(organization_id=other.pk)) == (
        "sk-other-8765")
    assert not Provider.objects.filter(organization_id=bare.pk).exists()


def test_it_gives_the_default_provider_back_when_migrated_backwards(old_schema):
    organizations = old_schema.get_model("organizations", "Organization").objects
    org = organizations.create(name="Legacy", slug="legacy")
    old_schema.get_model("organizations", "ProviderCredential").objects.create(
        organization=org, kind="openai", base_url="https://legacy.example.com/v1",
        api_key_encrypted=crypto.encrypt("sk-legacy-4321"), api_key_last4="4321")
    apps = migrate(AFTER)
    apps.get_model("organizations", "Provider").objects.create(
        organization_id=org.pk, name="spare", base_url="https://spare.example.com/v1",
        api_key_encrypted=crypto.encrypt("sk-spare-0000"), api_key_last4="0000")

    apps = migrate(BEFORE)

    [credential] = apps.get_model("organizations", "ProviderCredential").objects.all()
    assert (credential.organization_id, credential.base_url, credential.api_key_last4) == (
        org.pk, "https://legacy.example.com/v1", "4321")
    assert crypto.decrypt(credential.api_key_encrypted) == "sk-legacy-4321"

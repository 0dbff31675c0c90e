"""The management commands as an operator runs them: real processes on the test database."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from organizations import keys
from organizations.models import ApiKey, Membership, Organization, Provider
from organizations.selectors import provider_api_key
from organizations.services import (
    AuthFailure,
    api_key_authenticate,
    api_key_create,
    organization_create,
)
from tests.commands import assert_refused, last_line, manage

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_creates_an_organization_and_prints_its_slug():
    first = last_line(manage("create_org", "Acme Labs"))
    second = last_line(manage("create_org", "Acme Labs"))
    chosen = last_line(manage("create_org", "Other", "--slug", "team-rocket"))

    assert (first, second, chosen) == ("acme-labs", "acme-labs-2", "team-rocket")
    assert Organization.objects.get(slug="acme-labs").name == "Acme Labs"
    assert Organization.objects.get(slug="team-rocket").name == "Other"


def test_it_creates_an_api_key_that_authenticates():
    org = organization_create(name="Org A")

    raw_key = last_line(manage("create_api_key", "--org", org.slug, "--name", "ci"))

    result = api_key_authenticate(raw_key=raw_key)
    assert result.ok
    assert result.api_key.organization == org
    assert result.api_key.name == "ci"
    assert result.api_key.expires_at is None


def test_it_creates_a_key_that_expires():
    org = organization_create(name="Org A")
    before = timezone.now()

    raw_key = last_line(manage("create_api_key", "--org", org.slug, "--expires-days", "7"))

    api_key = api_key_authenticate(raw_key=raw_key).api_key
    assert before + timedelta(days=7) <= api_key.expires_at <= timezone.now() + timedelta(days=7)


def test_it_creates_an_admin_scoped_key():
    org = organization_create(name="Org A")

    admin = last_line(manage("create_api_key", "--org", org.slug, "--scope", "admin"))
    proxy = last_line(manage("create_api_key", "--org", org.slug))

    assert api_key_authenticate(raw_key=admin).api_key.scope == "admin"
    assert api_key_authenticate(raw_key=proxy).api_key.scope == "proxy"
    assert_refused(manage("create_api_key", "--org", org.slug, "--scope", "root"),
                   "invalid choice: 'root'")


def test_it_refuses_a_non_positive_expiry():
    org = organization_create(name="Org A")

    result = manage("create_api_key", "--org", org.slug, "--expires-days", "0")

    assert result.returncode != 0
    assert "--expires-days must be positive" in result.stderr
    assert not ApiKey.objects.exists()


def test_it_sets_then_replaces_the_provider():
    org = organization_create(name="Org A")

    created = last_line(manage("set_provider", "--org", org.slug,
                               "--base-url", "https://8.8.8.8/v1/", "--api-key", "sk-first-1111"))
    first = Provider.objects.get(organization=org)
    replaced = last_line(manage("set_provider", "--org", org.slug,
                                "--base-url", "https://1.1.1.1/v1", "--api-key", "sk-second-2222"))

    assert created == f"{org.slug}: openai at https://8.8.8.8/v1"
    assert provider_api_key(credential=first) == "sk-first-1111"
    assert replaced == f"{org.slug}: openai at https://1.1.1.1/v1"
    [second] = Provider.objects.filter(organization=org)
    assert second.base_url == "https://1.1.1.1/v1"
    assert second.api_key_last4 == "2222"
    assert provider_api_key(credential=second) == "sk-second-2222"


def test_it_adds_providers():
    org = organization_create(name="Org A")

    first = last_line(manage("add_provider", "--org", org.slug, "--name", "openai",
                             "--kind", "openai", "--base-url", "https://8.8.8.8/v1/",
                             "--api-key", "sk-openai-1111"))
    azure = last_line(manage("add_provider", "--org", org.slug, "--name", "azure-east",
                             "--kind", "azure", "--base-url", "https://8.8.4.4",
                             "--api-key", "az-2222", "--api-version", "2024-10-21",
                             "--default"))
    claude = last_line(manage("add_provider", "--org", org.slug, "--name", "claude",
                              "--kind", "anthropic", "--base-url", "https://1.1.1.1",
                              "--api-key", "sk-ant-3333"))

    assert first == f"{org.slug}: openai (openai at https://8.8.8.8/v1), default"
    assert azure == f"{org.slug}: azure-east (azure at https://8.8.4.4), default"
    assert claude == f"{org.slug}: claude (anthropic at https://1.1.1.1)"
    stored = {p.name: p for p in Provider.objects.filter(organization=org)}
    assert [name for name, p in stored.items() if p.is_default] == ["azure-east"]
    assert stored["azure-east"].api_version == "2024-10-21"
    assert provider_api_key(credential=stored["claude"]) == "sk-ant-3333"


@pytest.mark.parametrize("args,words", [
    (("--name", "default"), ["already has a provider named 'default'"]),
    (("--name", "bad:name"), ["Invalid provider name"]),
    (("--api-version", "2024-10-21"), ["applies to Azure OpenAI providers only"]),
    (("--kind", "claude"), ["invalid choice: 'claude'"]),
    (("--base-url", "http://169.254.169.254/latest"), ["private, loopback or link-local"]),
])
def test_it_refuses_a_bad_provider(args, words):
    org = organization_create(name="Org A")
    last_line(manage("set_provider", "--org", org.slug, "--base-url", "https://8.8.8.8/v1",
                     "--api-key", "sk-first-1111"))
    values = {"--name": "second", "--kind": "openai", "--base-url": "https://8.8.8.8/v1",
              "--api-key": "sk-second-2222", **dict(zip(args[::2], args[1::2], strict=True))}

    result = manage("add_provider", "--org", org.slug,
                    *[part for item in values.items() for part in item])

    assert_refused(result, *words)
    assert list(Provider.objects.values_list("name", flat=True)) == ["default"]


def test_it_refuses_a_private_provider_url_unless_allowed():
    org = organization_create(name="Org A")
    args = ("set_provider", "--org", org.slug, "--base-url", "http://127.0.0.1:11434/v1",
            "--api-key", "sk-local-3333")

    refused = manage(*args)
    allowed = manage(*args, COGNITUDE_ALLOW_PRIVATE_UPSTREAMS="true")

    assert refused.returncode != 0
    assert "127.0.0.1" in refused.stderr
    assert "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert last_line(allowed) == f"{org.slug}: openai at http://127.0.0.1:11434/v1"


def test_it_refuses_an_unparsable_provider_url_without_a_traceback():
    org = organization_create(name="Org A")

    result = manage("set_provider", "--org", org.slug, "--base-url", "https://8.8.8.8:99999/v1",
                    "--api-key", "sk-a-4444")

    assert result.returncode != 0
    assert "not a valid URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not Provider.objects.exists()


def test_it_revokes_a_key_by_prefix():
    a = organization_create(name="Org A")
    b = organization_create(name="Org B")
    alices = api_key_create(organization=a).raw_key
    charlies = api_key_create(organization=b).raw_key
    prefix = keys.lookup_prefix(alices)

    output = last_line(manage("revoke_api_key", prefix))

    assert output == f"revoked {prefix}"
    assert api_key_authenticate(raw_key=alices).failure is AuthFailure.REVOKED
    assert api_key_authenticate(raw_key=charlies).ok


def test_it_refuses_to_revoke_an_unknown_prefix():
    result = manage("revoke_api_key", "cog_00000000")

    assert result.returncode != 0
    assert "No API key with prefix 'cog_00000000'" in result.stderr


def test_it_adds_a_member_and_changes_the_role():
    org = organization_create(name="Org A")

    added = last_line(manage("add_member", "--org", org.slug, "--email", "alice@example.com",
                             "--role", "owner"))
    changed = last_line(manage("add_member", "--org", org.slug, "--email", "alice@example.com",
                               "--role", "admin"))
    bob = last_line(manage("add_member", "--org", org.slug, "--email", "bob@example.com"))

    assert added == f"alice@example.com is owner of {org.slug}"
    assert changed == f"alice@example.com is admin of {org.slug}"
    assert bob == f"bob@example.com is member of {org.slug}"
    roles = dict(Membership.objects.filter(organization=org)
                 .values_list("user__email", "role"))
    assert roles == {"alice@example.com": "admin", "bob@example.com": "member"}


def test_it_adds_an_existing_user_found_by_email():
    org = organization_create(name="Org A")
    alice = get_user_model().objects.create_user(username="alice", email="alice@example.com")

    manage("add_member", "--org", org.slug, "--email", "ALICE@example.com", "--role", "owner")

    assert get_user_model().objects.count() == 1
    assert Membership.objects.get(organization=org).user == alice


def test_it_refuses_an_unknown_role():
    org = organization_create(name="Org A")

    result = manage("add_member", "--org", org.slug, "--email", "alice@example.com",
                    "--role", "god")

    assert result.returncode != 0
    assert "invalid choice: 'god'" in result.stderr
    assert not Membership.objects.exists()


@pytest.mark.parametrize("args", [
    ("create_api_key", "--org", "nope"),
    ("set_provider", "--org", "nope", "--base-url", "https://8.8.8.8/v1", "--api-key", "sk-x"),
    ("add_member", "--org", "nope", "--email", "charlie@example.com"),
    ("add_provider", "--org", "nope", "--name", "x", "--kind", "openai",
     "--base-url", "https://8.8.8.8/v1", "--api-key", "sk-x"),
    ("set_route", "--org", "nope", "--model", "gpt-4o", "--target", "x:gpt-4o"),
])
def test_it_exits_non_zero_for_an_unknown_organization(args):
    organization_create(name="Org A")

    result = manage(*args)

    assert result.returncode != 0
    assert result.stdout == ""
    assert "No organization with slug 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not ApiKey.objects.exists()
    assert not Provider.objects.exists()
    assert not Membership.objects.exists()

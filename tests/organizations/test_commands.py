"""The management commands as an operator runs them: real processes on the test database."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
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
from tests import live

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python manage.py ARGS` against the test database, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=live.PROJECT_DIR,
        env={
            **os.environ,
            "DATABASE_URL": live.test_database_url(),
            "COGNITUDE_ENCRYPTION_KEYS": ",".join(settings.COGNITUDE_ENCRYPTION_KEYS),
            "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


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

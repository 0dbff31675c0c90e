"""Secrets never at rest: no raw API key or provider key in the database or the logs."""

import logging
import re
import subprocess
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from organizations import keys
from organizations.models import ApiKey
from organizations.services import (
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    membership_set,
    organization_create,
    provider_credential_set,
    provider_credentials_rotate,
)

RAW_KEY_ON_PAGE = re.compile(r'<code id="raw-key"[^>]*>(cog_[0-9A-Za-z]{38})</code>')


def pg_dump() -> str:
    """The whole test database as an operator's backup would hold it."""
    db = connection.settings_dict
    result = subprocess.run(
        ["pg_dump", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432),
         "-U", db["USER"] or "postgres", db["NAME"]],
        capture_output=True, text=True, timeout=60,
        env={"PGPASSWORD": db["PASSWORD"] or "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def create_secrets_everywhere(world, client) -> tuple[list[str], list[str]]:
    """Keys and provider credentials made every way the project makes them; returns
    (raw API keys, provider keys)."""
    raw_keys = [world.a.raw_key, world.b.raw_key]
    provider_keys = [world.a.provider_key, world.b.provider_key]

    expiring = api_key_create(organization=world.a.org, name="ci", created_by=world.bob,
                              expires_in=timedelta(days=3)).raw_key
    revoked = api_key_create(organization=world.b.org, name="old").raw_key
    api_key_revoke(api_key=ApiKey.objects.get(prefix=keys.lookup_prefix(revoked)))
    raw_keys += [expiring, revoked]

    # Through the admin too: sessions, messages and the admin log are in the database.
    world.alice.is_staff = world.alice.is_superuser = True
    world.alice.save(update_fields=["is_staff", "is_superuser"])
    client.force_login(world.alice)
    page = client.post("/admin/organizations/apikey/add/",
                       {"organization": world.a.org.pk, "name": "admin-made",
                        "scope": "admin"})
    raw_keys.append(RAW_KEY_ON_PAGE.search(page.content.decode()).group(1))
    org_c = organization_create(name="Org C")
    membership_set(organization=org_c, user=world.charlie, role="owner")
    response = client.post("/admin/organizations/provider/add/", {
        "organization": org_c.pk, "name": "openai", "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-admin-made-provider-key-Q7x2",
        "enabled": "on",
    })
    assert response.status_code == 302
    provider_keys.append("sk-admin-made-provider-key-Q7x2")

    # A replaced key and a rotation leave no plaintext behind either.
    provider_credential_set(organization=world.b.org, kind="openai",
                            base_url="http://127.0.0.1:9/v1", api_key="sk-replaced-b-Zz91")
    provider_keys.append("sk-replaced-b-Zz91")
    provider_credentials_rotate()

    for raw in raw_keys:
        api_key_authenticate(raw_key=raw)
    return raw_keys, provider_keys


@pytest.mark.django_db(transaction=True)
def test_it_keeps_raw_keys_and_provider_keys_out_of_a_database_dump(live_world, client):
    raw_keys, provider_keys = create_secrets_everywhere(live_world, client)

    dump = pg_dump()

    # The rows are in the dump: their non-secret parts are.
    for raw in raw_keys:
        assert keys.lookup_prefix(raw) in dump
        assert keys.hash_key(raw) in dump
    assert "sk-admin-made-provider-key-Q7x2"[-4:] in dump
    # The secrets are not, whole or in part.
    for raw in raw_keys:
        assert raw not in dump
        assert raw[keys.LOOKUP_PREFIX_LENGTH:] not in dump
    for provider_key in provider_keys:
        assert provider_key not in dump
        assert provider_key[:-4] not in dump


def test_it_keeps_raw_keys_and_provider_keys_out_of_the_logs(world, client, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")  # Django's own default is INFO

    # Capturing queries makes Django log every SQL statement at DEBUG.
    with CaptureQueriesContext(connection) as queries:
        raw_keys, provider_keys = create_secrets_everywhere(world, client)
        flipped = raw_keys[0][:-1] + ("a" if raw_keys[0][-1] != "a" else "b")
        api_key_authenticate(raw_key=flipped)

    assert len(queries) > 20
    assert any(r.name == "django.db.backends" for r in caplog.records)
    logged = caplog.text + "\n".join(q["sql"] for q in queries)
    for raw in [*raw_keys, flipped]:
        assert raw not in logged
        assert raw[keys.LOOKUP_PREFIX_LENGTH:] not in logged
    for provider_key in provider_keys:
        assert provider_key not in logged
        assert provider_key[:-4] not in logged

"""Provider keys at rest: MultiFernet over COGNITUDE_ENCRYPTION_KEYS, and key rotation."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from organizations import crypto
from organizations.crypto import CredentialDecryptionError
from organizations.models import Provider
from organizations.selectors import provider_api_key
from organizations.services import organization_create, provider_credential_set


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_it_round_trips_a_provider_key():
    token = crypto.encrypt("sk-live-abc123")

    assert "sk-live-abc123" not in token
    assert crypto.decrypt(token) == "sk-live-abc123"


def test_it_encrypts_the_same_key_differently_each_time():
    # A random IV per token: equal provider keys must not look equal at rest.
    assert crypto.encrypt("sk-same") != crypto.encrypt("sk-same")


def test_it_round_trips_unicode_and_long_keys():
    secret = "ключ-" + "x" * 2000

    assert crypto.decrypt(crypto.encrypt(secret)) == secret


def test_it_refuses_to_decrypt_with_the_wrong_key(settings):
    token = crypto.encrypt("sk-live-abc123")
    settings.COGNITUDE_ENCRYPTION_KEYS = [new_key()]

    with pytest.raises(CredentialDecryptionError) as caught:
        crypto.decrypt(token)

    message = str(caught.value)
    assert "COGNITUDE_ENCRYPTION_KEYS" in message
    assert "not configured" in message
    assert "sk-live-abc123" not in message


def test_it_refuses_a_damaged_token():
    token = crypto.encrypt("sk-live-abc123")
    damaged = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]

    with pytest.raises(CredentialDecryptionError):
        crypto.decrypt(damaged)
    with pytest.raises(CredentialDecryptionError):
        crypto.decrypt("")


def test_it_decrypts_with_any_configured_key_and_encrypts_with_the_first(settings):
    old, new = new_key(), new_key()
    settings.COGNITUDE_ENCRYPTION_KEYS = [old]
    old_token = crypto.encrypt("sk-old")

    settings.COGNITUDE_ENCRYPTION_KEYS = [new, old]
    new_token = crypto.encrypt("sk-new")

    assert crypto.decrypt(old_token) == "sk-old"
    settings.COGNITUDE_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(new_token) == "sk-new"
    with pytest.raises(CredentialDecryptionError):
        crypto.decrypt(old_token)


def test_it_raises_for_a_stored_credential_under_a_wrong_key(db, settings):
    org = organization_create(name="Org A")
    credential = provider_credential_set(organization=org, kind="openai",
                                         base_url="https://8.8.8.8/v1", api_key="sk-a-1234")
    settings.COGNITUDE_ENCRYPTION_KEYS = [new_key()]

    with pytest.raises(CredentialDecryptionError, match="COGNITUDE_ENCRYPTION_KEYS"):
        provider_api_key(credential=Provider.objects.get(pk=credential.pk))


def test_it_rotates_stored_credentials_to_the_new_key(db, settings):
    old, new = new_key(), new_key()
    settings.COGNITUDE_ENCRYPTION_KEYS = [old]
    a = organization_create(name="Org A")
    b = organization_create(name="Org B")
    provider_credential_set(organization=a, kind="openai", base_url="https://8.8.8.8/v1",
                            api_key="sk-org-a-1111")
    provider_credential_set(organization=b, kind="openai", base_url="https://8.8.4.4/v1",
                            api_key="sk-org-b-2222")
    before = dict(Provider.objects.values_list("organization_id", "api_key_encrypted"))

    settings.COGNITUDE_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)

    assert out.getvalue().strip().splitlines()[-1] == "re-encrypted 2"
    settings.COGNITUDE_ENCRYPTION_KEYS = [new]
    stored = {c.organization_id: c for c in Provider.objects.all()}
    assert provider_api_key(credential=stored[a.pk]) == "sk-org-a-1111"
    assert provider_api_key(credential=stored[b.pk]) == "sk-org-b-2222"
    assert stored[a.pk].api_key_encrypted != before[a.pk]
    # The last four characters shown in the admin are unchanged.
    assert (stored[a.pk].api_key_last4, stored[b.pk].api_key_last4) == ("1111", "2222")


def test_it_refuses_to_rotate_what_no_configured_key_decrypts(db, settings):
    settings.COGNITUDE_ENCRYPTION_KEYS = [new_key()]
    org = organization_create(name="Org A")
    provider_credential_set(organization=org, kind="openai", base_url="https://8.8.8.8/v1",
                            api_key="sk-org-a-1111")
    before = Provider.objects.get(organization=org).api_key_encrypted

    settings.COGNITUDE_ENCRYPTION_KEYS = [new_key()]
    with pytest.raises(CommandError, match="no configured key decrypts"):
        call_command("rotate_encryption_keys")

    assert Provider.objects.get(organization=org).api_key_encrypted == before

"""An organization whose upstream cannot be used gets a clear error, not a crash."""

import openai
import pytest
from cryptography.fernet import Fernet

from organizations.services import api_key_create, organization_create
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.helpers import ask, client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_says_when_an_organization_has_no_provider(gateway, live_world, fake_upstream):
    org = organization_create(name="No provider yet")
    raw_key = api_key_create(organization=org).raw_key
    client = client_for(gateway.url, raw_key)
    before = fake_upstream.stats()["requests_total"]

    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, "anyone there?")
    assert raised.value.body["code"] == "provider_not_configured"
    with pytest.raises(openai.BadRequestError):
        client.models.list()
    assert fake_upstream.stats()["requests_total"] == before


def test_it_answers_500_when_the_provider_key_cannot_be_decrypted(live_world, fake_upstream):
    # The gateway runs with an encryption key that did not encrypt the stored credential.
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL,
                             "COGNITUDE_ENCRYPTION_KEYS": Fernet.generate_key().decode()})
    try:
        client = client_for(gateway.url, live_world.a.raw_key)
        before = fake_upstream.calls_with(live_world.a.provider_key)
        with pytest.raises(openai.InternalServerError) as raised:
            ask(client, "locked out")
        assert raised.value.body["code"] == "provider_unreadable"
        assert fake_upstream.calls_with(live_world.a.provider_key) == before
    finally:
        gateway.stop()

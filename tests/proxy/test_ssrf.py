"""A provider URL that points into the operator's network is refused when the request
is made, not only when the URL is saved (the name may be re-pointed later)."""

import openai
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.proxy.helpers import ask, client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_refuses_an_upstream_that_resolves_to_a_private_address(live_world, fake_upstream):
    # The credential was accepted while private upstreams were allowed; the gateway now
    # runs without that permission.
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL,
                             "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "false"})
    try:
        client = client_for(gateway.url, live_world.a.raw_key)
        before = fake_upstream.calls_with(live_world.a.provider_key)
        with pytest.raises(openai.APIStatusError) as raised:
            ask(client, "reach inside")
        assert raised.value.status_code == 502
        assert raised.value.body["code"] == "upstream_unavailable"
        assert fake_upstream.calls_with(live_world.a.provider_key) == before
    finally:
        gateway.stop()

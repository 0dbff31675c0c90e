"""COGNITUDE_SERVE: the gateway and the dashboard/admin as separate processes, so that
sign-ins' password hashing never runs on the gateway's event loop."""

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_serves_the_gateway_and_the_django_side_from_separate_processes(live_world):
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_SERVE": "gateway"})
    django_side = start_gateway({"REDIS_URL": TEST_REDIS_URL, "COGNITUDE_SERVE": "django"})
    key = {"Authorization": f"Bearer {live_world.a.raw_key}"}
    try:
        assert httpx.get(f"{gateway.url}/v1/models", headers=key).status_code == 200
        assert httpx.get(f"{gateway.url}/health").status_code == 200
        for path in ("/accounts/login/", "/admin/login/", "/api/keys"):
            refused = httpx.get(f"{gateway.url}{path}", headers=key)
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "not_served_here"

        assert httpx.get(f"{django_side.url}/accounts/login/").status_code == 200
        assert httpx.get(f"{django_side.url}/cache/stats", headers=key).status_code == 200
        refused = httpx.get(f"{django_side.url}/v1/models", headers=key)
        assert refused.status_code == 404
        assert "served by another" in refused.json()["error"]["message"]
    finally:
        gateway.stop()
        django_side.stop()

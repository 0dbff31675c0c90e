"""No raw API key or provider key in any log line at any level: the gateway logging at
DEBUG through hits, misses and refusals, and the Django side (request logging, DRF
errors, sign-ins) at DEBUG. The whole run's logs are checked at its end as well
(tests/conftest.py, pytest_sessionfinish)."""

import logging

import httpx
import pytest
from django.test import Client

from organizations.services import api_key_create, api_key_revoke
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.logs import leaked_lines
from tests.proxy.helpers import ask, client_for


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert secret[-12:] not in text  # nor its tail, which identifies it as well


@pytest.mark.django_db(transaction=True)
def test_it_keeps_keys_out_of_the_gateways_debug_log(live_world):
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL, "LOG_LEVEL": "DEBUG"},
                            args=("--log-level", "debug"))
    revoked = api_key_create(organization=live_world.a.org)
    api_key_revoke(api_key=revoked.api_key)
    try:
        client = client_for(gateway.url, live_world.a.raw_key)
        ask(client, "log me")  # a miss, to the provider with its key
        ask(client, "log me")  # a hit
        for raw in (revoked.raw_key, live_world.a.raw_key[:-1] + "x", "sk-not-ours-12345"):
            httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"},
                       headers={"Authorization": f"Bearer {raw}"})
        httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{not json",
                   headers={"X-API-Key": live_world.a.raw_key})
        httpx.get(f"{gateway.url}/cache/stats", headers={"X-API-Key": live_world.a.raw_key})
        httpx.get(f"{gateway.url}/api/keys", headers={"X-API-Key": revoked.raw_key})
    finally:
        gateway.stop()

    log = gateway.log.read_text()
    # It did speak: the refusals (by the key's public prefix only) and DEBUG chatter.
    assert f"refused API key {revoked.api_key.prefix}: revoked" in log
    assert "Task caching.tasks.cache_entries_store" in log
    assert_no_secret(log, live_world.a.raw_key, revoked.raw_key, live_world.a.provider_key,
                     "sk-not-ours-12345")


@pytest.mark.django_db
def test_it_keeps_keys_out_of_the_django_sides_debug_logging(world, caplog):
    caplog.set_level(logging.DEBUG)
    proxy_key = api_key_create(organization=world.a.org).raw_key
    provider_key = "sk-typed-into-a-form-0042"

    Client(headers={"Authorization": f"Bearer {proxy_key[:-1]}z"}).get("/api/keys")
    Client(headers={"Authorization": f"Bearer {proxy_key}"}).post(
        "/api/providers", {"name": "x", "base_url": "not a url", "api_key": provider_key},
        content_type="application/json")
    owner = Client()
    owner.force_login(world.alice)
    owner.post("/api/providers", {"name": "bad name!", "base_url": "https://e.com/v1",
                                  "api_key": provider_key}, content_type="application/json")
    owner.post(f"/orgs/{world.a.org.slug}/providers/",
               {"name": "", "kind": "openai", "base_url": "x", "api_key": provider_key})
    Client().post("/accounts/login/", {"username": "alice", "password": provider_key})
    Client().post("/admin/login/", {"username": "alice", "password": provider_key})

    assert "Unauthorized: /api/keys" in caplog.text  # Django's request log did speak
    assert_no_secret(caplog.text, proxy_key, provider_key, world.a.raw_key,
                     world.a.provider_key)


def test_it_finds_a_key_in_a_log(tmp_path):
    (tmp_path / "gateway-1.log").write_text(
        "INFO fine\nWARNING refused cog_" + "a" * 38 + "\nsk-org-a-0123456789ab\n")

    assert [line.split(":")[1] for line in leaked_lines(tmp_path)] == ["2", "3"]

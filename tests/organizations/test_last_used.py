"""An API key's last_used_at: written at most once per COGNITUDE_API_KEY_LAST_USED_SECONDS
across processes, not once per request, and shown in the API."""

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from organizations.models import ApiKey
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.organizations.apiclients import key_client, session_for

COUNT_WRITES = """
CREATE TABLE h5_key_writes (id bigint);
CREATE FUNCTION h5_key_written() RETURNS trigger AS $$
BEGIN INSERT INTO h5_key_writes VALUES (NEW.id); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER h5_key_written AFTER UPDATE ON organizations_apikey
    FOR EACH ROW EXECUTE FUNCTION h5_key_written();
"""
STOP_COUNTING = """
DROP TRIGGER IF EXISTS h5_key_written ON organizations_apikey;
DROP FUNCTION IF EXISTS h5_key_written();
DROP TABLE IF EXISTS h5_key_writes;
"""


@pytest.fixture
def key_writes() -> Iterator[callable]:
    """How many times PostgreSQL wrote a row of API keys (a trigger counts them, whoever
    writes: this process or a gateway's)."""
    # The suite runs on PostgreSQL (make test); the count is a PostgreSQL trigger's.
    assert connection.vendor == "postgresql", "these tests count writes with a PostgreSQL trigger"
    with connection.cursor() as cursor:
        cursor.execute(STOP_COUNTING)
        cursor.execute(COUNT_WRITES)

    def count(api_key: ApiKey) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM h5_key_writes WHERE id = %s", [api_key.pk])
            return cursor.fetchone()[0]

    yield count
    with connection.cursor() as cursor:
        cursor.execute(STOP_COUNTING)


@pytest.mark.django_db(transaction=True)
def test_it_writes_last_used_once_for_a_hundred_requests_to_two_processes(live_world,
                                                                          key_writes):
    api_key = ApiKey.objects.get(organization=live_world.a.org, name="default")
    # A key cache of 0 s: every request reads the key from PostgreSQL, the worst case.
    gateway = start_gateway({"REDIS_URL": TEST_REDIS_URL,
                             "COGNITUDE_API_KEY_CACHE_SECONDS": "0"},
                            args=("--workers", "2"))
    headers = {"Authorization": f"Bearer {live_world.a.raw_key}"}

    async def hundred() -> list[int]:
        # 20 at a time on their own connections: both workers load the key at once,
        # each seeing it never used, the race the conditional write settles.
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            answers = await asyncio.gather(*(client.get(f"{gateway.url}/v1/models",
                                                        headers=headers)
                                             for _ in range(100)))
        return [answer.status_code for answer in answers]

    try:
        assert asyncio.run(hundred()) == [200] * 100
    finally:
        gateway.stop()

    assert key_writes(api_key) == 1
    shown = session_for(live_world.alice).get(f"/api/keys/{api_key.pk}").json()
    assert shown["last_used_at"] is not None


@pytest.mark.django_db(transaction=True)
def test_it_writes_last_used_once_for_a_hundred_management_api_calls(live_world,
                                                                     key_writes):
    client = key_client(live_world.a.raw_key)
    api_key = ApiKey.objects.get(organization=live_world.a.org, name="default")

    for _ in range(100):
        assert client.get("/cache/stats").status_code == 200

    assert key_writes(api_key) == 1
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is not None

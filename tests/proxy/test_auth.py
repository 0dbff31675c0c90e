"""From a key to its caller on /v1, as many concurrent requests meet it."""

import asyncio
import threading
import time

import httpx
import psycopg
import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


async def _burst(url: str, key: str, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as c:
        answers = await asyncio.gather(*(
            c.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "gpt-4o-mini",
                         "messages": [{"role": "user", "content": "one load"}]})
            for _ in range(count)))
    return [a.status_code for a in answers]


def _waiting_on_locks(database: psycopg.Connection) -> int:
    return database.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'").fetchone()[0]


def test_it_loads_a_key_once_for_a_burst_of_requests_with_it(gateway, live_world):
    # A burst with a key the gateway has not seen: one load, which every request waits
    # for; not one each, queued behind the few database threads (and judged a dead
    # database when the queue outlasts COGNITUDE_DATABASE_TIMEOUT).
    params = connection.get_connection_params()
    dsn = psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items()
                                             if k in ("host", "port", "user", "dbname")})
    with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as watcher:
        # Holding the key table makes every load of it wait where it can be counted.
        locker.execute("LOCK TABLE organizations_apikey IN ACCESS EXCLUSIVE MODE")
        statuses: list[int] = []
        sender = threading.Thread(target=lambda: statuses.extend(
            asyncio.run(_burst(gateway.url, live_world.a.raw_key, 40))))
        sender.start()
        deadline = time.monotonic() + 10
        while _waiting_on_locks(watcher) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # every request has arrived and asked by now
        waiting = _waiting_on_locks(watcher)
        locker.rollback()
        sender.join()
    assert waiting == 1
    assert statuses == [200] * 40

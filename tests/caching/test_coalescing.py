"""Identical concurrent misses make one upstream call, in one process and across two."""

import asyncio

import openai
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "coalesce me [[fault:delay_ms=300]]"


async def _many(urls: list[str], raw_key: str, n: int, content: str, *,
                return_exceptions: bool = False):
    clients = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=raw_key, max_retries=0,
                                  timeout=10) for url in urls]

    async def one(i: int):
        raw = await clients[i % len(clients)].chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
        return raw.headers["x-cognitude-cache"], raw.parse().choices[0].message.content

    try:
        return await asyncio.gather(*(one(i) for i in range(n)),
                                    return_exceptions=return_exceptions)
    finally:
        for client in clients:
            await client.close()


def test_it_makes_one_upstream_call_for_twenty_identical_misses(
        gateway, live_world, fake_upstream):
    before = fake_upstream.calls_with(live_world.a.provider_key)
    results = asyncio.run(_many([gateway.url], live_world.a.raw_key, 20, SLOW))
    assert fake_upstream.calls_with(live_world.a.provider_key) == before + 1
    assert len({content for _, content in results}) == 1
    assert sorted(outcome for outcome, _ in results).count("MISS") == 1


def test_it_coalesces_across_processes(gateway, live_world, fake_upstream):
    second = start_gateway({"REDIS_URL": TEST_REDIS_URL})
    try:
        before = fake_upstream.calls_with(live_world.a.provider_key)
        results = asyncio.run(
            _many([gateway.url, second.url], live_world.a.raw_key, 20, SLOW + " twice"))
    finally:
        second.stop()
    assert fake_upstream.calls_with(live_world.a.provider_key) == before + 1
    assert len({content for _, content in results}) == 1


def test_it_lets_waiters_ask_for_themselves_when_the_leader_fails(
        gateway, live_world, fake_upstream):
    before = fake_upstream.calls_with(live_world.a.provider_key)
    failing = "fail together [[fault:status=500]] [[fault:delay_ms=200]]"
    # Every answer awaited: the first 500 must not close the client while the waiters'
    # own calls are still on their way upstream.
    answers = asyncio.run(_many([gateway.url], live_world.a.raw_key, 3, failing,
                                return_exceptions=True))
    assert [type(answer) for answer in answers] == [openai.InternalServerError] * 3
    # Errors are never shared or cached: the leader's 500 sends each waiter upstream.
    assert fake_upstream.calls_with(live_world.a.provider_key) == before + 3

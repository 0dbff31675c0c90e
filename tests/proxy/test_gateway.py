"""The cache seen from an application: the official SDK against the live gateway."""

import asyncio
import time
from datetime import timedelta

import httpx
import openai
import pytest

from caching.models import CacheEntry
from tests.proxy.helpers import ask, client_for, wait_for_entries

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_the_second_identical_request_from_redis(gateway, live_world, fake_upstream):
    client = client_for(gateway.url, live_world.a.raw_key)
    before = fake_upstream.calls_with(live_world.a.provider_key)

    first, first_headers = ask(client, "What is a cache?")
    second, second_headers = ask(client, "What is a cache?")

    assert first_headers["x-cognitude-cache"] == "MISS"
    assert second_headers["x-cognitude-cache"] == "HIT"
    assert second_headers["x-cognitude-cache-tier"] == "redis"
    assert first_headers["x-request-id"] != second_headers["x-request-id"]
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id == first.id
    assert fake_upstream.calls_with(live_world.a.provider_key) == before + 1


def test_it_stores_the_miss_in_the_cold_tier_and_counts_hits(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    ask(client, "cold tier please", model="gpt-4o")
    [entry] = wait_for_entries(live_world.a.org, 1)
    assert entry.model == "gpt-4o"
    assert entry.endpoint == "chat/completions"
    assert entry.request["messages"][0]["content"] == "cold tier please"
    assert entry.completion_tokens > 0

    ask(client, "cold tier please", model="gpt-4o")
    ask(client, "cold tier please", model="gpt-4o")
    deadline = time.monotonic() + 5
    while CacheEntry.objects.get(pk=entry.pk).hits < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    entry.refresh_from_db()
    assert entry.hits == 2
    assert entry.last_hit_at is not None


def test_it_reports_stats_that_move_with_hits(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    headers = {"X-API-Key": live_world.a.raw_key}
    empty = httpx.get(f"{gateway.url}/cache/stats", headers=headers).json()
    assert empty == {"total_entries": 0, "total_hits": 0, "hit_rate": 0.0,
                     "redis_available": True, "redis_entries": 0, "redis_hits": 0}

    for _ in range(4):
        ask(client, "stats question")
    ask(client, "another question")
    wait_for_entries(live_world.a.org, 2)
    deadline = time.monotonic() + 5
    while True:
        stats = httpx.get(f"{gateway.url}/cache/stats", headers=headers).json()
        if stats["total_hits"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stats == {"total_entries": 2, "total_hits": 3, "hit_rate": 0.6,
                     "redis_available": True, "redis_entries": 2, "redis_hits": 3}


def test_it_keeps_organizations_apart(gateway, live_world, fake_upstream):
    a = client_for(gateway.url, live_world.a.raw_key)
    b = client_for(gateway.url, live_world.b.raw_key)
    before_a = fake_upstream.calls_with(live_world.a.provider_key)
    before_b = fake_upstream.calls_with(live_world.b.provider_key)

    _, a_headers = ask(a, "the same question")
    _, b_headers = ask(b, "the same question")

    assert a_headers["x-cognitude-cache"] == "MISS"
    assert b_headers["x-cognitude-cache"] == "MISS"
    assert fake_upstream.calls_with(live_world.a.provider_key) == before_a + 1
    assert fake_upstream.calls_with(live_world.b.provider_key) == before_b + 1
    assert len(wait_for_entries(live_world.a.org, 1)) == 1
    assert len(wait_for_entries(live_world.b.org, 1)) == 1
    b_stats = httpx.get(f"{gateway.url}/cache/stats",
                        headers={"Authorization": f"Bearer {live_world.b.raw_key}"}).json()
    assert b_stats["total_entries"] == 1


def test_it_never_lets_one_org_clear_another(gateway, live_world):
    a = client_for(gateway.url, live_world.a.raw_key)
    b = client_for(gateway.url, live_world.b.raw_key)
    ask(a, "keep me")
    ask(b, "clear me")
    wait_for_entries(live_world.a.org, 1)
    wait_for_entries(live_world.b.org, 1)

    response = httpx.delete(f"{gateway.url}/cache",
                            headers={"X-API-Key": live_world.b.raw_key})
    assert response.status_code == 200
    assert response.json() == {"cleared": "all", "deleted_entries": 1}

    assert CacheEntry.objects.filter(organization=live_world.a.org).count() == 1
    assert CacheEntry.objects.filter(organization=live_world.b.org).count() == 0
    assert ask(a, "keep me")[1]["x-cognitude-cache-tier"] == "redis"
    assert ask(b, "clear me")[1]["x-cognitude-cache"] == "MISS"


def test_it_clears_only_the_hot_tier_when_asked(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    ask(client, "hot only")
    wait_for_entries(live_world.a.org, 1)

    response = httpx.delete(f"{gateway.url}/cache?tier=redis",
                            headers={"X-API-Key": live_world.a.raw_key})
    assert response.json() == {"cleared": "redis", "deleted_entries": 0}

    _, headers = ask(client, "hot only")
    assert headers["x-cognitude-cache"] == "HIT"
    assert headers["x-cognitude-cache-tier"] == "postgres"
    # The cold hit was promoted back to Redis.
    assert ask(client, "hot only")[1]["x-cognitude-cache-tier"] == "redis"


def test_it_refuses_cache_endpoints_without_a_good_key(gateway, live_world):
    for method, path in (("GET", "/cache/stats"), ("DELETE", "/cache")):
        response = httpx.request(method, f"{gateway.url}{path}",
                                 headers={"X-API-Key": "cog_nope"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    bad_tier = httpx.delete(f"{gateway.url}/cache?tier=everything",
                            headers={"X-API-Key": live_world.a.raw_key})
    assert bad_tier.status_code == 400
    assert bad_tier.json()["error"]["param"] == "tier"


@pytest.mark.parametrize("first,second", [
    ({"max_tokens": 10}, {"max_tokens": 11}),
    ({"tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}]},
     {"tool_choice": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}),
    ({"response_format": {"type": "text"}}, {"response_format": {"type": "json_object"}}),
    ({}, {"temperature": 0}),
    ({"seed": 1}, {"seed": 2}),
])
def test_it_keys_requests_that_differ_in_what_changes_the_answer(
        gateway, live_world, first, second):
    client = client_for(gateway.url, live_world.a.raw_key)
    assert ask(client, "key fields", **first)[1]["x-cognitude-cache"] == "MISS"
    assert ask(client, "key fields", **second)[1]["x-cognitude-cache"] == "MISS"
    assert ask(client, "key fields", **first)[1]["x-cognitude-cache"] == "HIT"


def test_it_keys_namespaces_apart(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    ns = {"X-Cognitude-Cache-Namespace": "tenant-42"}
    assert ask(client, "namespaced")[1]["x-cognitude-cache"] == "MISS"
    assert ask(client, "namespaced", extra_headers=ns)[1]["x-cognitude-cache"] == "MISS"
    assert ask(client, "namespaced", extra_headers=ns)[1]["x-cognitude-cache"] == "HIT"


def test_it_ignores_user_stream_and_key_order(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)
    ask(client, "same answer", user="someone", temperature=0.5)
    _, headers = ask(client, "same answer", user="someone-else", temperature=0.5)
    assert headers["x-cognitude-cache"] == "HIT"

    reordered = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"temperature":0.5,"messages":[{"content":"same answer","role":"user"}],'
                b'"model":"gpt-4o-mini"}',
        headers={"Authorization": f"Bearer {live_world.a.raw_key}"},
    )
    assert reordered.headers["x-cognitude-cache"] == "HIT"

    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", temperature=0.5, stream=True,
        messages=[{"role": "user", "content": "same answer"}]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reordered.json()["choices"][0]["message"]["content"]


def test_it_honours_no_cache_no_store_and_max_age(gateway, live_world, fake_upstream, redis_client):
    client = client_for(gateway.url, live_world.a.raw_key)
    count = lambda: fake_upstream.calls_with(live_world.a.provider_key)  # noqa: E731
    before = count()

    _, headers = ask(client, "controls", extra_headers={"Cache-Control": "no-store"})
    assert headers["x-cognitude-cache"] == "MISS"
    _, headers = ask(client, "controls")
    assert headers["x-cognitude-cache"] == "MISS"  # the no-store answer was not kept
    _, headers = ask(client, "controls", extra_headers={"Cache-Control": "no-cache"})
    assert headers["x-cognitude-cache"] == "BYPASS"
    assert count() == before + 3
    assert ask(client, "controls")[1]["x-cognitude-cache"] == "HIT"

    ask(client, "short lived", extra_headers={"Cache-Control": "max-age=60"})
    [key] = [k for k in redis_client.keys(f"llm_cache:{{{live_world.a.org.pk}}}:*")
             if 0 < redis_client.ttl(k) <= 60]
    [entry] = [e for e in wait_for_entries(live_world.a.org, 2)
               if e.request["messages"][0]["content"] == "short lived"]
    # The asked-for max-age binds the cold tier too (the default TTL does not).
    assert entry.expires_at - entry.created_at == timedelta(seconds=60)


def test_it_serves_the_async_client(gateway, live_world):
    async def twice():
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1",
                                    api_key=live_world.a.raw_key, max_retries=0)
        results = []
        for _ in range(2):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "async"}])
            results.append((raw.headers["x-cognitude-cache"], raw.parse()))
        await client.close()
        return results

    (first_outcome, first), (second_outcome, second) = asyncio.run(twice())
    assert (first_outcome, second_outcome) == ("MISS", "HIT")
    assert first.choices[0].message.content == second.choices[0].message.content

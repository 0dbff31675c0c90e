"""The cross-tenant read guard: an entry carries its organization, and a lookup refuses
an entry of another organization even when it sits under the caller's own key (a bug
in the key, a restored dump, a hand-made Redis write), in either tier.

Committed data (live_world): the cold lookup runs on the gateway's database threads,
which cannot see a test's open transaction."""

import time

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from caching.hot import hot_tier
from caching.keys import redis_index_key, redis_key
from caching.models import CacheEntry
from caching.payload import CachedResponse, pack
from caching.services import cache_lookup
from tests.conftest import TEST_REDIS_URL
from tests.proxy.helpers import ask, client_for

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "a" * 64


def answer_of(org_id: int) -> CachedResponse:
    return CachedResponse(org_id=org_id, prompt_tokens=3, completion_tokens=4,
                          json_body=b'{"answer": "only for org %d"}' % org_id,
                          sse_body=b"", usage_event=b"")


def put_hot(org_id: int, raw: bytes) -> None:
    async def put() -> None:
        await hot_tier().set(org_id, KEY, raw, 60)

    async_to_sync(put)()


def lookup(org_id: int):
    async def look():
        return await cache_lookup(org_id=org_id, key_hash=KEY, ttl=60)

    return async_to_sync(look)()


@pytest.fixture(params=["redis", "memory"])
def tier(request, settings):
    settings.REDIS_URL = TEST_REDIS_URL if request.param == "redis" else ""
    return request.param


def test_it_serves_an_organizations_own_hot_entry(live_world, tier):
    a = live_world.a.org.pk
    put_hot(a, pack(answer_of(a)))

    hit = lookup(a)

    assert hit is not None and hit.tier == tier
    assert hit.response == answer_of(a)


def test_it_refuses_another_organizations_hot_entry(live_world, tier):
    a, b = live_world.a.org.pk, live_world.b.org.pk
    put_hot(b, pack(answer_of(a)))  # A's answer under B's key

    assert lookup(b) is None


def test_it_refuses_another_organizations_cold_entry_and_does_not_promote_it(live_world,
                                                                              settings):
    settings.REDIS_URL = TEST_REDIS_URL
    a, b = live_world.a.org, live_world.b.org
    CacheEntry.objects.create(organization=b, key_hash=KEY, endpoint="chat/completions",
                              model="gpt-4o", request={}, payload=pack(answer_of(a.pk)),
                              created_at=timezone.now())

    assert lookup(b.pk) is None
    # Refused, not copied into B's hot tier for the next lookup to find.
    assert lookup(b.pk) is None

    CacheEntry.objects.filter(organization=b).update(payload=pack(answer_of(b.pk)))
    hit = lookup(b.pk)
    assert hit is not None and hit.tier == "postgres"
    assert hit.response == answer_of(b.pk)


def test_it_gives_org_b_a_miss_not_org_as_answer_through_the_gateway(
        gateway, live_world, fake_upstream, redis_client):
    a, b = live_world.a, live_world.b
    question = "What did org A ask?"
    _, first = ask(client_for(gateway.url, a.raw_key), question)
    assert first["x-cognitude-cache"] == "MISS"
    [key_hash] = [h.decode() for h in redis_client.zrange(redis_index_key(a.org.pk), 0, -1)]
    # A's stored bytes, planted under B's key for the very same request.
    redis_client.set(redis_key(b.org.pk, key_hash), redis_client.get(redis_key(a.org.pk, key_hash)))

    asked_at = time.monotonic()
    answer, headers = ask(client_for(gateway.url, b.raw_key), question)
    # Answered as a miss at once, not after the coalescing timeout (30 s): nobody else
    # is producing B's answer, so there is nothing to wait for.
    assert time.monotonic() - asked_at < 10

    assert headers["x-cognitude-cache"] == "MISS"
    assert fake_upstream.calls_with(b.provider_key) == 1
    assert answer.choices[0].message.content.startswith(f"Echo: {question}")
    # B now has its own answer, and a hit on it.
    assert ask(client_for(gateway.url, b.raw_key), question)[1]["x-cognitude-cache"] == "HIT"
    assert fake_upstream.calls_with(b.provider_key) == 1

"""The cache page: the seed's stats, the TTL, and clearing behind a confirmation.

Committed data (live_world): cache_stats and cache_clear run their queries on the
gateway's own database threads, which cannot see a test's open transaction."""

import re

import pytest
from asgiref.sync import async_to_sync

from analytics.services import request_logs_store
from caching.hot import hot_tier
from caching.models import CacheEntry
from caching.outcomes import CacheOutcome
from tests.analytics.helpers import make_event
from tests.dashboard.helpers import make_cache_entry

pytestmark = pytest.mark.django_db(transaction=True)


def stat(html: str, name: str) -> str:
    match = re.search(rf'data-stat="{name}">([^<]*)<', html)
    assert match, name
    return match.group(1)


def put_hot_entry(org_id: int) -> None:
    async def put() -> None:
        await hot_tier().set(org_id, "f" * 64, b"payload", 60)

    async_to_sync(put)()


def test_it_shows_the_seeds_stats(live_world, client):
    make_cache_entry(live_world.a.org)
    make_cache_entry(live_world.a.org)
    make_cache_entry(live_world.b.org)
    # Through the pipeline's store, which counts the lookups that /cache/stats shows.
    request_logs_store(events=[
        *(make_event(org_id=live_world.a.org.pk, cache_outcome=outcome) for outcome in (
            CacheOutcome.HIT_REDIS, CacheOutcome.HIT_REDIS, CacheOutcome.HIT_REDIS,
            CacheOutcome.HIT_POSTGRES, CacheOutcome.MISS, CacheOutcome.MISS)),
        make_event(org_id=live_world.b.org.pk, cache_outcome=CacheOutcome.HIT_REDIS)])
    client.force_login(live_world.bob)

    html = client.get(f"/orgs/{live_world.a.org.slug}/cache/").content.decode()

    assert stat(html, "total_entries") == "2"
    assert stat(html, "total_hits") == "4"
    assert stat(html, "hit_rate") == "66.7%"
    assert stat(html, "redis_available") == "Available"
    assert "1 day" in html and "the site default" in html


def test_it_shows_the_organizations_own_ttl(live_world, client):
    live_world.a.org.cache_ttl_seconds = 2 * 3600
    live_world.a.org.save(update_fields=["cache_ttl_seconds"])
    client.force_login(live_world.alice)

    html = client.get(f"/orgs/{live_world.a.org.slug}/cache/").content.decode()

    assert "2 h" in html and "the site default" not in html


@pytest.mark.parametrize("tier,words", [("all", "from Redis and from PostgreSQL"),
                                        ("redis", "PostgreSQL keeps them")])
def test_it_asks_for_confirmation_first(live_world, client, tier, words):
    make_cache_entry(live_world.a.org)
    client.force_login(live_world.alice)

    response = client.get(f"/orgs/{live_world.a.org.slug}/cache/clear/?tier={tier}")

    html = response.content.decode()
    assert words in html
    assert f'name="tier" value="{tier}"' in html
    assert 'method="post"' in html
    assert CacheEntry.objects.filter(organization=live_world.a.org).count() == 1


def test_it_clears_both_tiers(live_world, client):
    make_cache_entry(live_world.a.org)
    make_cache_entry(live_world.b.org)
    put_hot_entry(live_world.a.org.pk)
    client.force_login(live_world.alice)

    response = client.post(f"/orgs/{live_world.a.org.slug}/cache/clear/", {"tier": "all"},
                           follow=True)

    html = response.content.decode()
    assert "1 entry in PostgreSQL" in html
    assert stat(html, "total_entries") == "0"
    assert stat(html, "redis_entries") == "0"
    assert CacheEntry.objects.filter(organization=live_world.b.org).count() == 1


def test_it_clears_the_hot_tier_only(live_world, client):
    make_cache_entry(live_world.a.org)
    put_hot_entry(live_world.a.org.pk)
    client.force_login(live_world.alice)
    before = client.get(f"/orgs/{live_world.a.org.slug}/cache/").content.decode()

    response = client.post(f"/orgs/{live_world.a.org.slug}/cache/clear/",
                           {"tier": "redis"}, follow=True)

    html = response.content.decode()
    assert stat(before, "redis_entries") == "1"
    assert stat(html, "redis_entries") == "0"
    assert stat(html, "total_entries") == "1"


def test_it_refuses_an_unknown_tier(live_world, client):
    make_cache_entry(live_world.a.org)
    client.force_login(live_world.alice)

    response = client.post(f"/orgs/{live_world.a.org.slug}/cache/clear/", {"tier": "disk"})

    assert response.status_code == 200  # back to the confirmation, nothing cleared
    assert CacheEntry.objects.filter(organization=live_world.a.org).count() == 1

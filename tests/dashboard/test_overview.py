"""The overview: totals, the hit-rate chart and the top recommendations of a period."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from analytics.recommendations import recommendations_for
from caching.outcomes import CacheOutcome
from tests.dashboard.helpers import make_request_log

pytestmark = pytest.mark.django_db
POINT = re.compile(r'<circle class="point[^"]*"')


def overview(client, world, **query) -> str:
    client.force_login(world.alice)
    response = client.get(f"/orgs/{world.a.org.slug}/", query)
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_the_periods_totals(world, client):
    for outcome in (CacheOutcome.HIT_REDIS, CacheOutcome.HIT_REDIS, CacheOutcome.HIT_POSTGRES):
        make_request_log(world.a.org, cache_outcome=outcome, cost=Decimal(0),
                         saved_cost=Decimal("0.25"), latency_ms=2.0)
    make_request_log(world.a.org, cost=Decimal("1.50"), latency_ms=800.0)
    make_request_log(world.a.org, status=500, cost=Decimal(0), prompt_tokens=0,
                     completion_tokens=0)

    html = overview(client, world)

    assert ">5</p>" in html  # requests
    assert "60.0%" in html  # 3 hits of 3 hits + 2 misses
    assert "$1.50" in html  # spend
    assert "$0.75" in html  # saved
    assert "20.0%" in html  # error rate
    assert "Redis 2 · PostgreSQL 1" in html


def test_it_leaves_out_other_organizations_and_older_records(world, client):
    make_request_log(world.b.org, cost=Decimal("9.99"))
    make_request_log(world.a.org, cost=Decimal("7.77"),
                     created_at=timezone.now() - timedelta(days=2))

    html = overview(client, world)

    assert "$9.99" not in html
    assert "$7.77" not in html
    assert "$7.77" in overview(client, world, period="7d")


@pytest.mark.parametrize("period,points", [("24h", 24), ("7d", 168), ("30d", 30),
                                           ("bogus", 24)])
def test_it_draws_one_point_per_bucket(world, client, period, points):
    make_request_log(world.a.org)

    html = overview(client, world, period=period)

    assert len(POINT.findall(html)) == points
    assert f'data-points="{points}"' in html


def test_it_draws_the_hit_rate_by_tier_with_axes_and_units(world, client):
    make_request_log(world.a.org, cache_outcome=CacheOutcome.HIT_REDIS)
    make_request_log(world.a.org, cache_outcome=CacheOutcome.HIT_POSTGRES)
    make_request_log(world.a.org)

    html = overview(client, world)

    assert "Hit rate (%)" in html
    assert "Time (UTC, one point per hour)" in html
    assert ">100%</text>" in html and ">0%</text>" in html
    assert 'class="tier-redis"' in html and 'class="tier-postgres"' in html
    assert "hit rate 67% (Redis 1, PostgreSQL 1, other 0 hits; 1 misses; 3 requests)" in html


def top_recommendations(client, world, **query) -> str:
    response = client.get(f"/orgs/{world.a.org.slug}/top-recommendations/", query)
    assert response.status_code == 200
    return response.content.decode()


def test_it_loads_the_recommendations_after_the_page(world, client):
    html = overview(client, world, period="7d")

    assert f'data-fragment="/orgs/{world.a.org.slug}/top-recommendations/?period=7d"' in html


def test_it_shows_the_top_recommendations_with_dollars(world, client):
    for _ in range(25):
        make_request_log(world.a.org, cache_bypassed=True, cache_key="a" * 64,
                         cache_outcome=CacheOutcome.BYPASS, cost=Decimal("0.10"))
    client.force_login(world.bob)

    html = top_recommendations(client, world)

    [found] = recommendations_for(organization=world.a.org, days=1)
    assert found.title in html
    assert f"Saves about ${found.monthly_saving:,} a month" in html


def test_it_says_when_there_is_nothing_to_recommend(world, client):
    client.force_login(world.alice)

    assert "Nothing to recommend" in top_recommendations(client, world, period="30d")


def test_it_shares_the_totals_for_a_minute(world, client):
    make_request_log(world.a.org)
    assert ">1</p>" in overview(client, world)

    make_request_log(world.a.org)
    cached = overview(client, world)
    cache.clear()

    assert ">1</p>" in cached
    assert ">2</p>" in overview(client, world)

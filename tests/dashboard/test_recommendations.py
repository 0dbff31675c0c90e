"""The full list of recommendations, with their evidence."""

from decimal import Decimal

import pytest

from analytics.recommendations import recommendations_for
from caching.outcomes import CacheOutcome
from tests.dashboard.helpers import make_request_log

pytestmark = pytest.mark.django_db


def test_it_lists_every_recommendation_with_its_evidence(world, client):
    for _ in range(30):
        make_request_log(world.a.org, cache_bypassed=True, cache_key="b" * 64,
                         cache_outcome=CacheOutcome.BYPASS, cost=Decimal("0.10"))
    client.force_login(world.bob)

    html = client.get(f"/orgs/{world.a.org.slug}/recommendations/").content.decode()

    found = recommendations_for(organization=world.a.org, days=7)
    assert found
    for rec in found:
        assert rec.title in html
        for name in rec.evidence:
            assert f"<dt>{name}</dt>" in html
    assert "avoidable_requests" in html


def test_it_says_when_there_is_nothing(world, client):
    client.force_login(world.alice)

    html = client.get(f"/orgs/{world.a.org.slug}/recommendations/?period=30d").content.decode()

    assert "Nothing to recommend" in html

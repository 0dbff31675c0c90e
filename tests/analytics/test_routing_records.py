"""What analytics keeps of smart routing: the decision on each record, the asked cost and
routing's saving as exact sums, the tier breakdown, and feedback, all per organization."""

from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal
from importlib import import_module

import orjson
import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from analytics.events import RequestEvent
from analytics.models import Feedback, RequestLog
from analytics.prices import PriceBook
from analytics.selectors import routing_by_tier, usage_breakdown
from analytics.services import RequestNotFound, feedback_set, request_logs_store
from caching.outcomes import CacheOutcome
from tests.analytics.helpers import make_event

pytestmark = pytest.mark.django_db
ROUTE_FIELDS = ("route_mode", "route_tier", "route_score", "route_model", "route_baseline")


@pytest.fixture(autouse=True)
def prices(db):
    import_module("analytics.migrations.0003_model_prices_data").add_prices(django_apps, None)
    import_module("analytics.migrations.0009_model_capabilities_data").add_capabilities(
        django_apps, None)


def routed(org, **fields) -> RequestEvent:
    return make_event(**{"org_id": org.pk, "model_requested": "auto",
                         "model_used": "gpt-4o-mini", "route_mode": "on",
                         "route_tier": "simple", "route_score": 0.12,
                         "route_model": "gpt-4o-mini", "route_baseline": "gpt-4o", **fields})


def test_it_loads_an_event_spooled_before_routing_existed(world):
    old = {k: v for k, v in asdict(make_event(org_id=world.a.org.pk)).items()
           if k not in ROUTE_FIELDS}

    event = RequestEvent.from_wire(orjson.loads(orjson.dumps(old)))

    assert (event.route_mode, event.route_score) == ("", None)
    assert request_logs_store(events=[event]) == 1
    row = RequestLog.objects.get()
    assert (row.route_tier, row.asked_cost, row.routing_saved_cost) == ("", None, None)


def test_it_prices_what_was_asked_and_what_routing_saved_exactly(world):
    org = world.a.org
    miss, hit, shadow, failed = (
        routed(org), routed(org, cache_outcome=CacheOutcome.HIT_REDIS),
        routed(org, route_mode="shadow", model_used="gpt-4o"), routed(org, status=500))

    request_logs_store(events=[miss, hit, shadow, failed])

    prices, now = PriceBook.load(), timezone.now()
    big = prices.cost("gpt-4o", now, 1000, 500)
    small = prices.cost("gpt-4o-mini", now, 1000, 500)
    rows = {r.request_id: r for r in RequestLog.objects.all()}
    assert (rows[miss.request_id].cost, rows[miss.request_id].asked_cost,
            rows[miss.request_id].routing_saved_cost) == (small, big, big - small)
    # A hit: the cache saved the routed model's price, routing the rest.
    assert (rows[hit.request_id].saved_cost, rows[hit.request_id].routing_saved_cost) == (
        small, big - small)
    # Shadow: the asked model answered; the saving is what the router's choice would be.
    assert (rows[shadow.request_id].cost, rows[shadow.request_id].routing_saved_cost) == (
        big, big - small)
    assert rows[failed.request_id].routing_saved_cost == 0
    assert rows[miss.request_id].route_score == 0.12


def test_it_breaks_usage_down_by_tier_for_the_organization_only(world):
    request_logs_store(events=[routed(world.a.org), routed(world.a.org, route_tier="complex",
                                                           model_used="gpt-4o"),
                               routed(world.b.org)])
    now = timezone.now()

    rows = usage_breakdown(organization=world.a.org, start=now - timedelta(hours=1),
                           end=now + timedelta(minutes=1), by="tier")
    tiers = routing_by_tier(organization=world.a.org, start=now - timedelta(hours=1),
                            end=now + timedelta(minutes=1))

    assert sorted((row["key"], row["requests"]) for row in rows) == [("complex", 1),
                                                                     ("simple", 1)]
    assert [(t["tier"], t["requests"]) for t in tiers] == [("simple", 1), ("complex", 1)]
    assert tiers[1]["routing_saved"] == 0  # complex on gpt-4o: nothing saved


def test_it_keeps_one_feedback_per_request_and_only_for_the_callers_requests(world):
    event = routed(world.a.org)
    request_logs_store(events=[event])

    _, created = feedback_set(org_id=world.a.org.pk, api_key_id=None,
                              request_id=event.request_id, score=0.0, rating="down")
    _, again = feedback_set(org_id=world.a.org.pk, api_key_id=None,
                            request_id=event.request_id, score=1.0, rating="up", note="ok")
    with pytest.raises(RequestNotFound):
        feedback_set(org_id=world.b.org.pk, api_key_id=None, request_id=event.request_id,
                     score=1.0)

    assert created and not again
    assert list(Feedback.objects.values_list("organization", "score", "rating", "note")) == [
        (world.a.org.pk, 1.0, "up", "ok")]
    now = timezone.now()
    [tier] = routing_by_tier(organization=world.a.org, start=now - timedelta(hours=1),
                             end=now + timedelta(minutes=1))
    assert (tier["feedback"], tier["up_share"], tier["mean_score"]) == (1, 1.0, 1.0)
    assert routing_by_tier(organization=world.b.org, start=now - timedelta(hours=1),
                           end=now + timedelta(minutes=1)) == []
    assert Decimal(0) == sum(row.routing_saved_cost or 0 for row in RequestLog.objects.filter(
        organization=world.b.org))

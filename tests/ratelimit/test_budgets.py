"""Budgets as a client meets them: reserved before the call, settled with the real cost,
rebuilt from the records when Redis loses them."""

from decimal import Decimal

import pytest
import redis as redis_lib

from analytics.models import RequestLog
from ratelimit.models import BudgetCrossing
from tests.conftest import TEST_REDIS_URL
from tests.ratelimit.helpers import burst, chat, post, records_of, set_budget, set_price, statuses
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# $2 a million tokens, in and out: a prompt of 4,000 characters (~1,000 tokens) costs
# about $0.002, and is estimated (its body's bytes / 4, plus max_tokens) a little higher.
PRICE = Decimal(2) / 1_000_000


def expensive(tag: str, *faults: str) -> dict:
    return chat(f"{tag} {''.join(faults)} " + "x" * 4000, max_tokens=16)


def estimate(body: dict) -> Decimal:
    import json

    return ((len(json.dumps(body).encode()) + 3) // 4 + 16) * PRICE


@pytest.fixture
def priced(live_world):
    set_price("gpt-4o-mini", input_per_million="2", output_per_million="2")
    return live_world


def test_it_overruns_a_budget_by_at_most_one_estimate_under_50_concurrent(limits_gateway,
                                                                           priced):
    set_budget(priced.a, "0.01")
    # All 50 in flight at once: the upstream takes 300 ms over each.
    bodies = [expensive(f"budget {i}", "[[fault:delay_ms=300]]") for i in range(50)]
    responses = burst(limits_gateway.url, priced.a.raw_key, bodies)
    counts = statuses(responses)
    assert set(counts) == {200, 429}, counts
    records = records_of(priced.a.org, 50)
    spent = sum((r.cost for r in records), Decimal(0))
    assert Decimal("0.01") <= spent <= Decimal("0.01") + max(estimate(b) for b in bodies)
    refused = next(r for r in responses if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "daily budget of $0.0100" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert {r.error_type for r in records if r.status == 429} == {"budget_day"}


def test_it_prices_a_route_alias_as_its_target_when_reserving(limits_gateway, priced):
    from organizations.models import Provider
    from tests.routing.helpers import make_route

    # The alias has no price of its own: reserved at 0, all 50 would get through.
    provider = Provider.objects.get(organization=priced.a.org)
    make_route(priced.a.org, "house-model", (provider, "gpt-4o-mini"))
    set_budget(priced.a, "0.01")
    bodies = [{**expensive(f"alias {i}", "[[fault:delay_ms=300]]"), "model": "house-model"}
              for i in range(50)]
    counts = statuses(burst(limits_gateway.url, priced.a.raw_key, bodies))
    assert set(counts) == {200, 429}, counts
    records = records_of(priced.a.org, 50)
    spent = sum((r.cost for r in records), Decimal(0))
    assert Decimal("0.01") <= spent <= Decimal("0.01") + max(estimate(b) for b in bodies)


def test_it_lets_requests_through_a_soft_budget_and_records_the_crossing(limits_gateway,
                                                                        priced):
    budget = set_budget(priced.a, "0.003", soft=True)
    responses = [post(limits_gateway.url, priced.a.raw_key, expensive(f"soft {i}"))
                 for i in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    [crossing] = wait_until(lambda: list(BudgetCrossing.objects.filter(budget=budget)),
                            timeout=5, what="the crossing")
    assert crossing.soft and crossing.period == "day"
    assert crossing.limit_usd == Decimal("0.003")
    assert Decimal("0.003") <= crossing.spend_usd < Decimal("0.006")
    assert crossing.organization == priced.a.org


def test_it_rebuilds_a_lost_budget_from_the_records(limits_gateway, priced):
    set_budget(priced.a, "0.005")
    answered = 0
    while post(limits_gateway.url, priced.a.raw_key,
               expensive(f"spend {answered}")).status_code == 200:
        answered += 1
    assert answered == 3  # $0.002 each: the third takes the spend past $0.005
    records = records_of(priced.a.org, answered + 1)
    assert sum((r.cost for r in records), Decimal(0)) > Decimal("0.005")

    redis_lib.Redis.from_url(TEST_REDIS_URL).flushdb()  # restart, eviction, FLUSHALL
    after = burst(limits_gateway.url, priced.a.raw_key,
                  [expensive(f"after the flush {i}") for i in range(20)])
    assert statuses(after) == {429: 20}
    assert {r.json()["error"]["code"] for r in after} == {"insufficient_quota"}
    # The operator is told that a counter with spend on it was lost, by the requests
    # that shared one rebuild (the 20 arrive within milliseconds), not by each of them.
    told = [line for line in limits_gateway.log.read_text().splitlines()
            if f"org {priced.a.org.id}: budget counter missing" in line
            and "($0 spent" not in line]
    assert 1 <= len(told) < 20, told


def test_it_spends_nothing_on_cache_hits(limits_gateway, priced):
    set_budget(priced.a, "0.003")
    body = expensive("the same question")
    answers = [post(limits_gateway.url, priced.a.raw_key, body) for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5
    assert [r.headers["x-cognitude-cache"] for r in answers[1:]] == ["HIT"] * 4
    records = records_of(priced.a.org, 5)
    assert sorted(r.cost for r in records)[:4] == [0, 0, 0, 0]


def test_it_holds_a_key_to_its_own_budget(limits_gateway, priced):
    from organizations.services import api_key_create

    other = api_key_create(organization=priced.a.org, name="capped")
    set_budget(priced.a, "0.001", api_key=other.api_key, period="month")
    assert post(limits_gateway.url, other.raw_key, expensive("k1")).status_code == 200
    refused = post(limits_gateway.url, other.raw_key, expensive("k2"))
    assert refused.status_code == 429
    assert f"key {other.api_key.prefix}'s monthly budget" in refused.json()["error"]["message"]
    assert post(limits_gateway.url, priced.a.raw_key, expensive("org")).status_code == 200
    wait_until(lambda: RequestLog.objects.filter(organization=priced.a.org,
                                                 error_type="budget_month").exists(),
               timeout=5, what="the refusal's record")

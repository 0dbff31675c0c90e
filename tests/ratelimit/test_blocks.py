"""What a miss takes ahead (ratelimit.gate.Block): far from every limit, a process's call
upstream takes tokens, spend and slots in flight for the misses after it and gives back
what they did not use; near a limit every request takes its own, so the limits hold
exactly across gateways, as without."""

import json
import time
from decimal import Decimal

import pytest

from ratelimit.usage import budgets_spend_live, limits_usage
from tests.conftest import TEST_REDIS_URL
from tests.live import start_gateway
from tests.ratelimit.conftest import LIMITS_ENV
from tests.ratelimit.helpers import (
    burst,
    chat,
    peak_in_flight,
    post,
    records_of,
    set_budget,
    set_limits,
    set_price,
    statuses,
)
from tests.ratelimit.test_budgets import estimate, expensive
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# A block held long enough to be seen from outside; and a gateway that takes no block.
HOLDING = {**LIMITS_ENV, "COGNITUDE_LIMITS_GRANT_SECONDS": "2"}
EXACT = {**LIMITS_ENV, "COGNITUDE_LIMITS_GRANT_SECONDS": "0"}
TPM = 100_000


@pytest.fixture
def limits_redis(settings):
    """The test process reads the limits where the gateways keep them (as the API does)."""
    settings.COGNITUDE_LIMITS_REDIS_URL = TEST_REDIS_URL


def settled(budget, limit, real: Decimal) -> tuple[Decimal, bool]:
    """The budget's live spend once it is the records' `real`, and whether every slot of
    the limit is back (each waited for)."""
    spend = wait_until(
        lambda: (found if (found := budgets_spend_live(budgets=[budget])[budget.pk]) == real
                 else None), timeout=10, what=f"the live spend to be the records' {real}")
    slots_back = wait_until(
        lambda: limits_usage(limits=[limit])[limit.pk]["conc"] == 0 or None, timeout=10,
        what="every slot back")
    return spend, slots_back


def test_it_gives_back_the_tokens_spend_and_slots_a_block_did_not_use(
        live_world, django_db_blocker, limits_redis):
    set_price("gpt-4o-mini", input_per_million="2", output_per_million="2")
    limit = set_limits(live_world.a, tokens_per_minute=TPM, concurrent_requests=4096)
    budget = set_budget(live_world.a, "100")
    key = live_world.a.raw_key
    with django_db_blocker.unblock():
        holding, exact = start_gateway(HOLDING), start_gateway(EXACT)
    try:
        for i in range(3):
            assert post(holding.url, key, chat(f"ahead {i}", max_tokens=16)).status_code == 200
        # The holding gateway's block is out for 2 s: what its three misses did not use
        # of it is taken still, as the other gateway and the API see.
        meanwhile = post(exact.url, key, chat("meanwhile", max_tokens=16))
        held_slots = limits_usage(limits=[limit])[limit.pk]["conc"]
        held_spend = budgets_spend_live(budgets=[budget])[budget.pk]
        time.sleep(2.5)  # the block is over: what it did not use is back
        body = chat("after", max_tokens=16)
        after = post(exact.url, key, body)
        records = records_of(live_world.a.org, 5)
        real = sum((r.cost for r in records), Decimal(0))
        spend_after, slots_after = settled(budget, limit, real)
    finally:
        holding.stop()
        exact.stop()
    assert meanwhile.status_code == after.status_code == 200
    one = (len(meanwhile.request.content) + 3) // 4 + 16  # what one request reserves
    # 1/16 of 100,000 tokens: a block for ~130 requests like these, ~5,800 tokens.
    assert TPM - int(meanwhile.headers["x-ratelimit-remaining-tokens"]) >= 16 * one
    assert held_slots >= 15
    assert held_spend >= 16 * one * Decimal(2) / 1_000_000
    # 2.5 s refill 4,166 of the block's ~5,800 (and all the requests' real use): kept,
    # the rest would still be taken.
    reserved = (len(after.request.content) + 3) // 4 + 16
    assert int(after.headers["x-ratelimit-remaining-tokens"]) >= TPM - reserved - 1
    assert spend_after == real and slots_after


def test_it_holds_a_budget_to_one_estimate_while_blocks_are_taken_far_from_it(
        live_world, django_db_blocker):
    set_price("gpt-4o-mini", input_per_million="2", output_per_million="2")
    bodies = [expensive(f"block budget {i}") for i in range(400)]
    each = max(estimate(b) for b in bodies)
    # 300 requests' worth: far from it (over 256 estimates left) the first misses of each
    # gateway take blocks of 18; then every request its own.
    cap = (300 * each).quantize(Decimal("0.0001"))
    set_budget(live_world.a, str(cap))
    with django_db_blocker.unblock():
        gateways = [start_gateway(LIMITS_ENV) for _ in range(2)]
    try:
        urls = [g.url for g in gateways]
        responses = []
        for wave in range(0, len(bodies), 25):
            responses += burst(urls, live_world.a.raw_key, bodies[wave:wave + 25])
    finally:
        for gateway in gateways:
            gateway.stop()
    counts = statuses(responses)
    assert set(counts) == {200, 429}, counts
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "insufficient_quota"}
    records = records_of(live_world.a.org, len(bodies))
    spent = sum((r.cost for r in records), Decimal(0))
    # Never past it by more than one estimate; and what the blocks took and did not use
    # came back (kept, ~20 estimates of it could not have been spent).
    assert cap - 3 * each <= spent <= cap + each, (spent, cap, each, counts)


def test_it_holds_a_concurrency_limit_across_gateways_while_blocks_are_taken(
        live_world, django_db_blocker, fake_upstream, limits_redis):
    # 300 slots: a gateway's first miss takes a block of 18 of them (1/16), the rest
    # take one each, until under 256 are left.
    limit = set_limits(live_world.a, concurrent_requests=300)
    with django_db_blocker.unblock():
        gateways = [start_gateway(LIMITS_ENV) for _ in range(2)]
    try:
        with peak_in_flight(fake_upstream) as peak:
            responses = burst([g.url for g in gateways], live_world.a.raw_key, [
                chat(f"block stream {i} [[fault:chunk_delay_ms=300]]", stream=True)
                for i in range(350)])
        slots_back = wait_until(
            lambda: limits_usage(limits=[limit])[limit.pk]["conc"] == 0 or None, timeout=10,
            what="every slot back")
    finally:
        for gateway in gateways:
            gateway.stop()
    counts = statuses(responses)
    assert set(counts) == {200, 429}, counts
    assert peak[0] <= 300
    # The blocks' slots no request held were idle for at most their 0.1 s.
    assert counts[200] >= 250 and counts[429] >= 50, counts
    assert slots_back


# A block ends COGNITUDE_LIMITS_GRANT_SECONDS after it is taken, with every request in
# flight, and waits as long again for them at most: they end before that (and the last
# one sends what they settled into it), or after it (and each settles on its own).
@pytest.mark.parametrize(("grant_seconds", "delay_ms"), [("1", 1500), ("0.3", 1000)])
def test_it_settles_what_requests_in_flight_at_a_blocks_end_used(
        live_world, django_db_blocker, limits_redis, grant_seconds, delay_ms):
    set_price("gpt-4o-mini", input_per_million="2", output_per_million="2")
    limit = set_limits(live_world.a, tokens_per_minute=TPM, concurrent_requests=4096)
    budget = set_budget(live_world.a, "100")
    key = live_world.a.raw_key
    with django_db_blocker.unblock():
        gateway = start_gateway({**LIMITS_ENV, "COGNITUDE_LIMITS_GRANT_SECONDS": grant_seconds})
    try:
        responses = burst(gateway.url, key, [
            chat(f"in flight {i} [[fault:delay_ms={delay_ms}]]", max_tokens=16)
            for i in range(20)])
        records = records_of(live_world.a.org, 20)
        real = sum((r.cost for r in records), Decimal(0))
        spend_after, slots_after = settled(budget, limit, real)
    finally:
        gateway.stop()
    assert statuses(responses) == {200: 20}
    # Far from every limit they drew from a block, which ended while all 20 were in
    # flight: their real costs, not their estimates, are what is spent.
    reserved = sum(estimate(json.loads(r.request.content)) for r in responses)
    assert real < reserved
    assert spend_after == real and slots_after

"""The limit store's semantics, the same for the limits Redis (the Lua scripts, on a real
Redis) and for a process's memory (embedded mode and fail-open)."""

import asyncio
import uuid

import pytest

from ratelimit.store import (
    BUDGET,
    CONCURRENCY,
    RATE,
    Check,
    LocalLimiter,
    RedisLimiter,
    Seed,
    missing_of,
    outcome,
    reserve_spec,
    settle_budget,
    settle_leases,
    settle_rate,
)
from tests.conftest import TEST_REDIS_URL

MINUTE = 60_000


@pytest.fixture(params=["redis", "local"])
def store(request, clean_redis):
    if request.param == "local":
        return lambda: LocalLimiter()
    return lambda: RedisLimiter(TEST_REDIS_URL, timeout=2.0, breaker_seconds=1.0)


def run(store_factory, steps):
    """Run `steps(store)` on a fresh store in its own loop (redis clients are per loop)."""
    async def main():
        store = store_factory()
        try:
            return await steps(store)
        finally:
            await store.close()

    return asyncio.run(main())


def key(name: str) -> str:
    return f"rl:{{t{uuid.uuid4().hex[:8]}}}:{name}"


async def reserve(store, checks, lease="lease", lease_ms=60_000, seeds=None):
    """The outcomes, or ("seed", indexes) when budgets must be seeded first."""
    raw = await store.reserve([c.key for c in checks], reserve_spec(checks, seeds),
                              lease=lease, lease_ms=lease_ms)
    missing = missing_of(raw)
    if missing:
        return ("seed", missing)
    return [outcome(raw, i) for i in range(len(checks))]


async def settle(store, *items):
    """Settle (check, item) pairs as one batch; the crossings as [(index, spend)]."""
    answer = asyncio.get_running_loop().create_future()
    store.settle_soon([([c.key for c, _ in items], [i for _, i in items])], answer.set_result)
    [crossed] = await answer
    return [(crossed[at] - 1, crossed[at + 1]) for at in range(0, len(crossed), 2)]


def test_it_lets_a_burst_of_n_through_then_one_per_interval(store):
    rpm = Check(key("rpm"), RATE, 3, MINUTE, 1)

    async def steps(s):
        return [await reserve(s, [rpm]) for _ in range(4)]

    answers = run(store, steps)
    assert [a[0].ok for a in answers] == [True, True, True, False]
    assert [a[0].remaining for a in answers[:3]] == [2, 1, 0]
    # The next one fits when one interval (60 s / 3) has passed since the first.
    assert 19_000 < answers[3][0].retry_ms <= 20_000
    assert 59_000 < answers[2][0].reset_ms <= 60_000


def test_it_takes_every_check_or_none(store):
    roomy = Check(key("roomy"), RATE, 100, MINUTE, 1)
    tight = Check(key("tight"), RATE, 1, MINUTE, 1)

    async def steps(s):
        first = await reserve(s, [roomy, tight])
        refused = await reserve(s, [roomy, tight])
        alone = await reserve(s, [roomy])
        return first, refused, alone

    first, refused, alone = run(store, steps)
    assert [o.ok for o in first] == [True, True]
    assert [o.ok for o in refused] == [True, False]
    # The refused request took nothing from the limit it passed.
    assert alone[0].remaining == 98


def test_it_gives_back_unused_tokens(store):
    tpm = Check(key("tpm"), RATE, 1000, MINUTE, 600)

    async def steps(s):
        await reserve(s, [tpm])
        refused = await reserve(s, [tpm])
        await settle(s, (tpm, settle_rate(tpm, -550)))  # used 50 of the 600 reserved
        return refused, await reserve(s, [tpm])

    refused, after = run(store, steps)
    assert not refused[0].ok
    assert after[0].ok
    assert 340 <= after[0].remaining <= 352  # 1000 - 50 - 600, plus a little refill


def test_it_holds_concurrency_and_frees_slots(store):
    slots = Check(key("conc"), CONCURRENCY, 2)

    async def steps(s):
        a = await reserve(s, [slots], lease="a")
        b = await reserve(s, [slots], lease="b")
        refused = await reserve(s, [slots], lease="c")
        await settle(s, (slots, settle_leases(["a"])))
        c = await reserve(s, [slots], lease="c")
        return a, b, refused, c

    a, b, refused, c = run(store, steps)
    assert (a[0].ok, b[0].ok, refused[0].ok, c[0].ok) == (True, True, False, True)
    assert (a[0].remaining, b[0].remaining) == (1, 0)


def test_it_frees_many_slots_of_a_block_in_one_item(store):
    block = Check(key("conc"), CONCURRENCY, 5, cost=4)  # a block's 4 slots: blk#1..blk#4
    one = Check(block.key, CONCURRENCY, 5)

    async def steps(s):
        taken = await reserve(s, [block], lease="blk")
        full = await reserve(s, [one], lease="x")  # the 5th
        refused = await reserve(s, [one], lease="y")
        await settle(s, (one, settle_leases(["blk#1", "blk#3", "blk#4"])))
        after = await reserve(s, [one], lease="y")
        return taken, full, refused, after

    taken, full, refused, after = run(store, steps)
    assert (taken[0].ok, taken[0].remaining) == (True, 1)
    assert (full[0].ok, refused[0].ok) == (True, False)
    # blk#2 and x are still held: three of the five are free again, y takes one
    assert (after[0].ok, after[0].remaining) == (True, 2)


def test_it_takes_back_leases_a_dead_process_left(store):
    slots = Check(key("conc"), CONCURRENCY, 1)

    async def steps(s):
        held = await reserve(s, [slots], lease="dead", lease_ms=200)
        refused = await reserve(s, [slots], lease="next")
        await asyncio.sleep(0.3)  # the holder never settles: its lease runs out
        return held, refused, await reserve(s, [slots], lease="next")

    held, refused, later = run(store, steps)
    assert (held[0].ok, refused[0].ok, later[0].ok) == (True, False, True)


def test_it_asks_for_a_budget_seed_and_takes_nothing_until_given(store):
    rpm = Check(key("rpm"), RATE, 10, MINUTE, 1)
    budget = Check(key("budget"), BUDGET, 1000, cost=300)

    async def steps(s):
        missing = await reserve(s, [rpm, budget])
        seeded = await reserve(s, [rpm, budget], seeds={1: Seed(500, 3600)})
        return missing, seeded

    missing, seeded = run(store, steps)
    assert missing == ("seed", [1])
    assert [o.ok for o in seeded] == [True, True]
    assert seeded[0].remaining == 9  # the first call took nothing
    assert seeded[1].remaining == 500  # cap - spent before this request


def test_it_refuses_a_spent_hard_budget_and_lets_a_soft_one_through(store):
    hard = Check(key("hard"), BUDGET, 1000, cost=300)
    soft = Check(key("soft"), BUDGET, 1000, cost=300, soft=True)

    async def steps(s):
        seeds = {0: Seed(900, 3600)}
        first = await reserve(s, [hard], seeds=seeds)  # 900 < 1000: admitted, now 1200
        second = await reserve(s, [hard])
        softs = [await reserve(s, [soft], seeds={0: Seed(900, 3600)}) for _ in range(2)]
        return first, second, softs

    first, second, softs = run(store, steps)
    assert first[0].ok and not second[0].ok
    assert second[0].remaining == -200
    assert all(answer[0].ok for answer in softs)


def test_it_reports_a_crossing_once_per_period(store):
    budget = Check(key("budget"), BUDGET, 1000, cost=100, soft=True)

    async def steps(s):
        crossings = []
        for real in (100, 950, 50):
            [answer] = await reserve(s, [budget], seeds={0: Seed(0, 3600)})
            crossings.append(await settle(s, (budget, settle_budget(
                budget, real - 100, answer.generation))))
        return crossings

    assert run(store, steps) == [[], [(0, 1050)], []]


def test_it_leaves_a_rebuilt_budget_alone_when_an_old_reservation_settles(store):
    budget = Check(key("budget"), BUDGET, 10_000, cost=300)

    async def steps(s):
        [old] = await reserve(s, [budget], seeds={0: Seed(0, 3600)})
        # Redis loses the counter; it is rebuilt from the records, without the
        # reservation in flight.
        if isinstance(s, RedisLimiter):
            await s._client.call("DEL", budget.key)
        else:
            s._budgets.clear()
        await reserve(s, [budget], seeds={0: Seed(1000, 3600)})  # spend 1000 + 300
        await settle(s, (budget, settle_budget(budget, -300, old.generation)))
        return await reserve(s, [budget])

    [after] = run(store, steps)
    assert after.remaining == 10_000 - 1300


def test_it_checks_without_taking(store):
    """The first call of a request (before the cache) checks tokens, spend and slots
    without taking them: a cache hit spends none."""
    tpm = Check(key("tpm"), RATE, 1000, MINUTE, 600)
    slots = Check(key("conc"), CONCURRENCY, 1)
    budget = Check(key("budget"), BUDGET, 1000, cost=400)
    seeds = {2: Seed(0, 3600)}
    checked = [Check(c.key, c.kind, c.limit, c.period_ms, 1 if c.kind == RATE else 0,
                     only_check=True) for c in (tpm, slots, budget)]

    async def steps(s):
        looks = [await reserve(s, checked, lease="look", seeds=seeds) for _ in range(3)]
        taken = await reserve(s, [tpm, slots, budget], lease="a")
        full = await reserve(s, checked, lease="look")
        return looks, taken, full

    looks, taken, full = run(store, steps)
    for look in looks:  # asked three times, nothing taken
        assert [o.ok for o in look] == [True, True, True]
        assert [o.remaining for o in look] == [1000, 1, 1000]
    assert [o.ok for o in taken] == [True, True, True]
    assert [o.remaining for o in taken][:2] == [400, 0]
    # Now the slot is held: a check is refused for it, and the tokens show what is left.
    assert [o.ok for o in full] == [True, False, True]
    assert 400 <= full[0].remaining <= 402 and full[2].remaining == 600

"""The order a request tries a route's targets in, per strategy, with breakers open or
not. Pure: no servers, a seeded random source."""

import random
from collections import Counter

from routing.plan import route_plan
from routing.table import ProviderConfig, Route, Target


def provider(pid: int, name: str) -> ProviderConfig:
    return ProviderConfig(id=pid, name=name, kind="openai", base_url="https://x/v1",
                          api_key="sk")


A, B, C = provider(1, "a"), provider(2, "b"), provider(3, "c")


def route(*targets: Target, strategy: str = "priority") -> Route:
    return Route(name="fast", targets=targets, strategy=strategy)


def names(targets) -> list[str]:
    return [t.provider.name for t in targets]


def plan(r: Route, *, blocked=(), latency=None, seed=0):
    return route_plan(route=r, blocked=set(blocked),
                      latency=latency or {}, rng=random.Random(seed))


def test_it_orders_priority_targets_by_priority_then_as_listed():
    r = route(Target(A, "m", priority=1), Target(B, "m", priority=0),
              Target(C, "m", priority=1))

    assert names(plan(r).targets) == ["b", "a", "c"]


def test_it_skips_targets_whose_breaker_is_open():
    a, b = Target(A, "m"), Target(B, "m")

    found = plan(route(a, b), blocked={a.key})

    assert names(found.targets) == ["b"]
    assert names(found.skipped) == ["a"]


def test_it_splits_weighted_targets_by_weight_with_the_rest_as_fallbacks():
    r = route(Target(A, "m", weight=3), Target(B, "m", weight=1), strategy="weighted")
    rng = random.Random(7)
    firsts = Counter()
    for _ in range(10_000):
        found = route_plan(route=r, blocked=set(), latency={}, rng=rng)
        firsts[found.targets[0].provider.name] += 1
        assert sorted(names(found.targets)) == ["a", "b"]  # the other one follows

    # 75 % / 25 %, within two points (the binomial's sd is 0.43 points here).
    assert abs(firsts["a"] / 10_000 - 0.75) < 0.02


def test_it_splits_among_the_targets_left_when_one_is_open():
    a, b, c = Target(A, "m", weight=1), Target(B, "m", weight=1), Target(C, "m", weight=2)
    r = route(a, b, c, strategy="weighted")
    rng = random.Random(3)
    firsts = Counter(route_plan(route=r, blocked={c.key}, latency={},
                                rng=rng).targets[0].provider.name for _ in range(4_000))

    assert set(firsts) == {"a", "b"}
    assert abs(firsts["a"] / 4_000 - 0.5) < 0.03


def test_it_never_puts_a_zero_weight_target_first():
    r = route(Target(A, "m", weight=0), Target(B, "m", weight=1), strategy="weighted")

    firsts = {plan(r, seed=seed).targets[0].provider.name for seed in range(200)}

    assert firsts == {"b"}


def test_it_sends_latency_routes_to_the_faster_target():
    fast, slow = Target(A, "m"), Target(B, "m")
    r = route(slow, fast, strategy="latency")

    firsts = {names(plan(r, latency={fast.key: 0.01, slow.key: 0.2}, seed=s).targets)[0]
              for s in range(50)}

    assert firsts == {"a"}


def test_it_picks_the_faster_of_two_random_targets_out_of_many():
    targets = [Target(provider(i, f"p{i}"), "m") for i in range(1, 5)]
    latency = {t.key: i / 10 for i, t in enumerate(targets, start=1)}  # p1 fastest
    r = route(*targets, strategy="latency")
    rng = random.Random(11)
    firsts = Counter(names(route_plan(route=r, blocked=set(),
                                      latency=latency, rng=rng).targets)[0]
                     for _ in range(6_000))

    # Power of two choices: the slowest is never first, the fastest wins every pair it
    # is drawn in (half of them), p2 a third, p3 a sixth.
    assert "p4" not in firsts
    assert abs(firsts["p1"] / 6_000 - 1 / 2) < 0.03
    assert abs(firsts["p2"] / 6_000 - 1 / 3) < 0.03
    # The fallbacks follow fastest first.
    for seed in range(20):
        first, *rest = names(plan(r, latency=latency, seed=seed).targets)
        assert rest == [name for name in ("p1", "p2", "p3", "p4") if name != first]


def test_it_tries_a_target_never_measured_before_the_measured_ones():
    measured, new = Target(A, "m"), Target(B, "m")

    first = plan(route(measured, new, strategy="latency"),
                 latency={measured.key: 0.05}).targets[0]

    assert first is new

"""The order in which a request tries a route's targets: pure, so the strategies are
tested without servers.

- priority: by priority (lower first), then in the route's order;
- weighted: one target drawn at random in proportion to its weight goes first, the
  others follow in priority order as fallbacks;
- latency: power of two choices on the EWMA of time to first byte (routing/balance.py):
  of two targets drawn at random the faster goes first, the others follow fastest first.
  A target never measured counts as fastest, so a new target gets tried.

Targets whose circuit breaker is open are left out (and reported as skipped), so the
split and the choices are made among the targets that can answer.
"""

import random
from collections.abc import Mapping, Set
from dataclasses import dataclass
from operator import attrgetter

from routing.table import Route, Target


@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[Target, ...]  # to try, in order
    skipped: tuple[Target, ...]  # left out: their breaker is open


_PRIORITY = attrgetter("priority")


def _by_priority(targets: list[Target]) -> list[Target]:
    return sorted(targets, key=_PRIORITY)  # stable: the route's order among equals


def _weighted(targets: list[Target], rng: random.Random) -> list[Target]:
    ordered = _by_priority(targets)
    if sum(target.weight for target in ordered) <= 0:
        return ordered
    first = rng.choices(ordered, weights=[target.weight for target in ordered])[0]
    return [first, *(target for target in ordered if target is not first)]


def _fastest(targets: list[Target], latency: Mapping[str, float],
             rng: random.Random) -> list[Target]:
    def score(target: Target) -> float:
        return latency.get(target.key, 0.0)

    ordered = sorted(targets, key=score)
    if len(ordered) < 2:
        return ordered
    first = min(rng.sample(targets, 2), key=score)
    return [first, *(target for target in ordered if target is not first)]


def route_plan(*, route: Route, blocked: Set[str], latency: Mapping[str, float],
               rng: random.Random) -> Plan:
    """The targets of `route` to try, in order, and those skipped: their keys are in
    `blocked` (breaker open)."""
    if blocked:
        usable = [target for target in route.targets if target.key not in blocked]
        skipped = tuple(target for target in route.targets if target.key in blocked)
    else:
        usable, skipped = list(route.targets), ()
    if route.strategy == "weighted":
        ordered = _weighted(usable, rng)
    elif route.strategy == "latency":
        ordered = _fastest(usable, latency, rng)
    else:
        ordered = _by_priority(usable)
    return Plan(tuple(ordered), skipped)

"""Evaluate routing.complexity on a labelled prompt set.

    .venv/bin/python bench/routing/evaluate.py [--set tuning|heldout] [--thresholds a,b] [--search]

Prints accuracy, the 3x3 confusion matrix (rows: label, columns: routed tier), the share
of complex-labelled prompts routed down (the quality risk) and the cost saving against
sending everything to the complex tier. Each prompt is priced with the classifier's own
token estimates on its tier's model, from the price table the analytics migration seeds
(no database needed). `--search` grid-searches the most accurate thresholds (then the
cheapest) that route down at most 3 % of complex prompts (a margin under the 5 %
target); run it on the tuning set only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from routing.complexity import COMPLEX_FROM, SIMPLE_BELOW, Tier, assess, tier_for  # noqa: E402

# The tier models: each is in the seeded price table, and each is a step down in price
# from the one above (input/output USD per million tokens: 0.15/0.60, 0.40/1.60, 2.50/10).
TIER_MODELS = {Tier.SIMPLE: "gpt-4o-mini", Tier.STANDARD: "gpt-4.1-mini", Tier.COMPLEX: "gpt-4o"}
ORDER = (Tier.SIMPLE, Tier.STANDARD, Tier.COMPLEX)
PRICED_ON = date(2026, 1, 1)


def load(name: str) -> list[dict]:
    path = HERE / f"{name}.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _price_book():
    """The project's PriceBook over the seed rows of analytics' price migration."""
    import django
    from django.conf import settings

    if not settings.configured:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")
        django.setup()
    from analytics.prices import Price, PriceBook

    seed = importlib.import_module("analytics.migrations.0003_model_prices_data")
    return PriceBook([
        Price(model=model, input_per_million=Decimal(inp), output_per_million=Decimal(out),
              effective_from=since)
        for model, _provider, inp, out, since in seed.PRICES
    ])


@dataclass(frozen=True)
class Scored:
    id: str
    label: Tier
    score: float
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class Report:
    total: int
    accuracy: float
    confusion: dict[Tier, dict[Tier, int]]
    complex_routed_down: float     # share of complex-labelled prompts sent to a cheaper tier
    saving: float                  # 1 - routed cost / everything-on-complex cost
    oracle_saving: float           # the same with every prompt on its labelled tier
    routed_share: dict[Tier, float]


def score_rows(rows: Iterable[dict]) -> list[Scored]:
    scored = []
    for row in rows:
        a = assess(endpoint=row["endpoint"], body=row["body"])
        scored.append(Scored(row["id"], Tier(row["tier"]), a.score, a.tokens_in, a.tokens_out))
    return scored


def report(scored: list[Scored], *, simple_below: float, complex_from: float,
           costs: dict[str, dict[Tier, Decimal]]) -> Report:
    confusion = {label: dict.fromkeys(ORDER, 0) for label in ORDER}
    routed_cost = baseline = oracle = Decimal(0)
    for s in scored:
        tier = tier_for(score=s.score, simple_below=simple_below, complex_from=complex_from)
        confusion[s.label][tier] += 1
        routed_cost += costs[s.id][tier]
        baseline += costs[s.id][Tier.COMPLEX]
        oracle += costs[s.id][s.label]
    total = len(scored)
    correct = sum(confusion[t][t] for t in ORDER)
    complex_total = sum(confusion[Tier.COMPLEX].values())
    down = complex_total - confusion[Tier.COMPLEX][Tier.COMPLEX]
    routed = {t: sum(confusion[label][t] for label in ORDER) / total for t in ORDER}
    return Report(
        total=total, accuracy=correct / total, confusion=confusion,
        complex_routed_down=down / complex_total if complex_total else 0.0,
        saving=float(1 - routed_cost / baseline) if baseline else 0.0,
        oracle_saving=float(1 - oracle / baseline) if baseline else 0.0, routed_share=routed)


def price_rows(scored: list[Scored]) -> dict[str, dict[Tier, Decimal]]:
    book = _price_book()
    return {
        s.id: {tier: book.cost(model, PRICED_ON, s.tokens_in, s.tokens_out)
               for tier, model in TIER_MODELS.items()}
        for s in scored
    }


def evaluate(name: str, *, simple_below: float = SIMPLE_BELOW,
             complex_from: float = COMPLEX_FROM) -> Report:
    scored = score_rows(load(name))
    return report(scored, simple_below=simple_below, complex_from=complex_from,
                  costs=price_rows(scored))


def search(scored: list[Scored], costs: dict[str, dict[Tier, Decimal]],
           max_down: float = 0.03) -> tuple[float, float, Report]:
    best: tuple[float, float, Report] | None = None
    grid = [i / 100 for i in range(5, 96)]
    for complex_from in grid:
        for simple_below in (g for g in grid if g <= complex_from):
            r = report(scored, simple_below=simple_below, complex_from=complex_from, costs=costs)
            if r.complex_routed_down > max_down:
                continue
            key = (round(r.accuracy, 3), r.saving)
            if best is None or key > (round(best[2].accuracy, 3), best[2].saving):
                best = (simple_below, complex_from, r)
    assert best is not None, "no thresholds meet the quality bound"
    return best


def render(name: str, simple_below: float, complex_from: float, r: Report) -> str:
    lines = [
        f"set={name} prompts={r.total} thresholds simple<{simple_below} complex>={complex_from}",
        "models: " + ", ".join(f"{t}={m}" for t, m in TIER_MODELS.items()),
        f"accuracy: {r.accuracy:.1%}",
        f"complex routed down: {r.complex_routed_down:.1%} (target < 5%)",
        f"cost saving vs everything on {TIER_MODELS[Tier.COMPLEX]}: {r.saving:.1%} "
        f"(target >= 40%; {r.oracle_saving:.1%} if every prompt went to its labelled tier)",
        "routed share: " + ", ".join(f"{t}={r.routed_share[t]:.0%}" for t in ORDER),
        "confusion (rows = label, columns = routed):",
        "            " + "".join(f"{t:>10}" for t in ORDER),
    ]
    for label in ORDER:
        lines.append(f"{label:>10}  " + "".join(f"{r.confusion[label][t]:>10}" for t in ORDER))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="tuning", choices=("tuning", "heldout"))
    parser.add_argument("--thresholds", help="simple_below,complex_from (default: the module's)")
    parser.add_argument("--search", action="store_true", help="grid-search thresholds")
    parser.add_argument("--models", help="simple,standard,complex models (default: "
                        + ",".join(TIER_MODELS.values()) + ")")
    parser.add_argument("--misses", action="store_true", help="list the misrouted prompts")
    args = parser.parse_args(argv)
    simple_below, complex_from = SIMPLE_BELOW, COMPLEX_FROM
    if args.thresholds:
        simple_below, complex_from = (float(x) for x in args.thresholds.split(","))
    if args.models:
        TIER_MODELS.update(zip(ORDER, args.models.split(","), strict=True))
    rows = load(args.set)
    scored = score_rows(rows)
    costs = price_rows(scored)
    if args.search:
        simple_below, complex_from, r = search(scored, costs)
    else:
        r = report(scored, simple_below=simple_below, complex_from=complex_from, costs=costs)
    print(render(args.set, simple_below, complex_from, r))
    if args.misses:
        kinds = {row["id"]: row["kind"] for row in rows}
        for s in scored:
            tier = tier_for(score=s.score, simple_below=simple_below, complex_from=complex_from)
            if tier != s.label:
                print(f"  {s.id} {kinds[s.id]:<15} label={s.label:<8} routed={tier:<8} "
                      f"score={s.score:.3f}")


if __name__ == "__main__":
    main()

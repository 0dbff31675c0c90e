"""Calibrating a routing policy like RouteLLM: choose the share of requests the top
tier should get, and the thresholds follow from the scores of real traffic.

The scores come from the organization's last request records (each routed or
shadow-routed record keeps the classifier's score and its tokens, so nothing is
re-read or re-scored) or from a file of prompts (JSON lines, scored here). The
projection prices each sample's tokens on the model its tier would pick and on the
complex tier's (what `auto` costs without routing).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import orjson
from django.utils import timezone

from analytics.models import RequestLog
from analytics.prices import PriceBook
from routing import complexity
from routing.table import TIERS


@dataclass(frozen=True, slots=True)
class Sample:
    score: float
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True, slots=True)
class Calibration:
    simple_below: float
    complex_from: float
    samples: int
    shares: dict[str, float]  # tier -> share of the samples
    baseline_cost: Decimal | None  # every sample on the complex tier's model
    routed_cost: Decimal | None  # each on its tier's model; None: a model is unpriced

    @property
    def saving(self) -> float | None:
        if not self.baseline_cost or self.routed_cost is None:
            return None
        return float(1 - self.routed_cost / self.baseline_cost)


class CalibrationInvalid(Exception):
    """Nothing to calibrate from, or a prompt file that cannot be read."""


def samples_from_records(*, organization_id: int, count: int) -> list[Sample]:
    """The scores and tokens of the organization's last `count` scored records."""
    rows = (RequestLog.objects.filter(organization_id=organization_id,
                                      route_score__isnull=False)
            .order_by("-created_at").values_list("route_score", "prompt_tokens",
                                                 "completion_tokens")[:count])
    return [Sample(score, tokens_in, tokens_out) for score, tokens_in, tokens_out in rows]


def samples_from_prompts(path: Path) -> list[Sample]:
    """Scores of a JSON-lines file: each line a request body (chat `messages`, a
    `prompt`, Responses `input`), or `{"endpoint": ..., "body": {...}}`."""
    samples = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CalibrationInvalid(f"Cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise CalibrationInvalid(f"{path}:{number}: not JSON") from None
        if not isinstance(item, dict):
            raise CalibrationInvalid(f"{path}:{number}: not a JSON object")
        body = item.get("body", item)
        endpoint = item.get("endpoint") or ("chat/completions" if "messages" in body
                                            else "responses" if "input" in body
                                            else "completions")
        found = complexity.assess(endpoint=endpoint, body=body)
        samples.append(Sample(found.score, found.tokens_in, found.tokens_out))
    return samples


def calibrate(*, samples: Sequence[Sample], complex_share: float,
              tier_models: Iterable[str], prices: PriceBook | None = None) -> Calibration:
    """Thresholds that send about `complex_share` of the samples to the complex tier
    (the simple one keeps the classifier's default, clamped below), the share each
    tier then gets and the projected cost against everything on the complex tier.
    `tier_models`: what the simple, standard and complex tiers are priced as."""
    if not samples:
        raise CalibrationInvalid("No scored requests to calibrate from: run the policy in "
                                 "shadow mode for a while, or give --prompts FILE")
    if not 0 <= complex_share <= 1:
        raise CalibrationInvalid("The complex share must be between 0 and 1")
    simple_below, complex_from = complexity.thresholds_for_share(
        scores=[s.score for s in samples], complex_share=complex_share)
    prices = prices or PriceBook.load()
    models = list(tier_models)
    now = timezone.now()
    counts = dict.fromkeys(TIERS, 0)
    baseline: Decimal | None = Decimal(0)
    routed: Decimal | None = Decimal(0)
    for sample in samples:
        tier = complexity.tier_for(score=sample.score, simple_below=simple_below,
                                   complex_from=complex_from)
        counts[tier] += 1
        top = prices.cost(models[-1], now, sample.tokens_in, sample.tokens_out)
        mine = prices.cost(models[TIERS.index(tier)], now, sample.tokens_in,
                           sample.tokens_out)
        baseline = None if baseline is None or top is None else baseline + top
        routed = None if routed is None or mine is None else routed + mine
    return Calibration(simple_below=simple_below, complex_from=complex_from,
                       samples=len(samples),
                       shares={tier: counts[tier] / len(samples) for tier in TIERS},
                       baseline_cost=baseline, routed_cost=routed)

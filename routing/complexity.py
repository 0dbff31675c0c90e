"""How hard a request is: a pure, deterministic, no-network classifier.

`assess` reads the body a client sent (OpenAI chat/completions, completions, Anthropic
messages, OpenAI responses) and returns a score in [0, 1] with the facts the routing
policy's guards need; `tier_for` maps a score to a tier with the policy's thresholds;
`thresholds_for_share` calibrates those thresholds from observed scores (RouteLLM's way:
choose the share of traffic that goes to the top tier, derive the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

# Tuned on bench/routing/tuning.jsonl (see bench/routing/README.md).
SIMPLE_BELOW = 0.25
COMPLEX_FROM = 0.5


class Tier(StrEnum):
    SIMPLE = "simple"
    STANDARD = "standard"
    COMPLEX = "complex"


@dataclass(frozen=True, slots=True)
class Assessment:
    score: float
    tokens_in: int
    tokens_out: int
    tools_required: bool
    strict_schema: bool
    has_images: bool
    signals: tuple[tuple[str, float], ...]


def assess(*, endpoint: str, body: object) -> Assessment:
    """The request's difficulty and the facts routing guards need. Never raises."""
    raise NotImplementedError("lands after the held-out set is committed")


def tier_for(*, score: float, simple_below: float = SIMPLE_BELOW,
             complex_from: float = COMPLEX_FROM) -> Tier:
    if score >= complex_from:
        return Tier.COMPLEX
    if score < simple_below:
        return Tier.SIMPLE
    return Tier.STANDARD


def thresholds_for_share(*, scores: Sequence[float], complex_share: float,
                         simple_share: float | None = None) -> tuple[float, float]:
    """(simple_below, complex_from) that send about `complex_share` of `scores` to the top tier."""
    raise NotImplementedError("lands with assess")

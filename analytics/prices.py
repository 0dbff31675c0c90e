"""Model prices: which `ModelPrice` row applies to a model at a moment, and what tokens cost.

A `PriceBook` loads the whole price table once (a few dozen rows) and answers from
memory, so a batch of thousands of request events costs one query, not one per row.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from analytics.models import ModelPrice

MILLION = Decimal(1_000_000)
# RequestLog.cost and saved_cost keep 8 decimal places.
COST_QUANTUM = Decimal("0.00000001")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model can do (ModelPrice's columns): smart routing's guards read it."""

    context_window: int | None = None  # None: not known
    tools: bool = False
    json_schema: bool = False
    images: bool = False


UNKNOWN = Capabilities()


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    input_per_million: Decimal
    output_per_million: Decimal
    effective_from: date
    capabilities: Capabilities = UNKNOWN

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        total = (prompt_tokens * self.input_per_million
                 + completion_tokens * self.output_per_million) / MILLION
        return total.quantize(COST_QUANTUM)


def is_pattern(name: str) -> bool:
    return not _GLOB_CHARACTERS.isdisjoint(name)


class PriceBook:
    """The price table in memory. Build with `PriceBook.load()` (one query)."""

    def __init__(self, prices: list[Price]) -> None:
        by_name: dict[str, list[Price]] = {}
        for price in prices:
            by_name.setdefault(price.model.lower(), []).append(price)
        for rows in by_name.values():
            rows.sort(key=lambda p: p.effective_from, reverse=True)
        self._by_name = by_name
        # The most specific first: a longer pattern names more of the model.
        self._patterns = sorted((n for n in by_name if is_pattern(n)), key=len, reverse=True)
        self._candidates: dict[str, list[str]] = {}
        # (model, day) -> the price in force: asked on every priced request's settlement.
        self._in_force: dict[tuple[str, date], Price | None] = {}

    @classmethod
    def load(cls) -> PriceBook:
        return cls([
            Price(p.model, p.input_per_million, p.output_per_million, p.effective_from,
                  Capabilities(p.context_window, p.supports_tools, p.supports_json_schema,
                               p.supports_images))
            for p in ModelPrice.objects.all()
        ])

    def _names_for(self, model: str) -> list[str]:
        """The price names that cover `model`, most specific first (memoised)."""
        names = self._candidates.get(model)
        if names is None:
            names = [model] if model in self._by_name else []
            names += [p for p in self._patterns if fnmatch.fnmatchcase(model, p)]
            self._candidates[model] = names
        return names

    def price_for(self, model: str, at: datetime | date) -> Price | None:
        """The price in force for `model` at `at`; None when the model has no price."""
        day = at.astimezone(UTC).date() if isinstance(at, datetime) else at
        key = (model, day)
        if key in self._in_force:
            return self._in_force[key]
        found = None
        for name in self._names_for(model.strip().lower()):
            found = next((p for p in self._by_name[name] if p.effective_from <= day), None)
            if found is not None:
                break
        if len(self._in_force) > 10_000:  # model names are the clients' to choose
            self._in_force.clear()
        self._in_force[key] = found
        return found

    def knows(self, model: str) -> bool:
        """Whether the table has a row (exact or pattern) for `model`."""
        return bool(self._names_for(model.strip().lower()))

    def capabilities_for(self, model: str, at: datetime | date) -> Capabilities:
        """What `model` can do, from the row in force at `at`; UNKNOWN without one."""
        price = self.price_for(model, at)
        return price.capabilities if price else UNKNOWN

    def cost(self, model: str, at: datetime | date, prompt_tokens: int,
             completion_tokens: int) -> Decimal | None:
        """What these tokens cost upstream; None (unpriced, not free) for an unknown model."""
        price = self.price_for(model, at)
        return price.cost(prompt_tokens, completion_tokens) if price else None


ZERO = Decimal(0)


def request_costs(*, prices: PriceBook, model: str, hit: bool, status: int,
                  prompt_tokens: int, completion_tokens: int,
                  at: datetime) -> tuple[Decimal | None, Decimal | None]:
    """`(cost, saved_cost)` of one request; None where it cannot be priced.

    A failed request costs nothing and saves nothing. A hit costs nothing and saves what
    the same tokens would have cost upstream. A request with no token counts at all (a
    stream whose usage never came) is unknown, like an unpriced model: never free.
    """
    if not 200 <= status < 300:
        return ZERO, ZERO
    price = prices.price_for(model, at) if (prompt_tokens or completion_tokens) else None
    value = price.cost(prompt_tokens, completion_tokens) if price else None
    return (ZERO, value) if hit else (value, ZERO)

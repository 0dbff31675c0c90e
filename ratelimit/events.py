"""The budget-usage event: a request's settlement moved a budget's spend past a whole
percent of its limit (at most 100 a period up to the limit), sent through the event
pipeline for whoever watches budgets (alerts registers the task that consumes it), so
a budget alert fires within seconds of the request, never on the request's time.

Serialised as orjson serialises a dataclass: an object of its fields, by name.
"""

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Self


@dataclass(frozen=True, slots=True)
class BudgetUsageEvent:
    KIND: ClassVar[str] = "budget_usage"

    org_id: int
    budget_id: int
    key_id: int | None
    period: str  # "day" | "month"
    period_start: date  # in the organization's time zone
    # As the limits' counter has it after this request (1e-8 USD precision).
    spend_usd: str
    limit_usd: str
    at: datetime

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "period_start": date.fromisoformat(data["period_start"]),
                      "at": datetime.fromisoformat(data["at"])})

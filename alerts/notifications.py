"""What every channel is given to format: one typed notification per alert transition.

A channel formats a Notification and nothing else (no model, no query), so what a Slack
message, an e-mail or a webhook body says can be read, and tested, without a database.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class State(StrEnum):
    FIRING = "firing"
    # Still firing when the rule's cool-down ran out: told again.
    RENOTIFY = "renotify"
    RESOLVED = "resolved"
    # "Send a test notification": no rule crossed anything.
    TEST = "test"


@dataclass(frozen=True, slots=True)
class Notification:
    state: State
    organization_name: str
    organization_slug: str
    rule_id: int | None
    rule_name: str
    metric: str  # the rule's metric code ("spend", "error_rate", ...)
    metric_label: str  # what a person reads ("Spend", "Error rate")
    comparison: str  # ">", ">=", "<", "<="
    value: Decimal | float | None  # None for a test, or a resolve without a reading
    threshold: Decimal | float
    unit: str  # "USD", "%", "ms", "requests", "minutes" or ""
    window_seconds: int
    filter: str  # "model gpt-4o", "" for the whole organization
    event_id: int | None
    seq: int  # the transition's number for its rule (firing 1, resolved 2, firing 3...)
    occurred_at: datetime
    dashboard_url: str

    @property
    def is_resolved(self) -> bool:
        return self.state is State.RESOLVED

    @property
    def title(self) -> str:
        if self.state is State.TEST:
            return "Test notification"
        prefix = {State.FIRING: "Firing", State.RENOTIFY: "Still firing",
                  State.RESOLVED: "Resolved"}[self.state]
        return f"{prefix}: {self.rule_name}"

    @property
    def value_text(self) -> str:
        return "n/a" if self.value is None else amount_text(self.value, self.unit)

    @property
    def threshold_text(self) -> str:
        return f"{self.comparison} {amount_text(self.threshold, self.unit)}"

    @property
    def window_text(self) -> str:
        return duration_text(self.window_seconds)

    @property
    def scope_text(self) -> str:
        return self.filter or "all traffic"

    @property
    def summary(self) -> str:
        """One sentence a person can act on, the same in every channel."""
        what = f"{self.metric_label} over the last {self.window_text} ({self.scope_text})"
        if self.metric == "no_traffic_minutes":
            what = f"Minutes without traffic ({self.scope_text})"
        if self.state is State.TEST:
            return (f"This is a test notification from Cognitude for "
                    f"{self.organization_name}: this channel works, and the alerts of its "
                    "rules will arrive here.")
        if self.state is State.RESOLVED:
            return f"{what} is back to {self.value_text}, no longer {self.threshold_text}."
        if self.state is State.RENOTIFY:
            return f"{what} is still {self.value_text}, past the threshold {self.threshold_text}."
        return f"{what} is {self.value_text}, crossing the threshold {self.threshold_text}."

    def as_json(self) -> dict:
        """The webhook body: the one serialisation, stable field names."""
        return {
            "type": f"alert.{self.state}",
            "id": None if self.event_id is None else f"evt_{self.event_id}",
            "created": self.occurred_at.isoformat(),
            "organization": {"slug": self.organization_slug, "name": self.organization_name},
            "rule": {
                "id": self.rule_id,
                "name": self.rule_name,
                "metric": self.metric,
                "comparison": self.comparison,
                "threshold": float(self.threshold),
                "window_seconds": self.window_seconds,
                "filter": self.filter,
            },
            "state": str(self.state),
            "seq": self.seq,
            "value": None if self.value is None else float(self.value),
            "threshold": float(self.threshold),
            "unit": self.unit,
            "summary": self.summary,
            "dashboard_url": self.dashboard_url,
        }


def amount_text(amount: Decimal | float, unit: str) -> str:
    number = float(amount)
    if unit == "USD":
        # Small spends matter (a threshold of $0.05 a minute): keep cents, more below $1.
        return f"${number:,.2f}" if abs(number) >= 1 or number == 0 else f"${number:.4f}"
    shown = f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"
    if unit == "%":
        return f"{shown}%"
    return f"{shown} {unit}" if unit else shown


def duration_text(seconds: int) -> str:
    if seconds <= 0:
        return "window"  # a rule deleted since: its window is not on the event
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {name}" if count == 1 else f"{count} {name}s"
    return f"{seconds} seconds"

"""The request event: what the gateway tells analytics about one request, once it is over.

Built on every request's path, so it is a plain frozen dataclass with slots: no
validation, no conversion. Its serialisation is orjson's of a dataclass (an object of
its fields, by name): the broker message, the spool line, a dead letter. Versions
agree on the wire through the field names: a field added later gets a default, so that
events spooled by the version before still load.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from caching.outcomes import CacheOutcome


@dataclass(frozen=True, slots=True)
class RequestEvent:
    KIND: ClassVar[str] = "request_log"

    request_id: str
    org_id: int
    api_key_id: int | None
    endpoint: str
    model_requested: str
    model_used: str
    provider: str
    cache_outcome: CacheOutcome
    cache_bypassed: bool
    cache_key: str
    status: int
    error_type: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    upstream_latency_ms: float | None
    streamed: bool
    created_at: float  # Unix time
    # The route's upstream calls (0: a hit, or refused before any), and the reasons of
    # those that failed before the answer: "provider:model=reason; ...".
    attempts: int = 0
    fallback: str = ""
    # Smart routing, when the policy decided (routing.policy.Decision): the mode, tier
    # and score; the model the tier is priced as, and the model the asked cost is
    # priced on (for `auto` the complex tier's).
    route_mode: str = ""
    route_tier: str = ""
    route_score: float | None = None
    route_model: str = ""
    route_baseline: str = ""

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        """The event from its serialised fields (a batch delivered to a task, a spooled
        line of this version or the one before); a missing or unknown field is an
        error, which sets this event aside and no other."""
        return cls(**{**data, "cache_outcome": CacheOutcome(data["cache_outcome"])})

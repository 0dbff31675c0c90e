"""The cache-entry event: an answer stored in the hot tier, on its way to the cold tier.

A frozen dataclass with slots, built on every miss that stores; its serialisation is
orjson's of a dataclass (an object of its fields, by name; the datetimes in RFC 3339).
The payload travels as base64: JSON has no bytes. A field added later gets a default,
so that events spooled by the version before still load.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self


@dataclass(frozen=True, slots=True)
class CacheEntryEvent:
    KIND: ClassVar[str] = "cache_entry"

    org_id: int
    key_hash: str
    endpoint: str
    model: str
    request: dict[str, Any]
    payload: str  # base64 of the packed entry (caching.payload), exactly the hot tier's
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    # Set when the request asked for a max-age, which binds both tiers.
    expires_at: datetime | None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        """The event from its serialised fields (see RequestEvent.from_wire)."""
        expires_at = data["expires_at"]
        return cls(**{**data, "created_at": datetime.fromisoformat(data["created_at"]),
                      "expires_at": datetime.fromisoformat(expires_at) if expires_at else None})

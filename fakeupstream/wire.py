"""What the fake's wire formats (OpenAI, Anthropic Messages, Responses) share: faults,
deterministic answers, tool inputs, replies and refusals.

Answers are deterministic: the same request always gets the same content, a different
request different content. Faults are injected per request by markers in the text of
the last message (or prompt, or input), e.g. ``[[fault:status=500]]``; see ``Faults``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

STREAM_PIECES = 5
SNIPPET_CHARS = 64

# Request fields that do not change the answer, so they stay out of its digest: a
# streamed and a non-streamed request for the same thing get the same content.
NOT_IN_ANSWER = frozenset({"stream", "stream_options", "user", "metadata"})

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]

FAULT_MARKER = "[[fault:"
FAULT_RE = re.compile(r"\[\[fault:([a-z_]+)=(\d+)\]\]")

# Ids only need to be unique per process; a counter is cheaper than randomness and
# lets a test tell a replayed (cached) answer from a fresh one.
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}{_ID_PREFIX}{next(_ids):08x}"


@dataclass(slots=True)
class Faults:
    """Faults asked for by ``[[fault:NAME=N]]`` markers in a request's text.

    status: answer with this HTTP status and the wire format's error body (429 adds
        retry-after).
    retry_after: the retry-after seconds sent with a 429 (default 1).
    delay_ms: sleep this long before answering.
    break_after: streaming, send this many content chunks then drop the connection;
        not streaming, send the headers and this many bytes of the body then drop it.
    chunk_delay_ms: streaming, sleep this long between chunks.
    stream_error: streaming, send the content chunks (only ``break_after`` of them if
        given) then the wire format's error event for this status, and end the stream
        there (as Anthropic does with an overloaded_error mid-stream).
    """

    status: int = 0
    retry_after: int = 1
    delay_ms: int = 0
    break_after: int | None = None
    chunk_delay_ms: int = 0
    stream_error: int = 0


FAULT_NAMES = frozenset(field.name for field in fields(Faults))


class Refused(Exception):
    """A request the fake refuses: the status and the error body (in the wire format of
    the endpoint asked) to send."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode())
        self.status = status
        self.body = body


@dataclass(slots=True)
class Reply:
    """What a POST endpoint answers: a JSON body, or SSE events when streaming.

    Stream events are kept in three parts so that ``break_after`` can stop inside the
    content: the opening events, the content events, then the closing events.
    ``stream_error(status)`` renders the error event of ``Faults.stream_error``.
    """

    body: bytes = b""
    stream_head: bytes = b""
    stream_content: tuple[bytes, ...] = ()
    stream_tail: tuple[bytes, ...] = ()
    stream_error: Callable[[int], bytes] | None = None


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return (len(text) + 3) // 4


def parse_faults(text: str) -> Faults:
    faults = Faults()
    # The substring test keeps the regex off the hot path: almost no request has faults.
    if FAULT_MARKER in text:
        for name, value in FAULT_RE.findall(text):
            if name in FAULT_NAMES:
                setattr(faults, name, int(value))
    return faults


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts (multimodal)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def answer_text(body: dict[str, Any], model: str, echo: str) -> str:
    """The deterministic answer: an echo of the input plus a digest of the request."""
    canonical = orjson.dumps(
        {key: value for key, value in body.items() if key not in NOT_IN_ANSWER},
        option=orjson.OPT_SORT_KEYS,
    )
    digest = hashlib.blake2b(canonical, digest_size=5).hexdigest()
    snippet = echo if len(echo) <= SNIPPET_CHARS else echo[:SNIPPET_CHARS] + "..."
    return f"Echo: {snippet} ({model} {digest})"


def split_pieces(text: str) -> list[str]:
    """Split text into about STREAM_PIECES pieces whose concatenation is the text."""
    size = max(1, math.ceil(len(text) / STREAM_PIECES))
    return [text[start : start + size] for start in range(0, len(text), size)]


def tool_input(schema: Any, echo: str) -> dict[str, Any]:
    """The deterministic arguments of a tool call: each property of the tool's JSON
    schema gets a value of its type (strings the start of the echoed text)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    return {name: _value_for(spec, echo) for name, spec in properties.items()}


def _value_for(spec: Any, echo: str) -> Any:
    if not isinstance(spec, dict):
        return echo[:SNIPPET_CHARS]
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return 42
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value_for(spec.get("items"), echo)] if isinstance(spec.get("items"), dict) else []
    if kind == "object":
        return tool_input(spec, echo)
    return echo[:SNIPPET_CHARS]

"""What a /v1 request asks for: its key, its body and its cache controls, or why it is
refused before anything else happens."""

from dataclasses import dataclass, replace

import orjson

from organizations.keys import key_from_headers
from proxy.controls import CacheControls, parse_cache_controls
from proxy.validation import validate


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered with an error before any cache or upstream work."""

    status: int
    message: str
    code: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    endpoint: str  # "chat/completions", ..., "responses", "messages"
    body: dict
    raw_body: bytes
    stream: bool
    include_usage: bool  # the client asked for the usage chunk of a stream
    controls: CacheControls

    @property
    def model(self) -> str:
        return self.body["model"]


def request_headers(scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def api_key_from(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization")
    x_api_key = headers.get(b"x-api-key")
    return key_from_headers(
        authorization.decode("latin-1") if authorization is not None else None,
        x_api_key.decode("latin-1") if x_api_key is not None else None,
    )


def too_large(limit: int) -> Refusal:
    return Refusal(413, f"The request body is over {limit} bytes", "request_too_large")


def declared_too_large(headers: dict[bytes, bytes], limit: int) -> Refusal | None:
    """Refuse on Content-Length alone, before reading a byte of the body."""
    length = headers.get(b"content-length", b"0")
    return too_large(limit) if length.isdigit() and int(length) > limit else None


def _stateful(endpoint: str, body: dict) -> bool:
    """A Responses API request that continues a stored response or conversation, or
    runs in the background (its answer is a job, not the response)."""
    return endpoint == "responses" and (
        body.get("previous_response_id") is not None or body.get("conversation") is not None
        or body.get("background") is True)


# orjson reads JSON nested up to 1,024 levels but writes at most ~254, and the cache key
# and the provider adapters write the body again (wrapped a level or two deeper).
_MAX_DEPTH = 250
# Below this many brackets a body cannot be nested too deeply: counting them is a memchr
# scan, so an ordinary request costs no second serialisation.
_NESTING_SUSPECT = _MAX_DEPTH - 1


def _too_deep(raw_body: bytes, body: object) -> bool:
    if raw_body.count(b"[") + raw_body.count(b"{") < _NESTING_SUSPECT:
        return False
    wrapped: object = body
    for _ in range(255 - _MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return True
    return False


def parse(endpoint: str, headers: dict[bytes, bytes], raw_body: bytes) -> Request | Refusal:
    try:
        body = orjson.loads(raw_body)
    except orjson.JSONDecodeError:
        return Refusal(400, "The request body is not valid JSON", "invalid_json")
    if _too_deep(raw_body, body):
        return Refusal(400, f"The request body is nested more than {_MAX_DEPTH} levels deep",
                       "invalid_json")
    invalid = validate(endpoint, body)
    if invalid is not None:
        return Refusal(400, invalid.message, "invalid_request", invalid.param)
    controls = parse_cache_controls(
        headers.get(b"cache-control", b"").decode("latin-1"),
        headers.get(b"x-cognitude-cache-namespace", b"").decode("latin-1"),
    )
    if isinstance(controls, str):
        return Refusal(400, controls, "invalid_cache_control")
    if _stateful(endpoint, body):
        # Its answer depends on what the provider holds, not on the request alone.
        controls = replace(controls, no_cache=True, no_store=True)
    return Request(
        endpoint=endpoint,
        body=body,
        raw_body=raw_body,
        stream=body.get("stream") is True,
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        controls=controls,
    )

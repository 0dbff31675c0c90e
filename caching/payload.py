"""What a cache entry holds, as bytes: the same bytes in Redis and in CacheEntry.payload.

Layout: a header line `<org_id> <prompt_tokens> <completion_tokens> <json_len> <sse_len>
<usage_len>\\n` (one line), then the JSON
response body, then the SSE body as the upstream streamed it (without its usage event
and `[DONE]`, empty when the answer came as JSON), then the usage event. A hit answers
with slices of these bytes: no parsing, no re-serialising.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedResponse:
    org_id: int
    # Kept in the header so that a hit is recorded and priced without parsing the body.
    prompt_tokens: int
    completion_tokens: int
    json_body: bytes
    sse_body: bytes
    usage_event: bytes


def pack(response: CachedResponse) -> bytes:
    header = b"%d %d %d %d %d %d\n" % (
        response.org_id, response.prompt_tokens, response.completion_tokens,
        len(response.json_body), len(response.sse_body), len(response.usage_event),
    )
    return header + response.json_body + response.sse_body + response.usage_event


class CorruptEntry(ValueError):
    pass


def unpack(raw: bytes) -> CachedResponse:
    newline = raw.find(b"\n")
    try:
        org_id, prompt_tokens, completion_tokens, json_len, sse_len, usage_len = map(
            int, raw[:newline].split(b" "))
    except ValueError as exc:
        raise CorruptEntry("unreadable cache entry header") from exc
    start = newline + 1
    if min(json_len, sse_len, usage_len) < 0 or len(raw) - start != json_len + sse_len + usage_len:
        raise CorruptEntry("cache entry length does not match its header")
    json_end = start + json_len
    sse_end = json_end + sse_len
    return CachedResponse(org_id, prompt_tokens, completion_tokens, raw[start:json_end],
                          raw[json_end:sse_end], raw[sse_end:])

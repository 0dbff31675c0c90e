"""What a cache entry holds, as bytes: the same bytes in Redis and in CacheEntry.payload.

Layout: a header line `<org_id> <prompt_tokens> <completion_tokens> <json_len> <sse_len>
<usage_len>[ <model_len>]\\n` (one line), then the JSON
response body, then the SSE body as the upstream streamed it (without its usage event
and `[DONE]`, empty when the answer came as JSON), then the usage event, then the model
that made the answer (UTF-8; with its length, only when known: entries from before it
was kept have six fields). A hit answers with slices of these bytes: no parsing, no
re-serialising.
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
    # The model the provider was asked for (a route's target may differ from the name the
    # client asked for): what a hit is priced on. "" when unknown.
    model: str = ""


def pack(response: CachedResponse) -> bytes:
    model = response.model.encode()
    header = b"%d %d %d %d %d %d" % (
        response.org_id, response.prompt_tokens, response.completion_tokens,
        len(response.json_body), len(response.sse_body), len(response.usage_event),
    )
    header += b" %d\n" % len(model) if model else b"\n"
    return header + response.json_body + response.sse_body + response.usage_event + model


class CorruptEntry(ValueError):
    pass


def unpack(raw: bytes) -> CachedResponse:
    newline = raw.find(b"\n")
    header = raw[:newline].split(b" ")
    try:
        if len(header) == 6:
            org_id, prompt_tokens, completion_tokens, json_len, sse_len, usage_len = map(
                int, header)
            model_len = 0
        else:
            (org_id, prompt_tokens, completion_tokens, json_len, sse_len, usage_len,
             model_len) = map(int, header)
    except ValueError as exc:
        raise CorruptEntry("unreadable cache entry header") from exc
    start = newline + 1
    if (min(json_len, sse_len, usage_len, model_len) < 0
            or len(raw) - start != json_len + sse_len + usage_len + model_len):
        raise CorruptEntry("cache entry length does not match its header")
    json_end = start + json_len
    sse_end = json_end + sse_len
    usage_end = sse_end + usage_len
    return CachedResponse(org_id, prompt_tokens, completion_tokens, raw[start:json_end],
                          raw[json_end:sse_end], raw[sse_end:usage_end],
                          raw[usage_end:].decode(errors="replace") if model_len else "")

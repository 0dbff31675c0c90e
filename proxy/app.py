"""The /v1 gateway: a lean ASGI app (Django's ASGI handler costs ~1 ms a request in
thread switches; see design.md). Each request reads top to bottom in `handle_post`:
who is calling, what they ask, the cache, the provider, the cache again."""

import asyncio
import gc
import logging
import os
import time
from dataclasses import dataclass

import orjson
from django.conf import settings

from analytics.buffer import emit
from caching.keys import request_hash
from caching.payload import CachedResponse
from caching.services import CacheHit, cache_lookup, cache_store, coalescer
from cognitude.db import db_threads_stop
from cognitude.errors import error_body
from organizations.keys import key_from_headers
from organizations.services import AuthFailure
from proxy.auth import NO_PROVIDER, Caller, authenticate
from proxy.providers import Provider, UpstreamError, provider_for
from proxy.providers.base import close_sessions
from proxy.streaming import DONE, StreamRecorder, event, stream_from_answer
from proxy.validation import validate

logger = logging.getLogger("cognitude.proxy")

POST_ENDPOINTS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}

HIT, MISS, BYPASS = b"HIT", b"MISS", b"BYPASS"
_JSON = b"application/json"
_SSE = b"text/event-stream"
_NAMESPACE_MAX = 64
# RFC 9111 1.2.2: a max-age too big to represent counts as 2**31 seconds. Bigger
# values overflow Redis's EX (which trips the hot tier for everyone) and timedelta.
_MAX_AGE_CAP = 2**31


# --- Small ASGI helpers ---------------------------------------------------------------

def new_request_id() -> str:
    """32 random hex digits, like a uuid4 but a fifth of its cost (0.35 vs 1.7 µs)."""
    return os.urandom(16).hex()


class BodyTooLarge(Exception):
    pass


async def read_body(receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away while sending")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send, status: int, body: bytes, headers: list, content_type: bytes = _JSON):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def respond_error(send, status: int, message: str, headers: list, *,
                        code: str | None = None, param: str | None = None) -> None:
    await respond(send, status, error_body(status, message, code=code, param=param), headers)


# --- What the request says ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CacheControls:
    no_cache: bool = False  # skip the lookup, ask upstream, refresh the entry
    no_store: bool = False  # do not store this answer
    max_age: int | None = None  # TTL for this entry, both tiers
    namespace: str = ""


def parse_cache_controls(cache_control: str, namespace: str) -> CacheControls | str:
    no_cache = no_store = False
    max_age = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name in ("max-age", "s-maxage"):
            # isascii: "²" is a digit to isdigit() but not to int().
            if not (value.isascii() and value.isdigit()) or int(value) == 0:
                return "Cache-Control max-age must be a positive whole number of seconds"
            max_age = min(int(value), _MAX_AGE_CAP)
    if len(namespace) > _NAMESPACE_MAX or not namespace.isprintable():
        return f"X-Cognitude-Cache-Namespace must be at most {_NAMESPACE_MAX} printable characters"
    return CacheControls(no_cache, no_store, max_age, namespace)


def request_headers(scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def api_key_from(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization")
    x_api_key = headers.get(b"x-api-key")
    return key_from_headers(
        authorization.decode("latin-1") if authorization is not None else None,
        x_api_key.decode("latin-1") if x_api_key is not None else None,
    )


# --- Answering from the cache ---------------------------------------------------------

async def send_hit(send, hit: CachedResponse, tier: str, *, stream: bool,
                   include_usage: bool, headers: list) -> None:
    headers = [*headers, (b"x-cognitude-cache", HIT), (b"x-cognitude-cache-tier", tier.encode())]
    if not stream:
        await respond(send, 200, hit.json_body, headers)
        return
    if hit.sse_body:
        body = hit.sse_body + (hit.usage_event if include_usage else b"") + DONE
    else:
        body = stream_from_answer(hit.json_body, include_usage=include_usage)
    await respond(send, 200, body, [*headers, (b"cache-control", b"no-cache")], _SSE)


# --- The record of a request (analytics) ----------------------------------------------

# Read once: a settings lookup per request shows in the hit path's profile.
_RECORDING = settings.COGNITUDE_REQUEST_LOG

_OUTCOMES = {"redis": "hit_redis", "memory": "hit_memory", "postgres": "hit_postgres",
             "coalesced": "hit_coalesced"}


@dataclass(slots=True)
class Record:
    """What analytics keeps of one request; each step of the request fills in its part."""

    request_id: str
    endpoint: str
    started: float
    org_id: int | None = None
    api_key_id: int | None = None
    model_requested: str = ""
    model_used: str = ""
    provider: str = ""
    cache_outcome: str = "none"
    cache_bypassed: bool = False
    cache_key: str = ""
    status: int = 0
    error_type: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    upstream_latency_ms: float | None = None
    streamed: bool = False

    def hit(self, response: CachedResponse, tier: str) -> None:
        self.cache_outcome = _OUTCOMES[tier]
        self.prompt_tokens = response.prompt_tokens
        self.completion_tokens = response.completion_tokens
        self.model_used = self.model_requested

    def emit(self) -> None:
        if self.org_id is None or not _RECORDING:
            return  # unauthenticated (nobody's analytics to put it in), or recording off
        emit("request_log", {
            "request_id": self.request_id,
            "org_id": self.org_id,
            "api_key_id": self.api_key_id,
            "endpoint": self.endpoint,
            "model_requested": self.model_requested,
            "model_used": self.model_used,
            "provider": self.provider,
            "cache_outcome": self.cache_outcome,
            "cache_bypassed": self.cache_bypassed,
            "cache_key": self.cache_key,
            "status": self.status,
            "error_type": self.error_type,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "upstream_latency_ms": self.upstream_latency_ms,
            "streamed": self.streamed,
            "created_at": time.time(),
        })


# --- Asking upstream ------------------------------------------------------------------

@dataclass(slots=True)
class Ask:
    """One upstream call's context."""

    caller: Caller
    endpoint: str
    body: dict
    raw_body: bytes
    key_hash: str
    ttl: int
    ttl_is_explicit: bool
    store: bool
    outcome: bytes
    stream: bool
    include_usage: bool


def _usage_tokens(usage: object) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


async def _store(ask: Ask, response: CachedResponse) -> None:
    await cache_store(
        org_id=ask.caller.org_id, key_hash=ask.key_hash, response=response, ttl=ask.ttl,
        ttl_is_explicit=ask.ttl_is_explicit, endpoint=ask.endpoint,
        model=ask.body["model"], request=ask.body,
    )


def _upstream_headers(status: int, retry_after: str | None) -> list:
    return [(b"retry-after", retry_after.encode())] if retry_after and status == 429 else []


async def provider_or_refusal(send, caller: Caller, headers: list) -> Provider | None:
    """The caller's provider adapter, or None once the client has been told why not."""
    if caller.upstream is None:
        problem = caller.upstream_problem or NO_PROVIDER
        await respond_error(send, problem.status, problem.message, headers, code=problem.code)
        return None
    return provider_for(caller.upstream.kind)(
        base_url=caller.upstream.base_url, api_key=caller.upstream.api_key
    )


async def ask_upstream(send, receive, ask: Ask, headers: list,
                       record: "Record") -> CachedResponse | None:
    """Forward to the organization's provider and answer the client; returns what was
    stored in the cache, if anything."""
    caller = ask.caller
    provider = await provider_or_refusal(send, caller, headers)
    if provider is None:
        return None
    path = "/" + ask.endpoint
    headers = [*headers, (b"x-cognitude-cache", ask.outcome)]
    if ask.stream:
        return await _relay_stream(send, receive, ask, provider, path, headers, record)
    asked_at = time.perf_counter()
    try:
        upstream = await provider.send(path, ask.raw_body)
    except UpstreamError as exc:
        record.error_type = exc.code
        await respond_error(send, exc.status, exc.message, headers, code=exc.code)
        return None
    record.upstream_latency_ms = (time.perf_counter() - asked_at) * 1000
    stored = None
    if upstream.status == 200:
        try:
            answer = orjson.loads(upstream.body)
        except orjson.JSONDecodeError:
            answer = None  # not JSON: hand it on, but never cache it
        if isinstance(answer, dict):
            record.model_used = str(answer.get("model") or "")
            record.prompt_tokens, record.completion_tokens = _usage_tokens(answer.get("usage"))
            if ask.store:
                stored = CachedResponse(caller.org_id, record.prompt_tokens,
                                        record.completion_tokens, upstream.body, b"", b"")
                await _store(ask, stored)
    await respond(send, upstream.status, upstream.body,
                  [*headers, *_upstream_headers(upstream.status, upstream.retry_after)],
                  upstream.content_type.encode())
    return stored


async def _watch_disconnect(receive, task: asyncio.Task) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()


async def _relay_stream(send, receive, ask: Ask, provider, path: str,
                        headers: list, record: "Record") -> CachedResponse | None:
    body = dict(ask.body)
    # Always ask for the usage chunk: the cache and the costing need it; the recorder
    # hands it on only to clients that asked.
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    recorder = StreamRecorder(client_wants_usage=ask.include_usage)
    watcher = asyncio.create_task(_watch_disconnect(receive, asyncio.current_task()))
    started = False
    asked_at = time.perf_counter()
    try:
        async with provider.stream(path, orjson.dumps(body)) as upstream:
            if upstream.status != 200 or upstream.lines is None:
                await respond(send, upstream.status, upstream.body,
                              [*headers, *_upstream_headers(upstream.status, upstream.retry_after)],
                              upstream.content_type.encode())
                return None
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", _SSE), (b"cache-control", b"no-cache"), *headers]})
            started = True
            async for line in upstream.lines:
                data = recorder.feed(line)
                if data is not None:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if recorder.done:
                    break
            tail = DONE if recorder.done else event(
                error_body(502, "The upstream stream ended early", code="upstream_stream_broken"))
            await send({"type": "http.response.body", "body": tail})
    except UpstreamError as exc:
        record.error_type = exc.code
        if not started:
            await respond_error(send, exc.status, exc.message, headers, code=exc.code)
        else:
            # Headers are gone; say it in the stream, where the OpenAI SDK raises it.
            await send({"type": "http.response.body",
                        "body": event(error_body(exc.status, exc.message,
                                                 code="upstream_stream_broken"))})
        return None
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            # The client went away: leaving the `async with` closed the upstream call.
            asyncio.current_task().uncancel()
            record.error_type = "client_disconnected"
            return None
        raise
    finally:
        watcher.cancel()
        record.upstream_latency_ms = (time.perf_counter() - asked_at) * 1000
        record.prompt_tokens, record.completion_tokens = _usage_tokens(recorder.usage)
        if recorder.chunks:
            record.model_used = str(recorder.chunks[0].get("model") or "")
    if not recorder.complete:
        record.error_type = record.error_type or "upstream_stream_broken"
        return None
    if not ask.store:
        return None
    stored = CachedResponse(ask.caller.org_id, record.prompt_tokens, record.completion_tokens,
                            recorder.assembled(), bytes(recorder.sse_body), recorder.usage_event)
    await _store(ask, stored)
    return stored


# --- The request, top to bottom -------------------------------------------------------

async def handle_post(scope, receive, send, endpoint: str) -> None:
    record = Record(request_id=new_request_id(), endpoint=endpoint,
                    started=time.perf_counter())

    async def send_and_note(message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
        await send(message)

    try:
        await answer_post(scope, receive, send_and_note, record)
    finally:
        record.emit()


async def answer_post(scope, receive, send, record: Record) -> None:
    headers = [(b"x-request-id", record.request_id.encode())]
    incoming = request_headers(scope)

    caller = await authenticate(api_key_from(incoming))
    if isinstance(caller, AuthFailure):
        await respond_error(send, 401, "Invalid or missing API key", headers,
                            code="invalid_api_key")
        return
    record.org_id, record.api_key_id = caller.org_id, caller.key_id
    record.provider = caller.upstream.kind if caller.upstream else ""

    limit = settings.COGNITUDE_MAX_BODY_BYTES
    length = incoming.get(b"content-length", b"0")
    if length.isdigit() and int(length) > limit:
        await respond_error(send, 413, f"The request body is over {limit} bytes", headers,
                            code="request_too_large")
        return
    try:
        raw_body = await read_body(receive, limit)
    except BodyTooLarge:
        await respond_error(send, 413, f"The request body is over {limit} bytes", headers,
                            code="request_too_large")
        return
    try:
        body = orjson.loads(raw_body)
    except orjson.JSONDecodeError:
        await respond_error(send, 400, "The request body is not valid JSON", headers,
                            code="invalid_json")
        return
    invalid = validate(record.endpoint, body)
    if invalid is not None:
        await respond_error(send, 400, invalid.message, headers, param=invalid.param,
                            code="invalid_request")
        return
    controls = parse_cache_controls(
        incoming.get(b"cache-control", b"").decode("latin-1"),
        incoming.get(b"x-cognitude-cache-namespace", b"").decode("latin-1"),
    )
    if isinstance(controls, str):
        await respond_error(send, 400, controls, headers, code="invalid_cache_control")
        return

    stream = body.get("stream") is True
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    key_hash = request_hash(endpoint=record.endpoint, body=body, namespace=controls.namespace)
    ttl = controls.max_age or caller.cache_ttl
    record.model_requested, record.streamed, record.cache_key = body["model"], stream, key_hash
    record.cache_bypassed = controls.no_cache or controls.no_store
    ask = Ask(caller=caller, endpoint=record.endpoint, body=body, raw_body=raw_body,
              key_hash=key_hash, ttl=ttl, ttl_is_explicit=controls.max_age is not None,
              store=not controls.no_store, outcome=BYPASS if controls.no_cache else MISS,
              stream=stream, include_usage=include_usage)

    if controls.no_cache:
        record.cache_outcome = "bypass"
        await ask_upstream(send, receive, ask, headers, record)
        return
    hit: CacheHit | None = await cache_lookup(org_id=caller.org_id, key_hash=key_hash, ttl=ttl)
    if hit is not None:
        record.hit(hit.response, hit.tier)
        await send_hit(send, hit.response, hit.tier, stream=stream,
                       include_usage=include_usage, headers=headers)
        return
    record.cache_outcome = "miss"
    if controls.no_store:
        await ask_upstream(send, receive, ask, headers, record)
        return
    async with coalescer.turn(org_id=caller.org_id, key_hash=key_hash) as turn:
        if turn.stored is not None:
            record.hit(turn.stored, "coalesced")
            await send_hit(send, turn.stored, "coalesced", stream=stream,
                           include_usage=include_usage, headers=headers)
            return
        turn.result = await ask_upstream(send, receive, ask, headers, record)


async def handle_models(scope, receive, send) -> None:
    headers = [(b"x-request-id", new_request_id().encode())]
    caller = await authenticate(api_key_from(request_headers(scope)))
    if isinstance(caller, AuthFailure):
        await respond_error(send, 401, "Invalid or missing API key", headers,
                            code="invalid_api_key")
        return
    provider = await provider_or_refusal(send, caller, headers)
    if provider is None:
        return
    try:
        upstream = await provider.send("/models", None)
    except UpstreamError as exc:
        await respond_error(send, exc.status, exc.message, headers, code=exc.code)
        return
    await respond(send, upstream.status, upstream.body, headers, upstream.content_type.encode())


async def lifespan(receive, send) -> None:
    from analytics.buffer import buffer
    from caching.hot import hot_tier

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Django and its apps leave ~100k long-lived objects; moving them out of the
            # collector's sight keeps full collections from pausing the loop for tens
            # of milliseconds (long enough to trip the Redis timeout under load).
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_sessions()
            await hot_tier().close()
            await asyncio.get_running_loop().run_in_executor(None, buffer.flush)
            db_threads_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path, method = scope["path"], scope["method"]
    headers = [(b"x-request-id", new_request_id().encode())]
    endpoint = POST_ENDPOINTS.get(path)
    if endpoint is not None:
        if method != "POST":
            await respond_error(send, 405, f"Use POST for {path}",
                                [*headers, (b"allow", b"POST")])
            return
        try:
            await handle_post(scope, receive, send, endpoint)
        except ConnectionResetError:
            return
    elif path == "/v1/models":
        if method != "GET":
            await respond_error(send, 405, "Use GET for /v1/models",
                                [*headers, (b"allow", b"GET")])
            return
        await handle_models(scope, receive, send)
    else:
        await respond_error(send, 404, f"Unknown endpoint {method} {path}", headers,
                            code="unknown_url")

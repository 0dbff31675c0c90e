"""Asking upstream and answering the client: JSON as one body, streams chunk by chunk
as they arrive; what can be cached is stored on the way."""

import asyncio
import time
from dataclasses import dataclass

import orjson

from caching.payload import CachedResponse
from caching.services import CacheHit, cache_store
from cognitude.errors import error_body
from proxy.auth import NO_PROVIDER, Caller
from proxy.http import SSE, respond, respond_error
from proxy.parse import Request
from proxy.providers import Provider, UpstreamError, provider_for
from proxy.record import Record
from proxy.streaming import DONE, StreamRecorder, event, stream_from_answer

HIT, MISS, BYPASS = b"HIT", b"MISS", b"BYPASS"


@dataclass(slots=True)
class Ask:
    """One upstream call's context."""

    caller: Caller
    request: Request
    key_hash: str
    ttl: int
    outcome: bytes  # the X-Cognitude-Cache value: MISS or BYPASS
    lock_token: str = ""  # the coalescing lock this request leads with, released by the store


async def send_hit(send, hit: CacheHit, *, request: Request, headers: list,
                   record: Record) -> None:
    """Answer from the cache, as JSON or replayed as SSE, whichever the client asked."""
    record.hit(hit.response, hit.tier)
    cached = hit.response
    headers = [*headers, (b"x-cognitude-cache", HIT),
               (b"x-cognitude-cache-tier", hit.tier.encode())]
    if not request.stream:
        await respond(send, 200, cached.json_body, headers)
        return
    if cached.sse_body:
        body = cached.sse_body + (cached.usage_event if request.include_usage else b"") + DONE
    else:
        body = stream_from_answer(cached.json_body, include_usage=request.include_usage)
    await respond(send, 200, body, [*headers, (b"cache-control", b"no-cache")], SSE)


def _usage_tokens(usage: object) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


async def _store(ask: Ask, response: CachedResponse) -> None:
    controls = ask.request.controls
    await cache_store(
        org_id=ask.caller.org_id, key_hash=ask.key_hash, response=response, ttl=ask.ttl,
        ttl_is_explicit=controls.max_age is not None, endpoint=ask.request.endpoint,
        model=ask.request.model, request=ask.request.body, unlock=ask.lock_token,
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
                       record: Record) -> CachedResponse | None:
    """Forward to the organization's provider and answer the client; returns what was
    stored in the cache, if anything."""
    provider = await provider_or_refusal(send, ask.caller, headers)
    if provider is None:
        return None
    path = "/" + ask.request.endpoint
    headers = [*headers, (b"x-cognitude-cache", ask.outcome)]
    if ask.request.stream:
        return await _relay_stream(send, receive, ask, provider, path, headers, record)
    asked_at = time.perf_counter()
    try:
        upstream = await provider.send(path, ask.request.raw_body)
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
            if not ask.request.controls.no_store:
                stored = CachedResponse(ask.caller.org_id, record.prompt_tokens,
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


async def _relay_stream(send, receive, ask: Ask, provider: Provider, path: str,
                        headers: list, record: Record) -> CachedResponse | None:
    body = dict(ask.request.body)
    # Always ask for the usage chunk: the cache and the costing need it; the recorder
    # hands it on only to clients that asked.
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    recorder = StreamRecorder(client_wants_usage=ask.request.include_usage)
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
                (b"content-type", SSE), (b"cache-control", b"no-cache"), *headers]})
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
    if ask.request.controls.no_store:
        return None
    stored = CachedResponse(ask.caller.org_id, record.prompt_tokens, record.completion_tokens,
                            recorder.assembled(), bytes(recorder.sse_body), recorder.usage_event)
    await _store(ask, stored)
    return stored

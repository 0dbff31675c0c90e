"""Asking upstream and answering the client: the route's targets tried in turn
(proxy/attempts.py), JSON as one body, streams event by event as they arrive; what can
be cached is stored on the way."""

import asyncio
import math
import time
from dataclasses import dataclass, replace

import orjson

from caching.payload import CachedResponse
from caching.services import CacheHit, cache_store
from proxy.attempts import Attempts, error_reason, status_reason, targets_for
from proxy.auth import NO_PROVIDER, Caller, UpstreamProblem
from proxy.http import SSE, respond, respond_error
from proxy.parse import Request
from proxy.providers import UpstreamError, UpstreamResponse, provider_for
from proxy.providers.base import StreamingUpstream
from proxy.record import Record
from proxy.streaming import DONE, StreamRecorder, stream_from_answer
from proxy.typed_sse import (
    MessagesRecorder,
    ResponsesRecorder,
    messages_stream_from_answer,
    responses_stream_from_answer,
)
from routing.affinity import response_provider_of, response_provider_remember
from routing.table import Route, Target

HIT, MISS, BYPASS = b"HIT", b"MISS", b"BYPASS"
# A hit asked nobody: no provider, no model, no fallback to explain.
_HIT_ATTEMPTS = (b"x-cognitude-attempts", b"0")
# The endpoints that take stream_options (the usage chunk comes only when asked for).
_CHAT_LIKE = frozenset({"chat/completions", "completions"})
_API_NAMES = {"responses": "the Responses API (/v1/responses)",
              "messages": "the Messages API (/v1/messages)",
              "completions": "/v1/completions", "embeddings": "/v1/embeddings",
              "chat/completions": "/v1/chat/completions"}


@dataclass(slots=True)
class Ask:
    """One upstream call's context."""

    caller: Caller
    request: Request
    key_hash: str
    ttl: int
    outcome: bytes  # the X-Cognitude-Cache value: MISS or BYPASS
    lock_token: str = ""  # the coalescing lock this request leads with, released by the store
    model: str = ""  # the model to route by: smart routing's choice, else the one asked
    # Smart routing decided (its X-Cognitude-Route header explains the request).
    decided: bool = False


def _replayed(endpoint: str, cached: CachedResponse, include_usage: bool) -> bytes:
    """A cached answer as the stream the client asked for."""
    if endpoint in _CHAT_LIKE:
        if cached.sse_body:
            return cached.sse_body + (cached.usage_event if include_usage else b"") + DONE
        return stream_from_answer(cached.json_body, include_usage=include_usage)
    if cached.sse_body:
        return cached.sse_body
    if endpoint == "responses":
        return responses_stream_from_answer(cached.json_body)
    return messages_stream_from_answer(cached.json_body)


async def send_hit(send, hit: CacheHit, *, request: Request, headers: list,
                   record: Record) -> None:
    """Answer from the cache, as JSON or replayed as SSE, whichever the client asked."""
    record.hit(hit.response, hit.tier)
    cached = hit.response
    headers = [*headers, (b"x-cognitude-cache", HIT),
               (b"x-cognitude-cache-tier", hit.tier.encode()), _HIT_ATTEMPTS]
    if not request.stream:
        await respond(send, 200, cached.json_body, headers)
        return
    body = _replayed(request.endpoint, cached, request.include_usage)
    await respond(send, 200, body, [*headers, (b"cache-control", b"no-cache")], SSE)


def _usage_tokens(usage: object) -> tuple[int, int]:
    """(prompt, completion) tokens in OpenAI chat's names or the Responses and
    Messages APIs' (input, output)."""
    if not isinstance(usage, dict):
        return 0, 0
    return (int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
            int(usage.get("completion_tokens") or usage.get("output_tokens") or 0))


async def _store(ask: Ask, response: CachedResponse) -> None:
    controls = ask.request.controls
    await cache_store(
        org_id=ask.caller.org_id, key_hash=ask.key_hash, response=response, ttl=ask.ttl,
        ttl_is_explicit=controls.max_age is not None, endpoint=ask.request.endpoint,
        model=ask.request.model, request=ask.request.body, unlock=ask.lock_token,
    )


def _upstream_headers(status: int, retry_after: str | None) -> list:
    return [(b"retry-after", retry_after.encode())] if retry_after and status == 429 else []


async def _route(ask: Ask) -> Route | UpstreamProblem:
    """The route this request takes: the caller's route for the model, narrowed to
    the targets that speak its API (and, continuing a response, to the provider that
    made it); or why there is none."""
    caller, request = ask.caller, ask.request
    if caller.problem is not None:
        return caller.problem
    route = caller.routing.route_for(ask.model or request.model)
    if route is None:
        return NO_PROVIDER
    if not route.targets:
        return UpstreamProblem(400, f"The model route '{route.name}' has no enabled target",
                               "route_has_no_target")
    usable = targets_for(route, request.endpoint)
    if not usable.targets:
        where = f"model route '{route.name}'" if route.explicit else "default provider"
        return UpstreamProblem(
            400, f"The {where} has no provider that serves {_API_NAMES[request.endpoint]}",
            "route_has_no_target")
    previous = request.body.get("previous_response_id") if request.endpoint == "responses" else None
    if isinstance(previous, str):
        provider_id = await response_provider_of(org_id=caller.org_id, response_id=previous)
        same = tuple(t for t in usable.targets if t.provider.id == provider_id)
        if same:
            # Only the provider that made it knows the previous response: no fallback.
            usable = replace(usable, targets=same)
    if ask.decided and usable.explicit:
        # The route is in smart routing's X-Cognitude-Route (`model=`), which one
        # header carries.
        usable = replace(usable, explicit=False)
    return usable


def _json_body(request: Request, target: Target) -> tuple[dict, bytes | None]:
    """The body for this target, and the client's exact bytes when nothing changed."""
    if target.upstream_model == request.model:
        return request.body, request.raw_body
    return {**request.body, "model": target.upstream_model}, None


def _stream_body(request: Request, target: Target) -> dict:
    body = {**request.body, "model": target.upstream_model}
    if request.endpoint in _CHAT_LIKE:
        # Always ask for the usage chunk: the cache and the costing need it; the
        # recorder hands it on only to clients that asked.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return body


def _note_attempts(record: Record, attempts: Attempts) -> None:
    record.attempts, record.fallback = attempts.made, attempts.fallback()
    if attempts.target is not None:
        record.provider = attempts.target.provider.name
        record.model_used = attempts.target.upstream_model


async def _unavailable(send, attempts: Attempts, headers: list) -> None:
    """Every target is skipped (breakers open): say so, and when to come back."""
    wait = attempts.reopens_in()
    await respond_error(
        send, 503, f"Every provider of model '{attempts.route.name}' is failing; "
        f"the gateway tries again in {wait:.0f} s", [
            *headers, (b"retry-after", b"%d" % max(1, math.ceil(wait)))],
        code="providers_unavailable")


async def _remember_response(ask: Ask, target: Target, response_id: object) -> None:
    if ask.request.endpoint == "responses" and isinstance(response_id, str) and response_id:
        await response_provider_remember(org_id=ask.caller.org_id, response_id=response_id,
                                         provider_id=target.provider.id)


async def ask_upstream(send, receive, ask: Ask, headers: list,
                       record: Record) -> CachedResponse | None:
    """Forward along the caller's route and answer the client; returns what was stored
    in the cache, if anything."""
    route = await _route(ask)
    if isinstance(route, UpstreamProblem):
        await respond_error(send, route.status, route.message, headers, code=route.code)
        return None
    attempts = await Attempts.begin(route)
    headers = [*headers, (b"x-cognitude-cache", ask.outcome)]
    if ask.request.stream:
        return await _relay_stream(send, receive, ask, attempts, headers, record)
    return await _relay_json(send, ask, attempts, headers, record)


async def _relay_json(send, ask: Ask, attempts: Attempts, headers: list,
                      record: Record) -> CachedResponse | None:
    request = ask.request
    last: UpstreamResponse | UpstreamError | None = None
    asked_at = time.perf_counter()
    while (target := await attempts.next()) is not None:
        body, raw = _json_body(request, target)
        attempt_at = time.perf_counter()
        try:
            last = await provider_for(target.provider).send(request.endpoint, body, raw)
        except UpstreamError as exc:
            last = exc
            if await attempts.failure(error_reason(exc)):
                continue
            break
        reason = status_reason(last.status)
        if reason is None:
            await attempts.answered(time.perf_counter() - attempt_at)
            break
        if not await attempts.failure(reason, retry_after=last.retry_after):
            break
    _note_attempts(record, attempts)
    headers = [*headers, *attempts.headers()]
    if last is None:
        await _unavailable(send, attempts, headers)
        return None
    record.upstream_latency_ms = (time.perf_counter() - asked_at) * 1000
    if isinstance(last, UpstreamError):
        record.error_type = last.code
        await respond_error(send, last.status, last.message, headers, code=last.code)
        return None
    stored = None
    if last.status == 200:
        try:
            answer = orjson.loads(last.body)
        except orjson.JSONDecodeError:
            answer = None  # not JSON: hand it on, but never cache it
        if isinstance(answer, dict):
            record.model_used = str(answer.get("model") or record.model_used)
            record.prompt_tokens, record.completion_tokens = _usage_tokens(answer.get("usage"))
            await _remember_response(ask, attempts.target, answer.get("id"))
            if not request.controls.no_store:
                stored = CachedResponse(ask.caller.org_id, record.prompt_tokens,
                                        record.completion_tokens, last.body, b"", b"",
                                        record.model_used)
                await _store(ask, stored)
    await respond(send, last.status, last.body,
                  [*headers, *_upstream_headers(last.status, last.retry_after)],
                  last.content_type.encode())
    return stored


def _recorder(request: Request) -> StreamRecorder | ResponsesRecorder | MessagesRecorder:
    if request.endpoint == "responses":
        return ResponsesRecorder()
    if request.endpoint == "messages":
        return MessagesRecorder()
    return StreamRecorder(client_wants_usage=request.include_usage)


async def _first_data(upstream: StreamingUpstream, recorder) -> bytes:
    """The first bytes of the upstream's stream for the client; an UpstreamError if the
    stream fails first (broken, timed out, an error as its first event, or empty), so
    that the request may still fall back."""
    async for line in upstream.lines:
        data = recorder.feed(line)
        if data is None:
            continue
        if recorder.failed:
            raise UpstreamError(502, "The upstream stream failed before any data",
                                code="upstream_stream_broken")
        return data
    raise UpstreamError(502, "The upstream stream ended before any data",
                        code="upstream_stream_broken")


async def _relay_rest(send, upstream: StreamingUpstream, recorder, record: Record) -> None:
    """The rest of a stream the client is already receiving: no fallback now, so a
    failure is told in the stream, where the SDKs raise it."""
    try:
        async for line in upstream.lines:
            data = recorder.feed(line)
            if data is not None:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if recorder.done:
                break
        await send({"type": "http.response.body", "body": recorder.end()})
    except UpstreamError as exc:
        record.error_type = exc.code
        await send({"type": "http.response.body", "body": recorder.broken(exc.status,
                                                                          exc.message)})


async def _watch_disconnect(receive, task: asyncio.Task) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()


async def _relay_stream(send, receive, ask: Ask, attempts: Attempts, headers: list,
                        record: Record) -> CachedResponse | None:
    request = ask.request
    watcher = asyncio.create_task(_watch_disconnect(receive, asyncio.current_task()))
    recorder = None
    last: StreamingUpstream | UpstreamError | None = None
    started = False
    asked_at = time.perf_counter()
    try:
        while (target := await attempts.next()) is not None:
            recorder = _recorder(request)
            attempt_at = time.perf_counter()
            try:
                async with provider_for(target.provider).stream(
                        request.endpoint, _stream_body(request, target)) as upstream:
                    if upstream.status != 200 or upstream.lines is None:
                        last = upstream
                        reason = status_reason(upstream.status)
                        if reason is None:
                            await attempts.answered(time.perf_counter() - attempt_at)
                            break
                        if await attempts.failure(reason, retry_after=upstream.retry_after):
                            continue
                        break
                    first = await _first_data(upstream, recorder)
                    await attempts.answered(time.perf_counter() - attempt_at)
                    if isinstance(recorder, ResponsesRecorder):
                        # Known from response.created, before the client can follow up.
                        await _remember_response(ask, target, recorder.response_id)
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", SSE), (b"cache-control", b"no-cache"), *headers,
                        *attempts.headers()]})
                    started = True
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                    await _relay_rest(send, upstream, recorder, record)
                    break
            except UpstreamError as exc:
                last = exc
                if await attempts.failure(error_reason(exc)):
                    continue
                break
        if not started:
            await _answer_unstarted(send, attempts, headers, last, record)
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            # The client went away: leaving the `async with` closed the upstream call.
            asyncio.current_task().uncancel()
            record.error_type = "client_disconnected"
            return None
        raise
    finally:
        watcher.cancel()
        _note_attempts(record, attempts)
        record.upstream_latency_ms = (time.perf_counter() - asked_at) * 1000
        if recorder is not None and started:
            record.prompt_tokens, record.completion_tokens = _usage_tokens(recorder.usage)
            record.model_used = recorder.model or record.model_used
    if not started:
        return None
    if not recorder.complete:
        record.error_type = record.error_type or "upstream_stream_broken"
        return None
    if request.controls.no_store:
        return None
    stored = CachedResponse(ask.caller.org_id, record.prompt_tokens, record.completion_tokens,
                            recorder.assembled(), bytes(recorder.sse_body), recorder.usage_event,
                            record.model_used)
    await _store(ask, stored)
    return stored


async def _answer_unstarted(send, attempts: Attempts, headers: list,
                            last: StreamingUpstream | UpstreamError | None,
                            record: Record) -> None:
    """A stream request that never got a stream: the last failure, as JSON."""
    headers = [*headers, *attempts.headers()]
    if last is None:
        await _unavailable(send, attempts, headers)
    elif isinstance(last, UpstreamError):
        record.error_type = last.code
        await respond_error(send, last.status, last.message, headers, code=last.code)
    else:
        await respond(send, last.status, last.body,
                      [*headers, *_upstream_headers(last.status, last.retry_after)],
                      last.content_type.encode())

"""The /v1 gateway: a lean ASGI app (Django's ASGI handler costs ~1 ms a request in
thread switches; see design.md). Each request reads top to bottom in `answer_post`:
who is calling, what they ask, the cache, the route's providers, the cache again."""

import asyncio
import gc
import math
import time

from django.conf import settings

from caching.keys import request_hash
from caching.outcomes import CacheOutcome
from caching.payload import CachedResponse
from caching.services import cache_lookup, coalescer
from cognitude.db import DatabaseUnavailable, db_threads_stop, loop_connections_close
from proxy.auth import UpstreamProblem
from proxy.catalog import model_retrieve, models_list
from proxy.feedback import handle_feedback
from proxy.http import (
    BodyTooLarge,
    header_value,
    new_request_id,
    read_body,
    respond,
    respond_error,
)
from proxy.parse import (
    Refusal,
    declared_too_large,
    parse,
    request_headers,
    too_large,
)
from proxy.providers import UpstreamError
from proxy.providers.base import close_sessions
from proxy.record import Record
from proxy.relay import BYPASS, MISS, Ask, ask_upstream, send_hit
from proxy.smart import routed_namespace, routing_decision, routing_policy_for
from proxy.who import caller_for
from ratelimit.gate import RequestLimits
from routing.shared import shared_redis_close

POST_ENDPOINTS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",  # OpenAI's Responses API
    "/v1/messages": "messages",  # Anthropic's Messages API
}
MODELS_PATH = "/v1/models"
_RETRY_AFTER = str(max(1, math.ceil(settings.COGNITUDE_DATABASE_BREAKER_SECONDS))).encode()
FEEDBACK_PATH = "/v1/feedback"


async def refuse(send, refusal: Refusal, headers: list) -> None:
    await respond_error(send, refusal.status, refusal.message, headers,
                        code=refusal.code, param=refusal.param)


async def database_unavailable(send, request_id: str) -> None:
    # PostgreSQL down and nothing remembered to answer from (a key not seen lately):
    # not a 401, the key may be good; not a wait, the breaker already knows.
    await respond_error(
        send, 503, "The database is unavailable: this API key cannot be checked right now",
        [(b"x-request-id", request_id.encode()), (b"retry-after", _RETRY_AFTER)],
        code="database_unavailable")


async def handle_post(scope, receive, send, endpoint: str) -> None:
    record = Record(request_id=new_request_id(), endpoint=endpoint,
                    started=time.perf_counter())

    async def send_and_note(message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
        await send(message)

    limits = RequestLimits()
    try:
        await answer_post(scope, receive, send_and_note, record, limits)
    except DatabaseUnavailable:
        if record.status:
            raise  # the answer had begun: nothing else can be said
        await database_unavailable(send_and_note, record.request_id)
    finally:
        record.emit()
        limits.settle(model=record.model_used or record.model_requested, status=record.status,
                      prompt_tokens=record.prompt_tokens,
                      completion_tokens=record.completion_tokens)


async def answer_post(scope, receive, send, record: Record, limits: RequestLimits) -> None:
    headers = [(b"x-request-id", record.request_id.encode())]
    incoming = request_headers(scope)

    # Who is calling.
    caller = await caller_for(scope, send, headers)
    if caller is None:
        return
    record.org_id, record.api_key_id = caller.org_id, caller.key_id

    # What they ask.
    limit = settings.COGNITUDE_MAX_BODY_BYTES
    refusal = declared_too_large(incoming, limit)
    if refusal is not None:
        await refuse(send, refusal, headers)
        return
    try:
        raw_body = await read_body(receive, limit)
    except BodyTooLarge:
        await refuse(send, too_large(limit), headers)
        return
    request = parse(record.endpoint, incoming, raw_body)
    if isinstance(request, Refusal):
        await refuse(send, request, headers)
        return
    controls = request.controls
    record.model_requested, record.streamed = request.model, request.stream

    # Which model: smart routing, when the organization's policy applies (no query).
    policy = routing_policy_for(caller.routing, request) if caller.problem is None else None
    if isinstance(policy, Refusal):
        await refuse(send, policy, headers)
        return
    # The key stays what the client asked, in the policy's generation.
    namespace = controls.namespace if policy is None else routed_namespace(
        controls.namespace, policy, request.model)
    key_hash = request_hash(endpoint=request.endpoint, body=request.body,
                            namespace=namespace)
    model, limited_body, decision = request.model, request.body, None
    if policy is not None:
        decision = routing_decision(org_id=caller.org_id, policy=policy, request=request,
                                    key_hash=key_hash)
        record.routed(decision)
        headers.append((b"x-cognitude-route", header_value(decision.header())))
        model = decision.send
        limited_body = {**request.body, "model": model}  # limits and prices of the model sent
    ttl = controls.max_age or caller.cache_ttl
    record.cache_key = key_hash
    record.cache_bypassed = controls.no_cache or controls.no_store

    # May they: every limit and budget that applies, checked in one Redis round trip (a
    # miss takes what only a call upstream spends before it goes: `upstream`).
    refused = await limits.take(org_id=caller.org_id, key_id=caller.key_id,
                                endpoint=request.endpoint, body=limited_body,
                                body_size=len(raw_body), lease=record.request_id,
                                routing=caller.routing)
    headers += limits.headers
    if refused is not None:
        record.error_type = refused.reason
        await respond(send, refused.status, refused.body, [*headers, *refused.headers])
        return
    ask = Ask(caller=caller, request=request, key_hash=key_hash, ttl=ttl,
              outcome=BYPASS if controls.no_cache else MISS, model=model,
              decided=decision is not None)

    # The cache, then the provider (one call for identical concurrent misses).
    if controls.no_cache:
        record.cache_outcome = CacheOutcome.BYPASS
        await upstream(send, receive, ask, headers, record, limits)
        return
    if controls.no_store:
        hit = await cache_lookup(org_id=caller.org_id, key_hash=key_hash, ttl=ttl)
        if hit is not None:
            await send_hit(send, hit, request=request, headers=headers, record=record)
            return
        record.cache_outcome = CacheOutcome.MISS
        await upstream(send, receive, ask, headers, record, limits)
        return
    async with coalescer.turn(org_id=caller.org_id, key_hash=key_hash, ttl=ttl) as turn:
        if turn.hit is not None:
            await send_hit(send, turn.hit, request=request, headers=headers, record=record)
            return
        record.cache_outcome = CacheOutcome.MISS
        ask.lock_token = turn.lock_token
        turn.result = await upstream(send, receive, ask, headers, record, limits)


async def upstream(send, receive, ask: Ask, headers: list, record: Record,
                   limits: RequestLimits) -> CachedResponse | None:
    """The provider's answer, once the limits that only a call upstream spends (tokens,
    cost, a slot in flight) are taken; None when refused or nothing was stored."""
    refused = await limits.take_upstream(headers)
    if refused is not None:
        record.error_type = refused.reason
        await respond(send, refused.status, refused.body, [*headers, *refused.headers])
        return None
    return await ask_upstream(send, receive, ask, headers, record)


async def handle_models(scope, receive, send, model: str | None) -> None:
    """GET /v1/models (the routes and the providers' models) or /v1/models/{model}."""
    request_id = new_request_id()
    headers = [(b"x-request-id", request_id.encode())]
    try:
        caller = await caller_for(scope, send, headers)
    except DatabaseUnavailable:
        await database_unavailable(send, request_id)
        return
    if caller is None:
        return
    if model is None:
        answer = await models_list(caller=caller)
    else:
        answer = await model_retrieve(caller=caller, model=model)
    if isinstance(answer, (UpstreamProblem, UpstreamError)):
        await respond_error(send, answer.status, answer.message, headers, code=answer.code)
        return
    await respond(send, answer.status, answer.body, headers, answer.content_type)


async def lifespan(receive, send) -> None:
    from caching.hot import hot_tier
    from cognitude.inline_beat import run_schedule
    from pipeline.buffer import buffer

    beat: asyncio.Task | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Django and its apps leave ~100k long-lived objects; moving them out of the
            # collector's sight keeps full collections from pausing the loop for tens
            # of milliseconds (long enough to trip the Redis timeout under load).
            gc.collect()
            gc.freeze()
            if settings.CELERY_TASK_ALWAYS_EAGER:  # no broker, so no beat (inline_beat.py)
                beat = asyncio.get_running_loop().create_task(run_schedule())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if beat is not None:
                beat.cancel()
            await close_sessions()
            await hot_tier().close()
            await shared_redis_close()
            await loop_connections_close()
            await asyncio.get_running_loop().run_in_executor(None, buffer.flush)
            db_threads_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path, method = scope["path"], scope["method"]
    endpoint = POST_ENDPOINTS.get(path)
    if endpoint is not None:
        if method != "POST":
            await respond_error(send, 405, f"Use POST for {path}",
                                [(b"x-request-id", new_request_id().encode()), (b"allow", b"POST")])
            return
        try:
            await handle_post(scope, receive, send, endpoint)
        except ConnectionResetError:
            return
    elif path == FEEDBACK_PATH:
        headers = [(b"x-request-id", new_request_id().encode())]
        if method != "POST":
            await respond_error(send, 405, f"Use POST for {path}", [*headers, (b"allow", b"POST")])
            return
        try:
            await handle_feedback(scope, receive, send, headers)
        except DatabaseUnavailable:  # raised before any answer: checking the key, or storing
            await database_unavailable(send, headers[0][1].decode())
        except ConnectionResetError:
            return
    elif path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
        if method != "GET":
            await respond_error(send, 405, f"Use GET for {path}",
                                [(b"x-request-id", new_request_id().encode()), (b"allow", b"GET")])
            return
        await handle_models(scope, receive, send, path[len(MODELS_PATH) + 1:] or None)
    else:
        await respond_error(send, 404, f"Unknown endpoint {method} {path}",
                            [(b"x-request-id", new_request_id().encode())], code="unknown_url")

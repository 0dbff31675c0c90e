"""A fake LLM provider speaking OpenAI's, Azure OpenAI's and Anthropic's wire formats,
as a raw ASGI application.

It is a raw ASGI callable with orjson and no framework so that it is never the
bottleneck of a benchmark, and it imports nothing from Django so that tests and
benchmarks can start it as a subprocess in a fraction of a second.

Endpoints: OpenAI's ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/models[/ID]`` and ``/v1/responses`` (fakeupstream.chat, fakeupstream.responses);
Azure OpenAI's ``/openai/deployments/DEPLOYMENT/{chat/completions,completions,
embeddings}``, ``/openai/responses`` and ``/openai/models``, each with ``?api-version=``
and an ``api-key`` header; Anthropic's ``/v1/messages`` and, with an
``anthropic-version`` header, its ``/v1/models[/ID]`` (fakeupstream.messages).
Answers are deterministic and faults are injected by markers in the request's text
(fakeupstream.wire). ``GET /stats`` counts what reached it, ``GET /stats/last`` shows
the last body each path received, ``POST /control`` changes the base latency at runtime.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qs

import orjson

from fakeupstream import chat, messages
from fakeupstream.chat import BadRequest
from fakeupstream.responses import ResponsesApi
from fakeupstream.wire import (
    JSON_HEADERS,
    SSE_HEADERS,
    Faults,
    Headers,
    Receive,
    Refused,
    Reply,
    Scope,
    Send,
    parse_faults,
)

Refusal = Callable[..., Refused]
Answer = Callable[[dict[str, Any], str], tuple[Reply, str]]

AZURE_DEPLOYMENT_PATH = re.compile(
    r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$"
)
AZURE_ENDPOINTS = {"chat/completions": chat.chat_reply, "completions": chat.completion_reply,
                   "embeddings": chat.embedding_reply}
AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)


@dataclass(slots=True)
class Config:
    """Settings that ``POST /control`` changes at runtime."""

    latency_ms: float = 0
    chunk_delay_ms: float = 0


CONFIG_NAMES = frozenset(field.name for field in fields(Config))


@dataclass(frozen=True, slots=True)
class Api:
    """One POST endpoint in its wire format: how it answers and how it refuses."""

    answer: Answer
    refuse: Refusal  # (status, message, *, param=None, code=None) -> Refused
    missing_model: Callable[[], Refused]
    unknown_model: Callable[[str], Refused]
    check_headers: Callable[[Headers], None] | None = None


def openai_missing_model() -> Refused:
    return BadRequest(400, "You must provide a model parameter.", param="model")


def openai_api(answer: Answer) -> Api:
    return Api(answer, BadRequest, openai_missing_model, chat.unknown_model)


ANTHROPIC = Api(messages.messages_reply, messages.AnthropicError, messages.missing_model,
                messages.unknown_model, messages.check_headers)


class Stats:
    """Counters served by ``GET /stats``; only API requests (/v1/, /openai/) are counted."""

    def __init__(self) -> None:
        # in_flight is a fact about the present, not a counter, so reset() keeps it.
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.requests_total = 0
        self.by_path: Counter[str] = Counter()
        self.by_token: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_cancelled = 0
        # Dropped mid-way, or ended by an error event (Faults.stream_error).
        self.streams_broken = 0
        # What a translating gateway sent, for tests to check (GET /stats/last).
        self.last_body: dict[str, Any] = {}

    def as_json(self) -> bytes:
        return orjson.dumps(
            {
                "requests_total": self.requests_total,
                "by_path": self.by_path,
                "by_token": self.by_token,
                "by_model": self.by_model,
                "streams_started": self.streams_started,
                "streams_completed": self.streams_completed,
                "streams_cancelled": self.streams_cancelled,
                "streams_broken": self.streams_broken,
                "in_flight": self.in_flight,
            }
        )


def credential_of(scope: Scope) -> str:
    """The provider key a request carries: bearer token (OpenAI), api-key (Azure) or x-api-key."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value.decode("latin-1")
            return token[7:] if token[:7].lower() == "bearer " else token
        if name in (b"api-key", b"x-api-key"):
            return value.decode("latin-1")
    return ""


def is_anthropic(scope: Scope) -> bool:
    """Anthropic's clients send anthropic-version; OpenAI's never do."""
    return any(name == b"anthropic-version" for name, _ in scope["headers"])


def azure_refusal(status: int, code: str, message: str) -> Refused:
    return Refused(status, orjson.dumps({"error": {"code": code, "message": message}}))


def check_azure(scope: Scope) -> None:
    """Azure OpenAI's own refusals: a key (api-key, or an Entra ID bearer token) and an
    api-version on every request."""
    if not credential_of(scope):
        raise azure_refusal(401, "401", AZURE_DENIED)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if not query.get("api-version"):
        raise azure_refusal(404, "404", "Resource not found")


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def parse_json_object(raw: bytes, refuse: Refusal = BadRequest) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise refuse(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise refuse(400, "The request body must be a JSON object.")
    return body


async def send_json(send: Send, status: int, body: bytes, headers: Headers = JSON_HEADERS) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_broken(send: Send, body: bytes, keep: int) -> None:
    """Announce the whole body, send only ``keep`` bytes, and leave the response unfinished.

    Returning from the app with the body unfinished makes uvicorn close the connection:
    the client sees a truncated response, as when a provider dies mid-answer.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body[:keep], "more_body": True})


async def run_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class FakeUpstream:
    """The ASGI application. One instance holds its own stats and runtime config."""

    def __init__(self, *, latency_ms: float = 0) -> None:
        self.initial = Config(latency_ms=latency_ms)
        self.config = Config(latency_ms=latency_ms)
        self.stats = Stats()
        responses = openai_api(ResponsesApi().answer)
        self.post_endpoints: dict[str, Api] = {
            "/v1/chat/completions": openai_api(chat.chat_reply),
            "/v1/completions": openai_api(chat.completion_reply),
            "/v1/embeddings": openai_api(chat.embedding_reply),
            "/v1/responses": responses,
            "/openai/responses": responses,
            "/v1/messages": ANTHROPIC,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith(("/v1/", "/openai/")):
                await self.api(scope, receive, send)
            elif path == "/stats" and method == "GET":
                await send_json(send, 200, self.stats.as_json())
            elif path == "/stats/last" and method == "GET":
                await send_json(send, 200, orjson.dumps(self.stats.last_body))
            elif path == "/stats/reset" and method == "POST":
                self.stats.reset()
                await send_json(send, 200, self.stats.as_json())
            elif path == "/control" and method == "POST":
                await self.control(receive, send)
            else:
                raise BadRequest(404, f"Unknown request URL: {method} {path}.")
        except Refused as refused:
            await send_json(send, refused.status, refused.body)

    async def api(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        path: str = scope["path"]
        method: str = scope["method"]
        stats.requests_total += 1
        stats.by_path[path] += 1
        stats.by_token[credential_of(scope)] += 1
        stats.in_flight += 1
        try:
            deployment = None
            if path.startswith("/openai/"):
                check_azure(scope)
                deployment = AZURE_DEPLOYMENT_PATH.match(path)
            if method == "GET" and path.startswith(("/v1/models", "/openai/models")):
                await self.models(scope, send)
            elif method == "POST" and deployment is not None:
                endpoint = AZURE_ENDPOINTS[deployment.group(2)]
                await self.post(openai_api(endpoint), scope, receive, send,
                                model=deployment.group(1))
            elif method == "POST" and path in self.post_endpoints:
                await self.post(self.post_endpoints[path], scope, receive, send)
            else:
                raise BadRequest(404, f"Unknown request URL: {method} {path}.")
        finally:
            stats.in_flight -= 1

    async def models(self, scope: Scope, send: Send) -> None:
        """The model list and single models, in Anthropic's shape for Anthropic clients."""
        path: str = scope["path"]
        anthropic = is_anthropic(scope)
        if anthropic:
            messages.check_headers(scope["headers"])
        if path in ("/v1/models", "/openai/models"):
            await self.wait_latency()
            await send_json(send, 200, messages.MODELS_BODY if anthropic else chat.MODELS_BODY)
            return
        model = path.removeprefix("/v1/models/").removeprefix("/openai/models/")
        if model == path or not model:
            raise BadRequest(404, f"Unknown request URL: GET {path}.")
        if anthropic:
            if model not in messages.MODELS:
                raise messages.unknown_model(model)
            found = messages.model_info(model)
        else:
            if model.startswith("unknown"):
                raise chat.unknown_model(model)
            found = chat.model_object(model)
        await self.wait_latency()
        await send_json(send, 200, orjson.dumps(found))

    async def post(self, api: Api, scope: Scope, receive: Receive, send: Send, *,
                   model: str | None = None) -> None:
        """Answer one POST; ``model`` is the Azure deployment named by the path (Azure
        ignores the body's model)."""
        if api.check_headers is not None:
            api.check_headers(scope["headers"])
        body = parse_json_object(await read_body(receive), api.refuse)
        self.stats.last_body[scope["path"]] = body
        model = model or body.get("model")
        if not isinstance(model, str) or not model:
            raise api.missing_model()
        self.stats.by_model[model] += 1
        if model.startswith("unknown"):
            raise api.unknown_model(model)
        reply, fault_text = api.answer(body, model)
        faults = parse_faults(fault_text)

        await self.wait_latency(faults.delay_ms)
        if faults.status:
            headers = JSON_HEADERS
            if faults.status == 429:
                headers = [
                    *JSON_HEADERS,
                    (b"retry-after", str(faults.retry_after).encode()),
                ]
            refused = api.refuse(faults.status, f"Injected fault: status {faults.status}.")
            await send_json(send, faults.status, refused.body, headers)
        elif reply.body and faults.break_after is not None:
            await send_broken(send, reply.body, faults.break_after)
        elif reply.body:
            await send_json(send, 200, reply.body)
        else:
            await self.stream(reply, faults, receive, send)

    async def wait_latency(self, extra_ms: float = 0) -> None:
        delay_ms = self.config.latency_ms + extra_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)

    async def stream(self, reply: Reply, faults: Faults, receive: Receive, send: Send) -> None:
        """Send SSE events one ASGI message each, so they leave one by one.

        A client that goes away is noticed by a task waiting on receive(): once the
        request body is read, the next message uvicorn gives is http.disconnect.
        """
        stats = self.stats
        stats.streams_started += 1
        failing = bool(faults.stream_error) and reply.stream_error is not None
        dropped = faults.break_after is not None and not failing
        events = [reply.stream_head] if reply.stream_head else []
        if faults.break_after is not None:
            events += reply.stream_content[: faults.break_after]
        else:
            events += reply.stream_content
        if failing:
            assert reply.stream_error is not None
            events.append(reply.stream_error(faults.stream_error))
        elif not dropped:
            events += reply.stream_tail
        chunk_delay = (faults.chunk_delay_ms or self.config.chunk_delay_ms) / 1000

        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        disconnected = asyncio.ensure_future(receive())
        try:
            for position, event in enumerate(events):
                if position and chunk_delay:
                    await asyncio.wait((disconnected,), timeout=chunk_delay)
                if disconnected.done():
                    stats.streams_cancelled += 1
                    return
                last = position == len(events) - 1 and not dropped
                await send({"type": "http.response.body", "body": event, "more_body": not last})
            if dropped:
                # Returning with the body unfinished makes uvicorn drop the connection.
                stats.streams_broken += 1
            elif failing:
                stats.streams_broken += 1
            else:
                stats.streams_completed += 1
        finally:
            disconnected.cancel()

    async def control(self, receive: Receive, send: Send) -> None:
        """Change the runtime config: {"latency_ms": N, "chunk_delay_ms": N}; {} resets it."""
        changes = parse_json_object(await read_body(receive))
        config = Config(self.initial.latency_ms, self.initial.chunk_delay_ms)
        for name, value in changes.items():
            if name not in CONFIG_NAMES or not isinstance(value, (int, float)) or value < 0:
                raise BadRequest(
                    400,
                    f"Unknown control setting or bad value: {name}={value!r}.",
                    param=name,
                )
            setattr(config, name, value)
        self.config = config
        await send_json(send, 200, orjson.dumps(config))


def make_app(latency_ms: float = 0) -> FakeUpstream:
    """A fresh fake upstream that waits ``latency_ms`` before each API answer."""
    return FakeUpstream(latency_ms=latency_ms)


app = make_app()

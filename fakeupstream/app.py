"""An OpenAI-compatible fake LLM provider, as a raw ASGI application.

It is a raw ASGI callable with orjson and no framework so that it is never the
bottleneck of a benchmark, and it imports nothing from Django so that tests and
benchmarks can start it as a subprocess in a fraction of a second.

Answers are deterministic: the same request always gets the same content, a
different request different content. Faults are injected per request by markers in
the text of the last message (or prompt, or input), e.g. ``[[fault:status=500]]``;
see ``Faults``. ``GET /stats`` counts what reached it, ``POST /control`` changes the
base latency at runtime.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import math
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-3.5-turbo",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)
MODELS_CREATED = 1_700_000_000
EMBEDDING_DIMENSIONS = 16
MAX_EMBEDDING_DIMENSIONS = 4096
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
SSE_DONE = b"data: [DONE]\n\n"

FAULT_MARKER = "[[fault:"
FAULT_RE = re.compile(r"\[\[fault:([a-z_]+)=(\d+)\]\]")

# Error types OpenAI uses for each status, so clients classify injected errors
# exactly as they would real ones.
ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}

# Ids only need to be unique per process; a counter is cheaper than randomness and
# lets a test tell a replayed (cached) answer from a fresh one.
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


@dataclass(slots=True)
class Faults:
    """Faults asked for by ``[[fault:NAME=N]]`` markers in a request's text.

    status: answer with this HTTP status and an OpenAI error body (429 adds retry-after).
    retry_after: the retry-after seconds sent with a 429 (default 1).
    delay_ms: sleep this long before answering.
    break_after: streaming, send this many content chunks then drop the connection;
        not streaming, send the headers and this many bytes of the body then drop it.
    chunk_delay_ms: streaming, sleep this long between chunks.
    """

    status: int = 0
    retry_after: int = 1
    delay_ms: int = 0
    break_after: int | None = None
    chunk_delay_ms: int = 0


@dataclass(slots=True)
class Config:
    """Settings that ``POST /control`` changes at runtime."""

    latency_ms: float = 0
    chunk_delay_ms: float = 0


FAULT_NAMES = frozenset(field.name for field in fields(Faults))
CONFIG_NAMES = frozenset(field.name for field in fields(Config))


class Stats:
    """Counters served by ``GET /stats``; only ``/v1/`` requests are counted."""

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
        self.streams_broken = 0

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


class BadRequest(Exception):
    """A request the fake refuses, with the status and OpenAI error body to send."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(status, message, param=param, code=code)


@dataclass(slots=True)
class Reply:
    """What a POST endpoint answers: a JSON body, or SSE events when streaming.

    Stream events are kept in three parts so that ``break_after`` can stop inside the
    content: the role chunk, the content chunks, then the finish/usage/[DONE] tail.
    """

    body: bytes = b""
    stream_head: bytes = b""
    stream_content: tuple[bytes, ...] = ()
    stream_tail: tuple[bytes, ...] = ()


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """The OpenAI error shape; every error the fake sends goes through here."""
    error_type, default_code = ERROR_TYPES.get(status, ("server_error", None))
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": error_type,
                "param": param,
                "code": code or default_code,
            }
        }
    )


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


def choice_texts(base: str, n: int) -> list[str]:
    if n == 1:
        return [base]
    return [f"{base} #{index}" for index in range(n)]


def read_n(body: dict[str, Any]) -> int:
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise BadRequest(
            400,
            f"{n!r} is not a valid value for 'n': it must be an integer from 1 to 128.",
            param="n",
        )
    return n


def split_pieces(text: str) -> list[str]:
    """Split text into about STREAM_PIECES pieces whose concatenation is the text."""
    size = max(1, math.ceil(len(text) / STREAM_PIECES))
    return [text[start : start + size] for start in range(0, len(text), size)]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


ChunkChoice = Callable[[int, str | None, str | None], dict[str, Any]]


def stream_reply(
    body: dict[str, Any],
    chunk: dict[str, Any],
    texts: list[str],
    usage_block: dict[str, int],
    choice: ChunkChoice,
    *,
    with_role: bool,
) -> Reply:
    """SSE events for ``texts`` (one per choice), each text in a few content chunks.

    ``choice(index, piece, finish_reason)`` renders one choice of a chunk: piece None
    and no finish_reason is the opening role chunk.
    """

    def events(index: int, piece: str | None, finish_reason: str | None) -> bytes:
        return sse({**chunk, "choices": [choice(index, piece, finish_reason)]})

    indexes = range(len(texts))
    head = b"".join(events(i, None, None) for i in indexes) if with_role else b""
    content = tuple(
        events(index, piece, None)
        for index, text in enumerate(texts)
        for piece in split_pieces(text)
    )
    tail = [b"".join(events(i, None, "stop") for i in indexes)]
    if wants_usage(body):
        tail.append(sse({**chunk, "choices": [], "usage": usage_block}))
    tail.append(SSE_DONE)
    return Reply(stream_head=head, stream_content=content, stream_tail=tuple(tail))


def chat_chunk_choice(index: int, piece: str | None, finish_reason: str | None) -> dict[str, Any]:
    if finish_reason:
        delta: dict[str, Any] = {}
    elif piece is None:
        delta = {"role": "assistant", "content": ""}
    else:
        delta = {"content": piece}
    return {
        "index": index,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish_reason,
    }


def text_choice(index: int, piece: str | None, finish_reason: str | None) -> dict[str, Any]:
    return {
        "index": index,
        "text": piece or "",
        "logprobs": None,
        "finish_reason": finish_reason,
    }


def chat_reply(body: dict[str, Any], model: str) -> tuple[Reply, str]:
    """Answer POST /v1/chat/completions; returns the reply and the fault text."""
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise BadRequest(
            400,
            "'messages' must be a non-empty array of message objects.",
            param="messages",
        )
    texts = [text_of(message.get("content")) for message in messages]
    roles = [message.get("role") for message in messages]
    user_texts = [text for text, role in zip(texts, roles, strict=True) if role == "user"]
    echo = user_texts[-1] if user_texts else texts[-1]
    contents = choice_texts(answer_text(body, model, echo), read_n(body))
    prompt_tokens = sum(count_tokens(text) for text in texts)
    usage_block = usage(prompt_tokens, sum(count_tokens(text) for text in contents))
    head = {
        "id": f"chatcmpl-{_ID_PREFIX}{next(_ids):08x}",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fakeupstream",
    }

    if body.get("stream"):
        chunk = {**head, "object": "chat.completion.chunk"}
        reply = stream_reply(body, chunk, contents, usage_block, chat_chunk_choice, with_role=True)
        return reply, texts[-1]
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
        for index, content in enumerate(contents)
    ]
    payload = {
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage_block,
    }
    return Reply(body=orjson.dumps(payload)), texts[-1]


def completion_reply(body: dict[str, Any], model: str) -> tuple[Reply, str]:
    """Answer POST /v1/completions (the legacy text API): n choices per prompt."""
    prompt = body.get("prompt")
    # A list of ints is one tokenized prompt; any other list is several prompts.
    several = isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
    prompts = prompt if several else [prompt]
    if not all(isinstance(p, (str, list)) for p in prompts):
        raise BadRequest(
            400,
            "'prompt' must be a string, an array of strings or of token arrays.",
            param="prompt",
        )
    prompt_texts = [p if isinstance(p, str) else orjson.dumps(p).decode() for p in prompts]
    n = read_n(body)
    texts = [
        text
        for prompt_text in prompt_texts
        for text in choice_texts(
            answer_text({**body, "prompt": prompt_text}, model, prompt_text), n
        )
    ]
    prompt_tokens = sum(count_tokens(text) for text in prompt_texts)
    usage_block = usage(prompt_tokens, sum(count_tokens(text) for text in texts))
    head = {
        "id": f"cmpl-{_ID_PREFIX}{next(_ids):08x}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }

    if body.get("stream"):
        reply = stream_reply(body, head, texts, usage_block, text_choice, with_role=False)
        return reply, prompt_texts[-1]
    choices = [text_choice(index, text, "stop") for index, text in enumerate(texts)]
    payload = {**head, "choices": choices, "usage": usage_block}
    return Reply(body=orjson.dumps(payload)), prompt_texts[-1]


def embedding_vector(key: bytes, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from a hash of the input."""
    raw = struct.unpack(f"<{dimensions}H", hashlib.shake_128(key).digest(2 * dimensions))
    vector = [value / 32767.5 - 1.0 for value in raw]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


def embedding_reply(body: dict[str, Any], model: str) -> tuple[Reply, str]:
    """Answer POST /v1/embeddings; honours ``dimensions`` and ``encoding_format``."""
    given = body.get("input")
    # A list of ints is one tokenized input; any other list is several inputs.
    if isinstance(given, list) and given and not all(isinstance(item, int) for item in given):
        inputs = given
    else:
        inputs = [given]
    if not all(isinstance(item, (str, list)) and item for item in inputs):
        raise BadRequest(400, "'input' must be a non-empty string or array.", param="input")
    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
    if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise BadRequest(
            400,
            f"'dimensions' must be an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}.",
            param="dimensions",
        )
    as_base64 = body.get("encoding_format") == "base64"
    texts = [item if isinstance(item, str) else orjson.dumps(item).decode() for item in inputs]

    data = []
    for index, text in enumerate(texts):
        vector = embedding_vector(f"{model}\n{text}".encode(), dimensions)
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            if as_base64
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    prompt_tokens = sum(count_tokens(text) for text in texts)
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return Reply(body=orjson.dumps(payload)), texts[-1]


def model_object(model: str) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": MODELS_CREATED,
        "owned_by": "fakeupstream",
    }


MODELS_BODY = orjson.dumps({"object": "list", "data": [model_object(model) for model in MODELS]})

POST_ENDPOINTS: dict[str, Callable[[dict[str, Any], str], tuple[Reply, str]]] = {
    "/v1/chat/completions": chat_reply,
    "/v1/completions": completion_reply,
    "/v1/embeddings": embedding_reply,
}


def unknown_model(model: str) -> BadRequest:
    return BadRequest(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
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


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "The request body must be a JSON object.")
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/v1/"):
                await self.api(scope, receive, send)
            elif path == "/stats" and method == "GET":
                await send_json(send, 200, self.stats.as_json())
            elif path == "/stats/reset" and method == "POST":
                self.stats.reset()
                await send_json(send, 200, self.stats.as_json())
            elif path == "/control" and method == "POST":
                await self.control(receive, send)
            else:
                raise BadRequest(404, f"Unknown request URL: {method} {path}.")
        except BadRequest as refused:
            await send_json(send, refused.status, refused.body)

    async def api(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        path: str = scope["path"]
        stats.requests_total += 1
        stats.by_path[path] += 1
        stats.by_token[credential_of(scope)] += 1
        stats.in_flight += 1
        try:
            if scope["method"] == "GET" and path == "/v1/models":
                await self.wait_latency()
                await send_json(send, 200, MODELS_BODY)
            elif scope["method"] == "GET" and path.startswith("/v1/models/"):
                model = path.removeprefix("/v1/models/")
                if model.startswith("unknown"):
                    raise unknown_model(model)
                await self.wait_latency()
                await send_json(send, 200, orjson.dumps(model_object(model)))
            elif scope["method"] == "POST" and path in POST_ENDPOINTS:
                await self.post(POST_ENDPOINTS[path], receive, send)
            else:
                raise BadRequest(404, f"Unknown request URL: {scope['method']} {path}.")
        finally:
            stats.in_flight -= 1

    async def post(
        self,
        endpoint: Callable[[dict[str, Any], str], tuple[Reply, str]],
        receive: Receive,
        send: Send,
    ) -> None:
        body = parse_json_object(await read_body(receive))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest(400, "You must provide a model parameter.", param="model")
        self.stats.by_model[model] += 1
        if model.startswith("unknown"):
            raise unknown_model(model)
        reply, fault_text = endpoint(body, model)
        faults = parse_faults(fault_text)

        await self.wait_latency(faults.delay_ms)
        if faults.status:
            headers = JSON_HEADERS
            if faults.status == 429:
                headers = [
                    *JSON_HEADERS,
                    (b"retry-after", str(faults.retry_after).encode()),
                ]
            message = f"Injected fault: status {faults.status}."
            await send_json(send, faults.status, error_body(faults.status, message), headers)
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
        broken = faults.break_after is not None
        events = [reply.stream_head] if reply.stream_head else []
        if broken:
            events += reply.stream_content[: faults.break_after]
        else:
            events += [*reply.stream_content, *reply.stream_tail]
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
                last = position == len(events) - 1 and not broken
                await send({"type": "http.response.body", "body": event, "more_body": not last})
            if broken:
                # Returning with the body unfinished makes uvicorn drop the connection.
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
    """A fresh fake upstream that waits ``latency_ms`` before each /v1/ answer."""
    return FakeUpstream(latency_ms=latency_ms)


app = make_app()

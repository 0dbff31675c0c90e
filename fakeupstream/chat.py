"""The OpenAI wire format of the fake: chat completions, legacy completions, embeddings
and the model list (also served under Azure OpenAI's deployment paths)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from collections.abc import Callable
from typing import Any

import orjson

from fakeupstream.wire import (
    Refused,
    Reply,
    answer_text,
    count_tokens,
    new_id,
    split_pieces,
    text_of,
)

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

SSE_DONE = b"data: [DONE]\n\n"


# Error types OpenAI uses for each status, so clients classify injected errors
# exactly as they would real ones.
ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


class BadRequest(Refused):
    """A request refused with an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(status, error_body(status, message, param=param, code=code))


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


def stream_error_event(status: int) -> bytes:
    """A stream's error event, which the OpenAI SDK raises as an APIError."""
    return b"data: " + error_body(status, f"Injected fault: stream error {status}.") + b"\n\n"


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
    return Reply(stream_head=head, stream_content=content, stream_tail=tuple(tail),
                 stream_error=stream_error_event)


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
        "id": new_id("chatcmpl-"),
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
        "id": new_id("cmpl-"),
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
    if (not isinstance(dimensions, int) or isinstance(dimensions, bool)
            or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS):
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


def unknown_model(model: str) -> BadRequest:
    return BadRequest(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )



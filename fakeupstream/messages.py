"""The Anthropic Messages API of the fake: POST /v1/messages, as one JSON message or as
Anthropic's SSE events (``event: message_start`` ... ``event: message_stop``, with
``ping``), errors in Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``.

It checks what Anthropic checks and a translating gateway gets wrong: a key (in
``x-api-key``, or as a Bearer token, which the current SDK sends) and the
``anthropic-version`` header, ``max_tokens`` present, roles only user and assistant
(the system prompt is a top-level field), no unknown top-level fields, every
``tool_result`` answering a ``tool_use`` of the message before and every ``tool_use``
answered, image sources of the two shapes (base64 with a media type, or a URL),
temperature and top_p within 0..1.

When tools are given (and tool_choice is not none) and the last user turn carries no
tool result, the answer calls a tool: the named one, else the first, with arguments of
the types its input schema asks for; with tool_choice auto a short text block comes
first. Stop sequences found in the answer cut it there (stop_reason stop_sequence);
an answer over max_tokens is cut to it (stop_reason max_tokens).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from fakeupstream.wire import (
    Headers,
    Refused,
    Reply,
    answer_text,
    count_tokens,
    new_id,
    split_pieces,
    tool_input,
)

MODELS = ("claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5")
MODELS_CREATED_AT = "2025-09-29T00:00:00Z"
# The versions Anthropic's clients send: the long-standing one, and the current SDK's.
VERSIONS = frozenset({"2023-01-01", "2023-06-01", "2026-10-21"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_k", "top_p", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "output_config", "inference_geo",
    "cache_control", "speed",
})

# Anthropic's error type for each status; anything else 5xx is an api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_payload(status: int, message: str) -> dict[str, Any]:
    error_type = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": new_id("req_")}


class AnthropicError(Refused):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(status, orjson.dumps(error_payload(status, message)))


def unknown_model(model: str) -> AnthropicError:
    return AnthropicError(404, f"model: {model}")


def missing_model() -> AnthropicError:
    return AnthropicError(400, "model: Field required")


def check_headers(headers: Headers) -> None:
    """Refuse as Anthropic does: the key first (401), then the API version (400)."""
    found = dict(headers)
    key = found.get(b"x-api-key")
    if key is None and found.get(b"authorization", b"")[:7].lower() == b"bearer ":
        key = found[b"authorization"][7:]
    if not key:
        raise AnthropicError(401, "x-api-key header is required")
    if key.startswith(b"invalid"):
        raise AnthropicError(401, "invalid x-api-key")
    version = found.get(b"anthropic-version")
    if version is None:
        raise AnthropicError(400, "anthropic-version: header is required")
    if version.decode("latin-1") not in VERSIONS:
        raise AnthropicError(400, f"anthropic-version: invalid version {version.decode()!r}")


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def model_info(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model.replace("-", " ").title(),
            "created_at": MODELS_CREATED_AT, "lifecycle": "active"}


MODELS_BODY = orjson.dumps({"data": [model_info(model) for model in MODELS], "has_more": False,
                            "first_id": MODELS[0], "last_id": MODELS[-1]})


def _number_in(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise AnthropicError(400, f"{name}: Input should be a valid number")
    if not low <= value <= high:
        raise AnthropicError(400, f"{name}: Input should be between {low:g} and {high:g}")


def _check_image(where: str, block: dict[str, Any]) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise AnthropicError(400, f"{where}.source: Field required")
    if source.get("type") == "url":
        if not isinstance(source.get("url"), str) or not source["url"].startswith("http"):
            raise AnthropicError(400, f"{where}.source.url: Input should be a valid URL")
        return "[image url]"
    if source.get("type") == "base64":
        if source.get("media_type") not in IMAGE_TYPES:
            raise AnthropicError(400, f"{where}.source.media_type: Input should be "
                                 "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")
        try:
            base64.b64decode(source.get("data") or "", validate=True)
        except (binascii.Error, TypeError):
            raise AnthropicError(400, f"{where}.source.data: The image data is not valid "
                                 "base64") from None
        return f"[image {source['media_type']}]"
    raise AnthropicError(400, f"{where}.source.type: Input should be 'base64' or 'url'")


def _block_text(where: str, role: str, block: Any) -> str:
    """Check one content block; return what of it the answer echoes."""
    if not isinstance(block, dict):
        raise AnthropicError(400, f"{where}: Input should be a valid dictionary")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise AnthropicError(400, f"{where}: text content blocks must be non-empty")
        return block["text"]
    if kind == "image":
        return _check_image(where, block)
    if kind == "tool_use" and role == "assistant":
        if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
                and isinstance(block.get("input"), dict)):
            raise AnthropicError(400, f"{where}: tool_use blocks need an id, a name and an "
                                 "input object")
        return ""
    if kind == "tool_result" and role == "user":
        content = block.get("content", "")
        if isinstance(content, list):
            return " ".join(_block_text(f"{where}.content.{i}", role, part)
                            for i, part in enumerate(content))
        if not isinstance(content, str):
            raise AnthropicError(400, f"{where}.content: Input should be a valid string or list")
        return content
    raise AnthropicError(400, f"{where}: Input tag '{kind}' is not a valid {role} content block")


def _check_messages(messages: Any) -> list[str]:
    """Check the turns; return each turn's text (what the answer can echo)."""
    if not isinstance(messages, list) or not messages:
        raise AnthropicError(400, "messages: Field required" if messages is None
                             else "messages: at least one message is required")
    texts, open_calls = [], set()
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise AnthropicError(400, f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise AnthropicError(400, 'messages: Unexpected role "system". The Messages API '
                                 'accepts a top-level `system` parameter, not "system" as an '
                                 "input message role.")
        if role not in ("user", "assistant"):
            raise AnthropicError(400, f"{where}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise AnthropicError(400, f"{where}.content: Input should be a valid string or list")
        answered = {b.get("tool_use_id") for b in blocks
                    if isinstance(b, dict) and b.get("type") == "tool_result"}
        unexpected = ", ".join(sorted(map(str, answered - open_calls)))
        if unexpected:
            raise AnthropicError(400, f"{where}.content: unexpected `tool_use_id` found in "
                                 f"`tool_result` blocks: {unexpected}. "
                                 "Each `tool_result` block must have a corresponding "
                                 "`tool_use` block in the previous message.")
        if open_calls - answered:
            raise AnthropicError(400, f"messages.{index - 1}: `tool_use` ids were found "
                                 "without `tool_result` blocks immediately after: "
                                 f"{', '.join(sorted(open_calls - answered))}. Each `tool_use` "
                                 "block must have a corresponding `tool_result` block in the "
                                 "next message.")
        texts.append(" ".join(
            text for text in (_block_text(f"{where}.content.{i}", role, block)
                              for i, block in enumerate(blocks)) if text
        ))
        open_calls = {b["id"] for b in blocks
                      if isinstance(b, dict) and b.get("type") == "tool_use"}
    if open_calls:
        raise AnthropicError(400, f"messages.{len(messages) - 1}: `tool_use` ids were found "
                             f"without `tool_result` blocks immediately after: "
                             f"{', '.join(sorted(open_calls))}.")
    return texts


def _chosen_tool(body: dict[str, Any], last: dict[str, Any]) -> tuple[dict | None, str]:
    """The tool the answer calls (None: a text answer) and the tool_choice type."""
    tools = body.get("tools")
    if tools is None:
        if body.get("tool_choice") is not None:
            raise AnthropicError(400, "tool_choice: tool_choice may only be specified while "
                                 "providing tools")
        return None, "auto"
    if not isinstance(tools, list):
        raise AnthropicError(400, "tools: Input should be a valid list")
    for index, tool in enumerate(tools):
        if not (isinstance(tool, dict) and isinstance(tool.get("name"), str)
                and isinstance(tool.get("input_schema"), dict)):
            raise AnthropicError(400, f"tools.{index}: a tool needs a name and an input_schema")
        if tool["input_schema"].get("type") != "object":
            raise AnthropicError(400, f"tools.{index}.input_schema.type: Input should be 'object'")
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise AnthropicError(400, "tool_choice: Input tag is not one of 'auto', 'any', 'tool', "
                             "'none'")
    content = last.get("content")
    after_result = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    if kind == "tool":
        named = [tool for tool in tools if tool["name"] == choice.get("name")]
        if not named:
            raise AnthropicError(400, f"tool_choice.name: Tool '{choice.get('name')}' not found "
                                 "in tools")
        return named[0], kind
    if kind == "none" or not tools or (after_result and kind == "auto"):
        return None, kind
    return tools[0], kind


def _stopped(text: str, body: dict[str, Any]) -> tuple[str, str, str | None]:
    """The answer cut at a stop sequence or at max_tokens: (text, stop_reason, sequence)."""
    sequences = body.get("stop_sequences") or []
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise AnthropicError(400, "stop_sequences: Input should be a valid list of strings")
    found = [(text.find(s), s) for s in sequences if s and s in text]
    if found:
        position, sequence = min(found)
        return text[:position], "stop_sequence", sequence
    if count_tokens(text) > body["max_tokens"]:
        return text[: body["max_tokens"] * 4], "max_tokens", None
    return text, "end_turn", None


def messages_reply(body: dict[str, Any], model: str) -> tuple[Reply, str]:
    """Answer POST /v1/messages; returns the reply and the fault text."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise AnthropicError(400, f"{unknown[0]}: Extra inputs are not permitted")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise AnthropicError(400, "max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise AnthropicError(400, "max_tokens: Input should be greater than or equal to 1")
    _number_in(body, "temperature", 0, 1)
    _number_in(body, "top_p", 0, 1)
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise AnthropicError(400, "system: Input should be a valid string or list")
    system_text = system if isinstance(system, str) else " ".join(
        _block_text(f"system.{i}", "system", block) for i, block in enumerate(system or []))
    texts = _check_messages(body.get("messages"))
    messages = body["messages"]
    user_texts = [t for t, m in zip(texts, messages, strict=True) if m["role"] == "user"]
    echo = user_texts[-1] if user_texts else texts[-1]
    tool, choice = _chosen_tool(body, messages[-1])

    blocks: list[dict[str, Any]] = []
    if tool is None:
        text, stop_reason, stop_sequence = _stopped(answer_text(body, model, echo), body)
        blocks.append({"type": "text", "text": text})
    else:
        if choice == "auto":
            blocks.append({"type": "text", "text": f"Calling {tool['name']}."})
        blocks.append({"type": "tool_use", "id": new_id("toolu_"), "name": tool["name"],
                       "input": tool_input(tool["input_schema"], echo)})
        stop_reason, stop_sequence = "tool_use", None
    input_tokens = count_tokens(system_text) + sum(count_tokens(text) for text in texts)
    output_tokens = sum(count_tokens(b.get("text") or orjson.dumps(b.get("input")).decode())
                        for b in blocks)
    message = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }
    if body.get("stream"):
        return stream_events(message), texts[-1]
    return Reply(body=orjson.dumps(message)), texts[-1]


def stream_events(message: dict[str, Any]) -> Reply:
    """message_start and a ping, each block's start, deltas and stop, then
    message_delta (stop reason, usage) and message_stop."""
    usage = message["usage"]
    started = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {**usage, "output_tokens": 1}}
    head = event("message_start", {"type": "message_start", "message": started})
    head += event("ping", {"type": "ping"})
    content: list[bytes] = []
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": piece}
                      for piece in split_pieces(block["text"])]
        else:
            empty = {**block, "input": {}}
            arguments = orjson.dumps(block["input"]).decode()
            pieces = [{"type": "input_json_delta", "partial_json": piece}
                      for piece in split_pieces(arguments)]
        # An empty text (cut at a stop sequence found at its start) is still one block.
        pieces = pieces or [{"type": "text_delta", "text": ""}]
        deltas = [event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": delta}) for delta in pieces]
        # A block's start and stop travel with its first and last delta, so break_after
        # counts deltas as it counts content chunks on the OpenAI side.
        deltas[0] = event("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": empty}) + deltas[0]
        deltas[-1] += event("content_block_stop", {"type": "content_block_stop", "index": index})
        content += deltas
    tail = (
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": message["stop_reason"],
                                          "stop_sequence": message["stop_sequence"]},
                                "usage": {"output_tokens": usage["output_tokens"]}}),
        event("message_stop", {"type": "message_stop"}),
    )

    def stream_error(status: int) -> bytes:
        return event("error", error_payload(status, f"Injected fault: stream error {status}."))

    return Reply(stream_head=head, stream_content=tuple(content), stream_tail=tail,
                 stream_error=stream_error)

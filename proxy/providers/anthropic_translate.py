"""OpenAI chat completions to Anthropic Messages and back, as pure functions.

Requests: system and developer messages join into `system`; user, assistant and tool
turns become user/assistant turns of content blocks (text, images from URLs or base64
data URLs, tool_use, tool_result); tools, tool_choice, stop, temperature, top_p and
max_tokens map one to one (max_tokens is required by Anthropic, so a default fills in);
a json_schema or json_object response_format becomes a tool the model is made to call,
whose input is handed back as the message content. What has no Anthropic equivalent and
would change what the client gets (n > 1, logprobs, logit_bias, audio, the legacy
functions) is refused with a 400 (`Untranslatable`); sampling hints Anthropic lacks
(seed, presence_penalty, frequency_penalty, ...) are dropped.

Answers: text blocks join into the message content, tool_use blocks become tool_calls,
stop reasons become finish reasons, usage becomes prompt/completion tokens. Streams:
Anthropic's events become chat.completion.chunk lines (`ChunkTranslator`).
"""

import base64
import binascii
from dataclasses import dataclass, field

import orjson

from cognitude.errors import error_body

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The tool a response_format becomes; a client's own tool by that name is refused.
JSON_TOOL = "json_response"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types and the statuses it sends them with, for errors that come
# inside a stream (an HTTP error carries its own status).
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Fields whose meaning cannot be kept: refused when set to anything but their default.
_REFUSED = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": None,
    "logit_bias": None,
    "audio": None,
    "prediction": None,
    "functions": None,
    "function_call": None,
}


class Untranslatable(Exception):
    """A chat request an Anthropic provider cannot serve as asked: a 400 to the client."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Translated:
    body: dict
    # The tool standing for response_format, whose input is the answer's content.
    json_tool: str | None = None
    include_usage: bool = False


def chat_to_messages(body: dict, *, default_max_tokens: int) -> Translated:
    """The Anthropic Messages request for an OpenAI chat completions request."""
    for name, default in _REFUSED.items():
        if body.get(name) not in (None, default):
            raise Untranslatable(f"'{name}' is not supported by Anthropic providers", name)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise Untranslatable("Anthropic providers answer in text only", "modalities")

    system, turns = _messages(body["messages"])
    out: dict = {"model": body["model"], "messages": turns}
    if system:
        out["system"] = system
    out["max_tokens"] = (body.get("max_completion_tokens") or body.get("max_tokens")
                         or default_max_tokens)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise Untranslatable("'stop' must be a string or an array of strings", "stop")
        if sequences:
            out["stop_sequences"] = sequences
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True

    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    json_tool = None
    response_format = body.get("response_format")
    schema = _response_schema(response_format)
    if schema is not None:
        if tools:
            raise Untranslatable("response_format cannot be combined with tools on Anthropic "
                                 "providers", "response_format")
        json_tool = JSON_TOOL
        description = "Answer with this tool: its input is the answer."
        if isinstance(response_format.get("json_schema"), dict):
            description = response_format["json_schema"].get("description") or description
        tools = [{"name": JSON_TOOL, "description": description, "input_schema": schema}]
        choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
    options = body.get("stream_options") or {}
    return Translated(out, json_tool, include_usage=bool(options.get("include_usage")))


def _text(content: object, where: str) -> str:
    """The text of content that may only be text (system, developer and tool messages)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Untranslatable(f"{where} may only hold text parts", where)
            texts.append(str(part.get("text") or ""))
        return "\n".join(texts)
    raise Untranslatable(f"{where} must be a string or an array of parts", where)


def _image(part: dict, where: str) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise Untranslatable(f"{where}.image_url.url must be a string", where)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, _, data = url.partition(",")
    media_type = header.removeprefix("data:").removesuffix(";base64")
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise Untranslatable(f"{where}: an image must be an http(s) URL or a base64 data URL",
                             where)
    if media_type not in IMAGE_TYPES:
        raise Untranslatable(f"{where}: Anthropic reads {', '.join(sorted(IMAGE_TYPES))} "
                             f"images, not {media_type or 'this type'}", where)
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error:
        raise Untranslatable(f"{where}: the image data is not valid base64", where) from None
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": data}}


def _user_blocks(content: object, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise Untranslatable(f"{where}.content must be a string or an array of parts", where)
    blocks = []
    for j, part in enumerate(content):
        part_where = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image(part, part_where))
        else:
            raise Untranslatable(f"{part_where}: '{kind}' parts are not supported by Anthropic "
                                 "providers", part_where)
    return blocks


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    content = message.get("content")
    if isinstance(content, list):
        texts = [str(p.get("text") or p.get("refusal") or "") for p in content
                 if isinstance(p, dict)]
        content = "".join(texts)
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) and content else []
    for k, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise Untranslatable(f"{where}.tool_calls[{k}] needs an id and a function", where)
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise Untranslatable(f"{where}.tool_calls[{k}].function.arguments must be a JSON "
                                 "object", where)
        blocks.append({"type": "tool_use", "id": call["id"], "name": function.get("name"),
                       "input": parsed})
    return blocks


def _messages(messages: list) -> tuple[str, list[dict]]:
    """(system, turns): consecutive messages of one role merge into one turn, as
    Anthropic wants every tool_result of a turn in the user message that follows it."""
    system: list[str] = []
    turns: list[dict] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"), f"{where}.content")
            if text:
                system.append(text)
            continue
        if role == "user":
            turn_role, blocks = "user", _user_blocks(message.get("content"), where)
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, where)
        elif role == "tool":
            if not isinstance(message.get("tool_call_id"), str):
                raise Untranslatable(f"{where}.tool_call_id is required", where)
            turn_role = "user"
            blocks = [{"type": "tool_result", "tool_use_id": message["tool_call_id"],
                       "content": _text(message.get("content"), f"{where}.content")}]
        else:
            raise Untranslatable(f"{where}: role '{role}' is not supported by Anthropic "
                                 "providers; use tools", where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            previous = turns[-1]["content"]
            # Within a user turn the tool results come first, as Anthropic requires.
            results = [b for b in previous + blocks if b["type"] == "tool_result"]
            others = [b for b in previous + blocks if b["type"] != "tool_result"]
            turns[-1]["content"] = results + others
        else:
            turns.append({"role": turn_role, "content": blocks})
    if not turns:
        raise Untranslatable("Anthropic providers need at least one user or assistant "
                             "message with content", "messages")
    return "\n\n".join(system), turns


def _tools(tools: object) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise Untranslatable("'tools' must be an array", "tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not isinstance(
                function.get("name"), str):
            raise Untranslatable(f"tools[{i}]: only function tools are supported by Anthropic "
                                 "providers", f"tools[{i}]")
        if function["name"] == JSON_TOOL:
            raise Untranslatable(f"tools[{i}]: the name {JSON_TOOL} is reserved", f"tools[{i}]")
        converted = {"name": function["name"],
                     "input_schema": function.get("parameters")
                     or {"type": "object", "properties": {}}}
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _tool_choice(choice: object, parallel: object) -> dict | None:
    if choice is None:
        out = None if parallel is not False else {"type": "auto"}
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif (isinstance(choice, dict) and choice.get("type") == "function"
          and isinstance(choice.get("function"), dict)
          and isinstance(choice["function"].get("name"), str)):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise Untranslatable("'tool_choice' must be auto, none, required or a named function",
                             "tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _response_schema(response_format: object) -> dict | None:
    """The JSON schema the answer must follow, or None for plain text."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object", "additionalProperties": True}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise Untranslatable("Anthropic providers need response_format.json_schema.schema "
                                 "to describe an object", "response_format")
        return schema
    raise Untranslatable(f"response_format '{kind}' is not supported by Anthropic providers",
                         "response_format")


def usage_to_openai(usage: dict) -> dict:
    """Anthropic counts cached input apart from input_tokens; OpenAI's prompt_tokens
    include it (and say how much was cached)."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = (int(usage.get("input_tokens") or 0) + cached
              + int(usage.get("cache_creation_input_tokens") or 0))
    completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def finish_reason(stop_reason: str | None, json_tool: str | None) -> str:
    if stop_reason == "tool_use" and json_tool:
        return "stop"
    return FINISH_REASONS.get(stop_reason or "", "stop")


def messages_to_chat(message: dict, *, json_tool: str | None, created: int) -> dict:
    """The OpenAI chat completion for an Anthropic message."""
    texts, calls = [], []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_tool and block.get("name") == json_tool:
                texts.append(arguments)
            else:
                calls.append({"id": block.get("id"), "type": "function",
                              "function": {"name": block.get("name"), "arguments": arguments}})
    reply: dict = {"role": "assistant", "content": "".join(texts) if texts else None,
                   "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": finish_reason(message.get("stop_reason"), json_tool)}],
        "usage": usage_to_openai(message.get("usage") or {}),
    }


def error_to_openai(status: int, raw: bytes) -> bytes:
    """An Anthropic error body in OpenAI's shape: the status stays, the type is the code."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error_body(status, error["message"], code=str(error.get("type") or "") or None)
    return error_body(status, f"The upstream provider answered {status}",
                      code="upstream_error")


def model_to_openai(model: dict) -> dict:
    return {"id": model.get("id"), "object": "model", "created": 0, "owned_by": "anthropic"}


def models_to_openai(raw: bytes) -> bytes:
    payload = orjson.loads(raw)
    if "data" in payload:
        return orjson.dumps({"object": "list",
                             "data": [model_to_openai(m) for m in payload["data"]]})
    return orjson.dumps(model_to_openai(payload))


@dataclass
class SseParser:
    """Server-sent events from lines (without their newlines): feed each line, get an
    (event name, data) pair when a blank line ends an event."""

    name: str = ""
    data: list[bytes] = field(default_factory=list)

    def feed(self, line: bytes) -> tuple[str, bytes] | None:
        line = line.rstrip(b"\r")
        if not line:
            if not self.data and not self.name:
                return None
            found = (self.name or "message", b"\n".join(self.data))
            self.name, self.data = "", []
            return found
        if line.startswith(b":"):
            return None
        key, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if key == b"event":
            self.name = value.decode("utf-8", "replace")
        elif key == b"data":
            self.data.append(value)
        return None


@dataclass
class ChunkTranslator:
    """Anthropic stream events in, OpenAI chat.completion.chunk lines out: the role
    chunk first, then text and tool-call deltas (a call's index, id and name, then its
    argument fragments), then the finish chunk, the usage chunk (when the client asked
    for it) and [DONE]. An error event becomes an OpenAI error line and ends it."""

    json_tool: str | None
    include_usage: bool
    created: int
    head: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    stop_reason: str | None = None
    # Anthropic's block index -> OpenAI's tool-call index, for tool_use blocks.
    calls: dict[int, int] = field(default_factory=dict)
    json_blocks: set[int] = field(default_factory=set)
    done: bool = False

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({
            **self.head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}]})

    def feed(self, name: str, data: bytes) -> list[bytes]:
        if self.done or name == "ping":
            return []
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            return self._fail(502, "The upstream provider sent an unreadable stream event",
                              "upstream_stream_broken")
        kind = event.get("type") or name
        if kind == "message_start":
            message = event.get("message") or {}
            self.head = {"id": message.get("id"), "object": "chat.completion.chunk",
                         "created": self.created, "model": message.get("model")}
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(int(event.get("index") or 0),
                                     event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(event.get("index") or 0), event.get("delta") or {})
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason")
            # Usage on a message_delta is cumulative: it replaces, it does not add.
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items()
                               if v is not None})
            return []
        if kind == "message_stop":
            self.done = True
            lines = [self._chunk({}, finish_reason(self.stop_reason, self.json_tool))]
            if self.include_usage:
                lines.append(b"data: " + orjson.dumps({**self.head, "choices": [],
                                                       "usage": usage_to_openai(self.usage)}))
            return [*lines, b"data: [DONE]"]
        if kind == "error":
            error = event.get("error") or {}
            error_type = str(error.get("type") or "api_error")
            return self._fail(ERROR_STATUSES.get(error_type, 500),
                              str(error.get("message") or "The upstream provider failed"),
                              error_type)
        return []  # content_block_stop, and event kinds added later

    def _block_start(self, index: int, block: dict) -> list[bytes]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        if self.json_tool and block.get("name") == self.json_tool:
            self.json_blocks.add(index)
            return []
        call = self.calls.setdefault(index, len(self.calls))
        return [self._chunk({"tool_calls": [{
            "index": call, "id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": ""}}]})]

    def _block_delta(self, index: int, delta: dict) -> list[bytes]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") != "input_json_delta" or not delta.get("partial_json"):
            return []  # thinking and signature deltas have no OpenAI counterpart
        if index in self.json_blocks:
            return [self._chunk({"content": delta["partial_json"]})]
        if index not in self.calls:
            return []
        return [self._chunk({"tool_calls": [{"index": self.calls[index],
                                             "function": {"arguments": delta["partial_json"]}}]})]

    def _fail(self, status: int, message: str, code: str) -> list[bytes]:
        self.done = True
        return [b"data: " + error_body(status, message, code=code)]

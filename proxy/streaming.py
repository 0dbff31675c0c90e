"""Server-sent events: relaying an upstream stream, and turning answers into streams
and streams into answers, so either kind of cached answer serves either kind of request."""

from dataclasses import dataclass, field

import orjson

from cognitude.errors import error_body

DONE = b"data: [DONE]\n\n"


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


@dataclass
class StreamRecorder:
    """Follows an upstream SSE stream line by line: says what to pass to the client and
    keeps what the cache and the costing need."""

    client_wants_usage: bool
    sse_body: bytearray = field(default_factory=bytearray)
    usage_event: bytes = b""
    usage: dict | None = None
    chunks: list[dict] = field(default_factory=list)
    done: bool = False
    failed: bool = False

    def feed(self, line: bytes) -> bytes | None:
        """The bytes to send the client for this upstream line, if any."""
        line = line.strip()
        if not line.startswith(b"data:"):
            return None  # blank separators, comments, keep-alives
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.failed = True
            return event(payload)
        if not isinstance(chunk, dict) or "error" in chunk:
            self.failed = True
            return event(payload)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("choices") == [] and chunk.get("usage"):
            # The usage-only chunk: the gateway always asks for it (costing needs
            # it) and hands it on only to clients that asked too.
            self.usage_event = event(payload)
            return self.usage_event if self.client_wants_usage else None
        self.chunks.append(chunk)
        data = event(payload)
        self.sse_body += data
        return data

    @property
    def complete(self) -> bool:
        return self.done and not self.failed and bool(self.chunks)

    @property
    def model(self) -> str:
        return str(self.chunks[0].get("model") or "") if self.chunks else ""

    def end(self) -> bytes:
        """What ends the client's stream once the upstream's is over."""
        return DONE if self.done else self.broken(502, "The upstream stream ended early")

    @staticmethod
    def broken(status: int, message: str) -> bytes:
        """The error event that tells the client its stream broke (the OpenAI SDK raises it)."""
        return event(error_body(status, message, code="upstream_stream_broken"))

    def assembled(self) -> bytes:
        """The non-streamed answer these chunks add up to."""
        return orjson.dumps(assemble(self.chunks, self.usage))


def assemble(chunks: list[dict], usage: dict | None) -> dict:
    first = chunks[0]
    is_chat = first.get("object") == "chat.completion.chunk"
    choices: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            if is_chat:
                merged = choices.setdefault(
                    index, {"index": index, "message": {"role": "assistant", "content": None},
                            "logprobs": None, "finish_reason": None}
                )
                _merge_delta(merged["message"], choice.get("delta") or {})
            else:
                merged = choices.setdefault(
                    index, {"index": index, "text": "", "logprobs": None, "finish_reason": None}
                )
                merged["text"] += choice.get("text") or ""
            if choice.get("finish_reason"):
                merged["finish_reason"] = choice["finish_reason"]
    answer = {
        "id": first.get("id"),
        "object": "chat.completion" if is_chat else "text_completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if first.get("system_fingerprint"):
        answer["system_fingerprint"] = first["system_fingerprint"]
    if usage:
        answer["usage"] = usage
    return answer


def _merge_delta(message: dict, delta: dict) -> None:
    if delta.get("role"):
        message["role"] = delta["role"]
    if delta.get("content"):
        message["content"] = (message["content"] or "") + delta["content"]
    if delta.get("refusal"):
        message["refusal"] = (message.get("refusal") or "") + delta["refusal"]
    for call in delta.get("tool_calls") or []:
        calls = message.setdefault("tool_calls", [])
        index = call.get("index", 0)
        while len(calls) <= index:
            calls.append({"id": None, "type": "function",
                          "function": {"name": "", "arguments": ""}})
        target = calls[index]
        if call.get("id"):
            target["id"] = call["id"]
        function = call.get("function") or {}
        target["function"]["name"] += function.get("name") or ""
        target["function"]["arguments"] += function.get("arguments") or ""


def stream_from_answer(json_body: bytes, *, include_usage: bool) -> bytes:
    """A whole SSE stream (with [DONE]) that replays a non-streamed answer."""
    answer = orjson.loads(json_body)
    is_chat = answer.get("object") == "chat.completion"
    base = {"id": answer.get("id"), "created": answer.get("created"),
            "model": answer.get("model"),
            "object": "chat.completion.chunk" if is_chat else "text_completion"}
    if answer.get("system_fingerprint"):
        base["system_fingerprint"] = answer["system_fingerprint"]
    out = bytearray()
    for choice in answer.get("choices", []):
        index = choice.get("index", 0)
        if is_chat:
            message = choice.get("message") or {}
            delta: dict = {"role": message.get("role", "assistant"),
                           "content": message.get("content")}
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {**call, "index": i} for i, call in enumerate(message["tool_calls"])
                ]
            pieces = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None},
                      {"index": index, "delta": {}, "logprobs": None,
                       "finish_reason": choice.get("finish_reason")}]
        else:
            pieces = [{"index": index, "text": choice.get("text", ""), "logprobs": None,
                       "finish_reason": choice.get("finish_reason")}]
        for piece in pieces:
            out += event(orjson.dumps({**base, "choices": [piece]}))
    if include_usage and answer.get("usage"):
        out += event(orjson.dumps({**base, "choices": [], "usage": answer["usage"]}))
    out += DONE
    return bytes(out)

"""Typed event streams, the OpenAI Responses API's and Anthropic Messages': relayed
event by event as they arrive (`event:` and `data:` lines kept as sent), assembled into
the JSON answer for the cache, and replayed from a cached JSON answer.

The recorders speak the same small interface as proxy.streaming.StreamRecorder (feed,
done, complete, failed, usage, model, assembled, sse_body, usage_event, end, broken).
"""

from dataclasses import dataclass, field
from typing import Any

import orjson


def typed_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@dataclass
class _EventRecorder:
    """Gathers an upstream's lines into events (a blank line ends one), hands each on
    whole, and lets the subclass follow its meaning."""

    sse_body: bytearray = field(default_factory=bytearray)
    usage_event: bytes = b""
    usage: dict | None = None
    model: str = ""
    done: bool = False
    failed: bool = False
    _lines: list[bytes] = field(default_factory=list)

    def feed(self, line: bytes) -> bytes | None:
        """The bytes to send the client once `line` completes an event, if it does."""
        line = line.rstrip(b"\r\n")
        if line:
            self._lines.append(line)
            return None
        lines, self._lines = self._lines, []
        data = b"\n".join(line[5:].strip() for line in lines if line.startswith(b"data:"))
        if not data:
            return None  # comments, keep-alives
        raw = b"\n".join(lines) + b"\n\n"
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            self.failed = True
            return raw
        self._take(str(payload.get("type") or ""), payload)
        self.sse_body += raw
        return raw

    def _take(self, kind: str, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def complete(self) -> bool:
        raise NotImplementedError

    def end(self) -> bytes:
        """What ends the client's stream once the upstream's is over."""
        return b"" if self.done else self.broken(502, "The upstream stream ended early")

    def broken(self, status: int, message: str) -> bytes:
        raise NotImplementedError


@dataclass
class ResponsesRecorder(_EventRecorder):
    """response.created ... response.completed; the last carries the whole response."""

    response_id: str = ""
    _final: dict | None = None

    def _take(self, kind: str, payload: dict[str, Any]) -> None:
        response = payload.get("response")
        if kind == "response.created" and isinstance(response, dict):
            self.response_id = str(response.get("id") or "")
            self.model = str(response.get("model") or "")
        elif kind in ("response.completed", "response.incomplete") and isinstance(response,
                                                                                   dict):
            # An incomplete response (max_output_tokens) is an answer, as it is as JSON.
            self._final = response
            self.usage = response.get("usage")
            self.done = True
        elif kind in ("response.failed", "error"):
            self.failed = self.done = True

    @property
    def complete(self) -> bool:
        return self.done and not self.failed and self._final is not None

    def assembled(self) -> bytes:
        return orjson.dumps(self._final)

    def broken(self, status: int, message: str) -> bytes:
        return typed_event("error", {"type": "error", "code": "upstream_stream_broken",
                                     "message": message, "param": None})


@dataclass
class MessagesRecorder(_EventRecorder):
    """message_start, content blocks (start, deltas, stop), message_delta, message_stop."""

    _message: dict | None = None
    _blocks: dict[int, dict] = field(default_factory=dict)
    _json: dict[int, str] = field(default_factory=dict)

    def _take(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            self._message = dict(payload["message"])
            self.model = str(self._message.get("model") or "")
            self.usage = dict(self._message.get("usage") or {})
        elif kind == "content_block_start":
            self._blocks[payload.get("index", 0)] = dict(payload.get("content_block") or {})
        elif kind == "content_block_delta":
            self._delta(payload.get("index", 0), payload.get("delta") or {})
        elif kind == "content_block_stop":
            index = payload.get("index", 0)
            if index in self._json and index in self._blocks:
                try:
                    self._blocks[index]["input"] = orjson.loads(self._json.pop(index) or "{}")
                except orjson.JSONDecodeError:
                    self.failed = True
        elif kind == "message_delta" and self._message is not None:
            self._message.update(payload.get("delta") or {})
            self.usage = {**(self.usage or {}), **(payload.get("usage") or {})}
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.failed = self.done = True

    def _delta(self, index: int, delta: dict) -> None:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = (block.get("text") or "") + (delta.get("text") or "")
        elif kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + (delta.get("partial_json") or "")
        elif kind == "thinking_delta":
            block["thinking"] = (block.get("thinking") or "") + (delta.get("thinking") or "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    @property
    def complete(self) -> bool:
        return self.done and not self.failed and self._message is not None

    def assembled(self) -> bytes:
        message = {**self._message,
                   "content": [self._blocks[i] for i in sorted(self._blocks)],
                   "usage": self.usage}
        return orjson.dumps(message)

    def broken(self, status: int, message: str) -> bytes:
        return typed_event("error", {"type": "error",
                                     "error": {"type": "api_error", "message": message}})


def responses_stream_from_answer(json_body: bytes) -> bytes:
    """The typed events that replay a Responses API answer, as OpenAI streams one."""
    response = orjson.loads(json_body)
    out = bytearray()
    sequence = 0

    def emit(payload: dict[str, Any]) -> None:
        nonlocal sequence
        out.extend(typed_event(payload["type"], {**payload, "sequence_number": sequence}))
        sequence += 1

    started = {**response, "status": "in_progress", "output": [], "usage": None,
               "incomplete_details": None}
    emit({"type": "response.created", "response": started})
    emit({"type": "response.in_progress", "response": started})
    for index, item in enumerate(response.get("output") or []):
        where = {"item_id": item.get("id"), "output_index": index}
        if item.get("type") == "message":
            emit({"type": "response.output_item.added", "output_index": index,
                  "item": {**item, "status": "in_progress", "content": []}})
            for part_index, part in enumerate(item.get("content") or []):
                at = {**where, "content_index": part_index}
                text = part.get("text", "")
                emit({"type": "response.content_part.added", **at,
                      "part": {**part, "text": ""}})
                if part.get("type") == "output_text":
                    emit({"type": "response.output_text.delta", **at, "delta": text,
                          "logprobs": []})
                    emit({"type": "response.output_text.done", **at, "text": text,
                          "logprobs": []})
                emit({"type": "response.content_part.done", **at, "part": part})
        elif item.get("type") == "function_call":
            emit({"type": "response.output_item.added", "output_index": index,
                  "item": {**item, "status": "in_progress", "arguments": ""}})
            arguments = item.get("arguments", "")
            emit({"type": "response.function_call_arguments.delta", **where,
                  "delta": arguments})
            emit({"type": "response.function_call_arguments.done", **where,
                  "name": item.get("name"), "arguments": arguments})
        else:
            emit({"type": "response.output_item.added", "output_index": index, "item": item})
        emit({"type": "response.output_item.done", "output_index": index, "item": item})
    final = "response.incomplete" if response.get("status") == "incomplete" else (
        "response.completed")
    emit({"type": final, "response": response})
    return bytes(out)


def messages_stream_from_answer(json_body: bytes) -> bytes:
    """The events that replay an Anthropic message, as Anthropic streams one."""
    message = orjson.loads(json_body)
    usage = message.get("usage") or {}
    out = bytearray(typed_event("message_start", {"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0}}}))
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        if kind == "text":
            empty = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta",
                     "partial_json": orjson.dumps(block.get("input") or {}).decode()}
        elif kind == "thinking":
            empty = {**block, "thinking": "", "signature": ""}
            delta = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
        else:
            empty, delta = block, None
        out += typed_event("content_block_start", {"type": "content_block_start",
                                                   "index": index, "content_block": empty})
        if delta is not None:
            out += typed_event("content_block_delta", {"type": "content_block_delta",
                                                       "index": index, "delta": delta})
        if kind == "thinking" and block.get("signature"):
            out += typed_event("content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "signature_delta", "signature": block["signature"]}})
        out += typed_event("content_block_stop", {"type": "content_block_stop", "index": index})
    out += typed_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason"),
                  "stop_sequence": message.get("stop_sequence")},
        "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    out += typed_event("message_stop", {"type": "message_stop"})
    return bytes(out)

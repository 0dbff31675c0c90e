"""The OpenAI Responses API of the fake: POST /v1/responses, as one JSON response or as
its typed SSE events (``event: response.created`` ... ``event: response.completed``, no
``[DONE]``), in the shapes the official openai SDK parses.

A response's id is remembered (the last MAX_REMEMBERED), so ``previous_response_id``
naming one this fake never created is refused as OpenAI refuses it: a request that
continues a conversation must reach the provider that holds it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson

from fakeupstream.chat import BadRequest
from fakeupstream.wire import (
    Reply,
    answer_text,
    count_tokens,
    new_id,
    split_pieces,
    text_of,
    tool_input,
)

MAX_REMEMBERED = 10_000
# Chat Completions parameters the Responses API does not take: sending one is a
# client's (or a gateway's) mistake, refused as OpenAI refuses unknown parameters.
CHAT_ONLY = ("messages", "max_tokens", "n", "response_format", "stop")
STREAM_OPTIONS = frozenset({"include_obfuscation"})


def unknown_parameter(name: str) -> BadRequest:
    return BadRequest(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def item_text(item: Any) -> str:
    """The text of one input item: a message's content or a tool call's output."""
    if not isinstance(item, dict):
        return ""
    if item.get("type") == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else text_of(output)
    return text_of(item.get("content"))


def read_input(body: dict[str, Any]) -> list[Any]:
    given = body.get("input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if isinstance(given, list) and given:
        return given
    raise BadRequest(400, "Missing required parameter: 'input'.", param="input",
                     code="missing_required_parameter")


def chosen_function(body: dict[str, Any], items: list[Any]) -> dict[str, Any] | None:
    """The function tool the fake calls, if any: none after a tool's output, else the
    named one, else the first (tool_choice "auto" or "required")."""
    given = body.get("tools") or []
    if not isinstance(given, list):
        raise BadRequest(400, "Invalid type for 'tools': expected an array.", param="tools",
                         code="invalid_type")
    tools = [tool for tool in given
             if isinstance(tool, dict) and tool.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    last = items[-1]
    if not tools or choice == "none":
        return None
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        named = [t for t in tools if t.get("name") == choice.get("name")]
        if not named:
            raise BadRequest(400, f"Tool choice '{choice.get('name')}' not found in 'tools' "
                             "parameter.", param="tool_choice")
        return named[0]
    return tools[0]


class ResponsesApi:
    """POST /v1/responses; holds the ids of the responses it created."""

    def __init__(self) -> None:
        self.created: OrderedDict[str, None] = OrderedDict()

    def remember(self, response_id: str) -> None:
        self.created[response_id] = None
        if len(self.created) > MAX_REMEMBERED:
            self.created.popitem(last=False)

    def answer(self, body: dict[str, Any], model: str) -> tuple[Reply, str]:
        for name in CHAT_ONLY:
            if name in body:
                raise unknown_parameter(name)
        options = body.get("stream_options")
        if isinstance(options, dict):
            for name in options:
                if name not in STREAM_OPTIONS:
                    raise unknown_parameter(f"stream_options.{name}")
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.created:
            raise BadRequest(400, f"Previous response with id '{previous}' not found.",
                             param="previous_response_id", code="previous_response_not_found")
        items = read_input(body)
        texts = [item_text(item) for item in items]
        user_texts = [
            text for item, text in zip(items, texts, strict=True)
            if isinstance(item, dict) and item.get("role") == "user"
        ]
        echo = user_texts[-1] if user_texts else texts[-1]
        prompt_tokens = sum(count_tokens(text) for text in texts)
        prompt_tokens += count_tokens(body.get("instructions") or "")

        function = chosen_function(body, items)
        status, incomplete = "completed", None
        if function is not None:
            arguments = orjson.dumps(tool_input(function.get("parameters"), echo)).decode()
            item = {"id": new_id("fc_"), "type": "function_call", "status": "completed",
                    "call_id": new_id("call_"), "name": function["name"],
                    "arguments": arguments}
            produced = arguments
        else:
            text = answer_text(body, model, echo)
            limit = body.get("max_output_tokens")
            if isinstance(limit, int) and count_tokens(text) > limit:
                text, status = text[: limit * 4], "incomplete"
                incomplete = {"reason": "max_output_tokens"}
            produced = text
            item = {"id": new_id("msg_"), "type": "message", "status": status,
                    "role": "assistant", "content": [output_text(text)]}
        completion_tokens = count_tokens(produced)
        response = {
            "id": new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": [item],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": previous,
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        self.remember(response["id"])
        if body.get("stream"):
            return stream_events(response), texts[-1]
        return Reply(body=orjson.dumps(response)), texts[-1]


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def stream_events(response: dict[str, Any]) -> Reply:
    """The typed events of one response: created, in_progress, the item and its
    deltas, then the item done and response.completed."""
    sequence = iter(range(1_000_000))

    def numbered(payload: dict[str, Any]) -> bytes:
        return event({**payload, "sequence_number": next(sequence)})

    [item] = response["output"]
    started = {**response, "status": "in_progress", "output": [], "usage": None,
               "incomplete_details": None}
    head = [numbered({"type": "response.created", "response": started}),
            numbered({"type": "response.in_progress", "response": started})]
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "function_call":
        head.append(numbered({"type": "response.output_item.added", "output_index": 0,
                              "item": {**item, "arguments": "", "status": "in_progress"}}))
        content = [
            numbered({"type": "response.function_call_arguments.delta", **where, "delta": piece})
            for piece in split_pieces(item["arguments"])
        ]
        tail = [numbered({"type": "response.function_call_arguments.done", **where,
                          "name": item["name"], "arguments": item["arguments"]})]
    else:
        text = item["content"][0]["text"]
        part = {**where, "content_index": 0}
        head += [
            numbered({"type": "response.output_item.added", "output_index": 0,
                      "item": {**item, "status": "in_progress", "content": []}}),
            numbered({"type": "response.content_part.added", **part, "part": output_text("")}),
        ]
        content = [
            numbered({"type": "response.output_text.delta", **part, "delta": piece,
                      "logprobs": []})
            for piece in split_pieces(text)
        ]
        tail = [
            numbered({"type": "response.output_text.done", **part, "text": text,
                      "logprobs": []}),
            numbered({"type": "response.content_part.done", **part, "part": output_text(text)}),
        ]
    tail += [
        numbered({"type": "response.output_item.done", "output_index": 0, "item": item}),
        numbered({"type": "response.completed", "response": response}),
    ]
    error_number = next(sequence)

    def stream_error(status: int) -> bytes:
        return event({"type": "error", "code": "server_error" if status >= 500 else None,
                      "message": f"Injected fault: stream error {status}.", "param": None,
                      "sequence_number": error_number})

    return Reply(stream_head=b"".join(head), stream_content=tuple(content),
                 stream_tail=tuple(tail), stream_error=stream_error)

"""Typed event streams (the Responses API's, Anthropic Messages'): relayed event by
event unchanged, assembled into the answer the same request would get as JSON, and
replayed from a JSON answer as a stream that assembles back to it."""

import orjson
from anthropic.types import Message
from openai.types.responses import Response

from fakeupstream.messages import stream_events as messages_events
from fakeupstream.responses import stream_events as responses_events
from proxy.typed_sse import (
    MessagesRecorder,
    ResponsesRecorder,
    messages_stream_from_answer,
    responses_stream_from_answer,
)

RESPONSE = {
    "id": "resp_1", "object": "response", "created_at": 1700000000, "status": "completed",
    "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
    "model": "gpt-4o-mini", "parallel_tool_calls": True, "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
    "truncation": "disabled", "user": None, "metadata": {},
    "output": [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Paris, of course.",
                             "annotations": [], "logprobs": []}]}],
    "usage": {"input_tokens": 9,
              "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
              "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0},
              "total_tokens": 13},
}
FUNCTION_CALL = {**RESPONSE, "output": [
    {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
     "name": "get_weather", "arguments": '{"city": "Paris"}'}]}
MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Calling get_weather."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris", "days": 3}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 11, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0},
}


def feed(recorder, stream: bytes) -> list[bytes]:
    """Feed a stream line by line, as the relay does; returns what the client got."""
    sent = []
    for line in stream.split(b"\n"):
        out = recorder.feed(line)
        if out is not None:
            sent.append(out)
    return sent


def whole(reply) -> bytes:
    return reply.stream_head + b"".join(reply.stream_content) + b"".join(reply.stream_tail)


def test_it_relays_responses_events_unchanged_and_assembles_the_response():
    for response in (RESPONSE, FUNCTION_CALL):
        stream = whole(responses_events(response))
        recorder = ResponsesRecorder()

        sent = feed(recorder, stream)

        assert b"".join(sent) == stream
        assert recorder.complete and recorder.done
        assert orjson.loads(recorder.assembled()) == response
        assert recorder.response_id == "resp_1" and recorder.model == "gpt-4o-mini"
        assert recorder.usage["output_tokens"] == 4


def test_it_replays_a_response_as_events_that_assemble_back_to_it():
    for response in (RESPONSE, FUNCTION_CALL):
        replay = responses_stream_from_answer(orjson.dumps(response))
        recorder = ResponsesRecorder()
        feed(recorder, replay)

        assert orjson.loads(recorder.assembled()) == response
        Response.model_validate(orjson.loads(recorder.assembled()))
        events = [orjson.loads(part.split(b"data: ", 1)[1]) for part in replay.split(b"\n\n")
                  if part]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.completed"


def test_it_does_not_call_a_failed_or_cut_responses_stream_complete():
    events = whole(responses_events(RESPONSE)).split(b"\n\n")
    cut = ResponsesRecorder()
    feed(cut, b"\n\n".join(events[:4]) + b"\n\n")
    failed = ResponsesRecorder()
    feed(failed, events[0] + b"\n\nevent: error\ndata: {\"type\": \"error\", "
         b"\"code\": \"server_error\", \"message\": \"boom\"}\n\n")

    assert not cut.done and not cut.complete
    assert cut.end().startswith(b"event: error\n")
    assert failed.done and failed.failed and not failed.complete


def test_it_relays_messages_events_unchanged_and_assembles_the_message():
    stream = whole(messages_events(MESSAGE))
    recorder = MessagesRecorder()

    sent = feed(recorder, stream)

    assert b"".join(sent) == stream  # ping included
    assert recorder.complete
    assert orjson.loads(recorder.assembled()) == MESSAGE
    assert recorder.usage["input_tokens"] == 20 and recorder.usage["output_tokens"] == 11
    assert recorder.model == "claude-haiku-4-5"


def test_it_replays_a_message_as_events_that_assemble_back_to_it():
    replay = messages_stream_from_answer(orjson.dumps(MESSAGE))
    recorder = MessagesRecorder()
    feed(recorder, replay)

    assert orjson.loads(recorder.assembled()) == MESSAGE
    Message.model_validate(orjson.loads(recorder.assembled()))
    assert replay.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_it_does_not_call_a_messages_stream_with_an_error_complete():
    head = whole(messages_events(MESSAGE)).split(b"\n\n")[0] + b"\n\n"
    recorder = MessagesRecorder()
    feed(recorder, head + b'event: error\ndata: {"type": "error", "error": '
         b'{"type": "overloaded_error", "message": "Overloaded"}}\n\n')

    assert recorder.failed and not recorder.complete
    assert b"api_error" in recorder.broken(502, "cut")

"""Stream assembly: the upstream's SSE chunks, as StreamRecorder sees them line by line,
become the answer a later non-streamed request is served from the cache. What it
assembles must be what the upstream would have answered without streaming."""

import orjson
from openai.types import Completion
from openai.types.chat import ChatCompletion

from proxy.streaming import DONE, StreamRecorder, stream_from_answer

HEAD = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_1"}
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def line(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk)


def chunk(*choices: dict) -> dict:
    return {**HEAD, "choices": list(choices)}


def delta(index: int = 0, finish_reason: str | None = None, **fields) -> dict:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": finish_reason}


def record(chunks: list[dict], *, usage: dict | None = USAGE,
           client_wants_usage: bool = False) -> tuple[StreamRecorder, list[bytes]]:
    """Feed a stream as the relay does (events, blank separators, [DONE]); returns the
    recorder and what the client was sent."""
    recorder = StreamRecorder(client_wants_usage=client_wants_usage)
    lines = [line(c) for c in chunks]
    if usage:
        lines.append(line({**HEAD, "choices": [], "usage": usage}))
    lines.append(b"data: [DONE]")
    sent = []
    for raw in lines:
        for piece in (raw + b"\n", b"\n"):
            out = recorder.feed(piece)
            if out is not None:
                sent.append(out)
    return recorder, sent


def assembled(recorder: StreamRecorder) -> dict:
    return orjson.loads(recorder.assembled())


def weather_call_chunks() -> list[dict]:
    # As OpenAI streams a tool call: id and name first, the arguments in pieces.
    return [
        chunk(delta(role="assistant", content=None, tool_calls=[
            {"index": 0, "id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"ci'}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Pa'}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": 'ris"}'}}])),
        chunk(delta(finish_reason="tool_calls")),
    ]


def test_it_merges_tool_call_deltas_into_one_call_with_the_whole_arguments():
    recorder, _ = record(weather_call_chunks())

    assert recorder.complete
    [choice] = assembled(recorder)["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_abc", "type": "function",
                        "function": {"name": "get_weather",
                                     "arguments": '{"city": "Paris"}'}}],
    }
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris"}


def test_it_keeps_parallel_tool_calls_apart_when_their_deltas_interleave():
    chunks = [
        chunk(delta(role="assistant", tool_calls=[
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}])),
        chunk(delta(tool_calls=[{"index": 1, "id": "call_2", "type": "function",
                                 "function": {"name": "get_time", "arguments": '{"tz"'}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}])),
        chunk(delta(tool_calls=[{"index": 1, "function": {"arguments": ': "CET"}'}}])),
        chunk(delta(finish_reason="tool_calls")),
    ]

    recorder, _ = record(chunks)

    calls = assembled(recorder)["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("call_1", "get_weather", '{"city": "Oslo"}'),
        ("call_2", "get_time", '{"tz": "CET"}'),
    ]


def test_it_assembles_several_choices_from_interleaved_chunks():
    chunks = [
        chunk(delta(0, role="assistant", content=""), delta(1, role="assistant", content="")),
        chunk(delta(1, content="Bonjour")),
        chunk(delta(0, content="Hel")),
        chunk(delta(0, content="lo")),
        chunk(delta(1, content=" !"), delta(0, finish_reason="stop")),
        chunk(delta(1, finish_reason="length")),
    ]

    recorder, _ = record(chunks)

    answer = assembled(recorder)
    assert [(c["index"], c["message"]["content"], c["finish_reason"])
            for c in answer["choices"]] == [(0, "Hello", "stop"), (1, "Bonjour !", "length")]


def test_it_is_the_answer_the_sdk_would_have_parsed():
    recorder, _ = record([
        chunk(delta(role="assistant", content="")),
        chunk(delta(content="Hi there")),
        chunk(delta(finish_reason="stop")),
    ])

    completion = ChatCompletion.model_validate(assembled(recorder))

    assert completion.object == "chat.completion"
    assert (completion.id, completion.created, completion.model) == (
        "chatcmpl-9", 1700000000, "gpt-4o-2024-08-06")
    assert completion.system_fingerprint == "fp_1"
    assert completion.choices[0].message.content == "Hi there"
    assert completion.usage is not None and completion.usage.total_tokens == 21


def test_it_keeps_the_usage_chunk_and_hands_it_on_only_when_asked():
    chunks = [chunk(delta(role="assistant", content="ok")), chunk(delta(finish_reason="stop"))]
    usage_event = b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": USAGE}) + b"\n\n"

    quiet, sent_quiet = record(chunks)
    asked, sent_asked = record(chunks, client_wants_usage=True)

    for recorder in (quiet, asked):
        assert recorder.usage == USAGE
        assert recorder.usage_event == usage_event
        assert assembled(recorder)["usage"] == USAGE
        # The cached stream is the content alone: the usage event is stored apart.
        assert recorder.sse_body == b"".join(b"data: " + orjson.dumps(c) + b"\n\n"
                                             for c in chunks)
    assert usage_event not in sent_quiet
    assert sent_asked[-1] == usage_event
    assert sent_quiet == sent_asked[:-1]


def test_it_assembles_without_usage_when_the_upstream_sends_none():
    recorder, _ = record([chunk(delta(role="assistant", content="ok")),
                          chunk(delta(finish_reason="stop"))], usage=None)

    assert recorder.complete
    assert recorder.usage is None and recorder.usage_event == b""
    assert "usage" not in assembled(recorder)


def test_it_takes_usage_that_rides_on_the_last_content_chunk():
    # Some OpenAI-compatible servers put usage on a chunk that still has choices.
    last = {**chunk(delta(finish_reason="stop")), "usage": USAGE}

    recorder, _ = record([chunk(delta(role="assistant", content="ok")), last], usage=None)

    assert recorder.usage == USAGE
    assert assembled(recorder)["usage"] == USAGE


def test_it_assembles_legacy_text_completions():
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5"}
    text = [{**head, "choices": [{"index": i, "text": t, "logprobs": None,
                                  "finish_reason": f}]}
            for i, t, f in [(0, "Say", None), (1, "Other", "stop"), (0, " a", "length")]]

    recorder, _ = record(text, usage=None)

    completion = Completion.model_validate(assembled(recorder))
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "Say a", "length"), (1, "Other", "stop")]


def test_it_is_not_complete_without_done_or_after_an_error():
    unfinished = StreamRecorder(client_wants_usage=False)
    unfinished.feed(line(chunk(delta(role="assistant", content="half"))))

    broken = StreamRecorder(client_wants_usage=False)
    broken.feed(line(chunk(delta(role="assistant", content="half"))))
    sent = broken.feed(b'data: {"error": {"message": "overloaded"}}')
    broken.feed(b"data: [DONE]")

    empty = StreamRecorder(client_wants_usage=False)
    empty.feed(b"data: [DONE]")

    assert not unfinished.complete
    assert not broken.complete and broken.failed
    # The client still sees the upstream's error event.
    assert sent == b'data: {"error": {"message": "overloaded"}}\n\n'
    assert not empty.complete


def test_it_ignores_comments_and_keep_alives():
    recorder = StreamRecorder(client_wants_usage=False)

    assert recorder.feed(b": keep-alive\n") is None
    assert recorder.feed(b"event: ping\n") is None
    assert recorder.feed(b"\n") is None
    assert recorder.chunks == [] and recorder.sse_body == b""


def test_it_replays_an_assembled_tool_call_as_a_stream_that_assembles_to_the_same():
    # A streamed miss serves a later streamed hit from the assembled answer too.
    recorder, _ = record(weather_call_chunks())
    answer = recorder.assembled()

    replayed = StreamRecorder(client_wants_usage=True)
    for raw in stream_from_answer(answer, include_usage=True).split(b"\n"):
        replayed.feed(raw)

    assert stream_from_answer(answer, include_usage=True).endswith(DONE)
    assert replayed.complete
    assert assembled(replayed) == orjson.loads(answer)

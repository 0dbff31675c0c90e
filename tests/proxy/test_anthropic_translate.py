"""OpenAI chat completions <-> Anthropic Messages, the pure translation functions."""

import base64

import orjson
import pytest

from proxy.providers.anthropic_translate import (
    JSON_TOOL,
    ChunkTranslator,
    SseParser,
    Untranslatable,
    chat_to_messages,
    error_to_openai,
    messages_to_chat,
    models_to_openai,
)

PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def translate(**fields) -> dict:
    body = {"model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "Hi"}], **fields}
    return chat_to_messages(body, default_max_tokens=4096).body


def test_it_sends_a_plain_request_with_the_default_max_tokens():
    assert translate() == {"model": "claude-sonnet-4-5", "max_tokens": 4096,
                           "messages": [{"role": "user",
                                         "content": [{"type": "text", "text": "Hi"}]}]}


def test_it_prefers_max_completion_tokens_and_keeps_sampling_and_stops():
    body = translate(max_tokens=100, max_completion_tokens=50, temperature=0.2, top_p=0.9,
                     stop="END", user="u-1", seed=7, presence_penalty=0.5)

    assert body["max_tokens"] == 50
    assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert "seed" not in body and "presence_penalty" not in body
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]


def test_it_joins_system_and_developer_messages_into_system():
    body = translate(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Again"},
    ])

    assert body["system"] == "Be brief.\n\nUse French."
    assert [(m["role"], m["content"][0]["text"]) for m in body["messages"]] == [
        ("user", "Hi"), ("assistant", "Bonjour"), ("user", "Again")]


def test_it_merges_consecutive_turns_of_one_role():
    body = translate(messages=[{"role": "user", "content": "One"},
                               {"role": "user", "content": "Two"}])

    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "One"}, {"type": "text", "text": "Two"}]}]


def test_it_sends_images_by_url_and_as_base64():
    body = translate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}",
                                            "detail": "high"}},
    ]}])

    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PIXEL}},
    ]


@pytest.mark.parametrize(("url", "complaint"), [
    ("data:image/bmp;base64,AAAA", "not image/bmp"),
    ("data:image/png,rawbytes", "base64 data URL"),
    ("data:image/png;base64,???", "not valid base64"),
    ("file:///etc/passwd", "http(s) URL"),
])
def test_it_refuses_images_anthropic_cannot_read(url, complaint):
    with pytest.raises(Untranslatable) as raised:
        translate(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}])

    assert complaint in raised.value.message
    assert raised.value.param == "messages[0].content[0]"


def test_it_sends_tools_and_each_tool_choice():
    body = translate(tools=[WEATHER])

    assert body["tools"] == [{"name": "get_weather", "description": "The weather",
                              "input_schema": WEATHER["function"]["parameters"]}]
    assert "tool_choice" not in body
    assert translate(tools=[WEATHER], tool_choice="auto")["tool_choice"] == {"type": "auto"}
    assert translate(tools=[WEATHER], tool_choice="none")["tool_choice"] == {"type": "none"}
    assert translate(tools=[WEATHER], tool_choice="required")["tool_choice"] == {"type": "any"}
    assert translate(tools=[WEATHER], tool_choice={
        "type": "function", "function": {"name": "get_weather"}})["tool_choice"] == {
        "type": "tool", "name": "get_weather"}
    assert translate(tools=[WEATHER], parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": True}


def test_it_sends_tool_calls_and_their_results_as_blocks():
    body = translate(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25 C"}]},
        {"role": "user", "content": "Which is warmer?"},
    ])

    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "21 C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "25 C"},
        {"type": "text", "text": "Which is warmer?"}]}
    assert len(body["messages"]) == 3


def test_it_turns_a_json_schema_response_format_into_a_forced_tool():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    translated = chat_to_messages({"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                                   "response_format": {"type": "json_schema", "json_schema": {
                                       "name": "reply", "schema": schema}}},
                                  default_max_tokens=10)

    assert translated.json_tool == JSON_TOOL
    assert translated.body["tools"] == [{"name": JSON_TOOL, "input_schema": schema,
                                         "description": "Answer with this tool: its input is "
                                                        "the answer."}]
    assert translated.body["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    assert translate(response_format={"type": "text"}) == translate()
    assert translate(response_format={"type": "json_object"})["tools"][0]["input_schema"] == {
        "type": "object", "additionalProperties": True}


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}},
     "response_format"),
    ({"response_format": {"type": "json_object"}, "tools": [WEATHER]}, "response_format"),
    ({"response_format": {"type": "grammar"}}, "response_format"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0]"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0]"),
])
def test_it_refuses_what_anthropic_cannot_do_as_asked(fields, param):
    with pytest.raises(Untranslatable) as raised:
        translate(**fields)

    assert raised.value.param == param


def test_it_keeps_n_1_and_logprobs_false():
    assert translate(n=1, logprobs=False) == translate()


def message(content, stop_reason="end_turn", **usage) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


def test_it_answers_text_as_a_chat_completion():
    answer = messages_to_chat(message([{"type": "text", "text": "Hello "},
                                       {"type": "text", "text": "there"}]),
                              json_tool=None, created=1700)

    assert answer == {
        "id": "msg_1", "object": "chat.completion", "created": 1700, "model": "claude-x",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello there",
                                 "refusal": None}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    }


def test_it_answers_tool_use_as_tool_calls():
    answer = messages_to_chat(message([
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ], "tool_use"), json_tool=None, created=0)

    [choice] = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]


def test_it_answers_the_forced_json_tool_as_content():
    answer = messages_to_chat(message([
        {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"answer": "42"}}],
        "tool_use"), json_tool=JSON_TOOL, created=0)

    [choice] = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": '{"answer":"42"}',
                                 "refusal": None}
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), (None, "stop"),
])
def test_it_maps_stop_reasons_to_finish_reasons(stop_reason, finish_reason):
    answer = messages_to_chat(message([{"type": "text", "text": "x"}], stop_reason),
                              json_tool=None, created=0)

    assert answer["choices"][0]["finish_reason"] == finish_reason


def test_it_counts_cached_input_in_prompt_tokens():
    answer = messages_to_chat(message([], cache_read_input_tokens=100,
                                      cache_creation_input_tokens=20),
                              json_tool=None, created=0)

    assert answer["usage"] == {"prompt_tokens": 130, "completion_tokens": 5,
                               "total_tokens": 135, "prompt_tokens_details": {"cached_tokens": 100}}
    assert answer["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("status", "kind", "openai_type"), [
    (400, "invalid_request_error", "invalid_request_error"),
    (401, "authentication_error", "authentication_error"),
    (429, "rate_limit_error", "rate_limit_error"),
    (529, "overloaded_error", "server_error"),
])
def test_it_shapes_anthropic_errors_the_openai_way(status, kind, openai_type):
    raw = orjson.dumps({"type": "error", "error": {"type": kind, "message": "Nope"},
                        "request_id": "req_1"})

    assert orjson.loads(error_to_openai(status, raw)) == {"error": {
        "message": "Nope", "type": openai_type, "param": None, "code": kind}}


def test_it_shapes_an_error_that_is_not_anthropics():
    error = orjson.loads(error_to_openai(502, b"<html>Bad gateway</html>"))["error"]

    assert (error["code"], error["message"]) == ("upstream_error",
                                                 "The upstream provider answered 502")


def test_it_lists_models_the_openai_way():
    listed = orjson.loads(models_to_openai(orjson.dumps(
        {"data": [{"type": "model", "id": "claude-a"}], "has_more": False})))
    one = orjson.loads(models_to_openai(orjson.dumps({"type": "model", "id": "claude-a"})))

    assert listed == {"object": "list", "data": [
        {"id": "claude-a", "object": "model", "created": 0, "owned_by": "anthropic"}]}
    assert one["id"] == "claude-a"


def sse(name: str, payload: dict) -> list[bytes]:
    return [f"event: {name}".encode(), b"data: " + orjson.dumps(payload), b""]


def test_it_parses_server_sent_events_from_lines():
    parser = SseParser()
    lines = [b": keep-alive", b"", *sse("ping", {"type": "ping"}),
             b"event: message_stop\r", b'data: {"type":', b'data: "message_stop"}', b""]

    found = [event for line in lines if (event := parser.feed(line)) is not None]

    assert found == [("ping", b'{"type":"ping"}'),
                     ("message_stop", b'{"type":\n"message_stop"}')]


STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Let me check."}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": '{"city":'}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                       "usage": {"output_tokens": 30}}),
    ("message_stop", {"type": "message_stop"}),
]


def run(translator: ChunkTranslator, events=STREAM) -> list[dict | str]:
    out = []
    for name, payload in events:
        for line in translator.feed(name, orjson.dumps(payload)):
            assert line.startswith(b"data: ")
            data = line[6:]
            out.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
    return out


def test_it_translates_a_stream_into_chat_chunks():
    chunks = run(ChunkTranslator(json_tool=None, include_usage=True, created=5))

    assert chunks[-1] == "[DONE]"
    assert all(c["id"] == "msg_9" and c["object"] == "chat.completion.chunk"
               and c["created"] == 5 and c["model"] == "claude-x" for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-3]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Let me check."},
        {"tool_calls": [{"index": 0, "id": "toolu_7", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]
    assert chunks[-3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                      "finish_reason": "tool_calls"}]
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {"prompt_tokens": 12, "completion_tokens": 30,
                                   "total_tokens": 42,
                                   "prompt_tokens_details": {"cached_tokens": 0}}


def test_it_sends_the_usage_chunk_only_when_asked():
    chunks = run(ChunkTranslator(json_tool=None, include_usage=False, created=5))

    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c == "[DONE]" or "usage" not in c for c in chunks)


def test_it_streams_the_forced_json_tool_as_content():
    events = [(name, {**payload, "content_block": {**payload["content_block"], "name": JSON_TOOL}}
               if name == "content_block_start" and payload["index"] == 1 else payload)
              for name, payload in STREAM]

    chunks = run(ChunkTranslator(json_tool=JSON_TOOL, include_usage=False, created=5), events)

    contents = [c["choices"][0]["delta"].get("content") for c in chunks[:-2]]
    assert contents == ["", "Let me check.", '{"city":', '"Paris"}']
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_it_turns_an_error_event_into_an_openai_error_and_stops():
    translator = ChunkTranslator(json_tool=None, include_usage=True, created=5)
    events = [*STREAM[:4], ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}), *STREAM[4:]]

    chunks = run(translator, events)

    assert chunks[-1] == {"error": {"message": "Overloaded", "type": "server_error",
                                    "param": None, "code": "overloaded_error"}}
    assert len(chunks) == 3
    assert translator.done

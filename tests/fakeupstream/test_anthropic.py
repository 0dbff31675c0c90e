"""The fake upstream's Anthropic Messages API over real sockets, driven by the official
anthropic SDK and raw HTTP. No database: the fake is independent of Django."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from fakeupstream.testing import (
    fake_upstream_stats,
    request,
    reset_fake_upstream_stats,
    start_fake_upstream,
    stop_fake_upstream,
)

MODEL = "claude-sonnet-4-5"
MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object",
                                             "properties": {"zone": {"type": "string"}}}}
# A 1x1 PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5f0000000049454e44ae426082"
)).decode()
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
           "content-type": "application/json"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    process, url = start_fake_upstream()
    yield url
    stop_fake_upstream(process)


@pytest.fixture(autouse=True)
def clean_stats(base_url: str) -> None:
    reset_fake_upstream_stats(base_url)


def client(base_url: str, api_key: str = "sk-ant-test") -> anthropic.Anthropic:
    # No retries: a test that injects an error wants to see it once.
    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)


def raw_post(base_url: str, body: Any, headers: dict[str, str] | None = None,
             path: str = "/v1/messages") -> tuple[int, dict[str, str], bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", path, body=payload,
                           headers=HEADERS if headers is None else headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((name_line[7:], json.loads(data_line[6:])))
    return events


def test_it_answers_messages_in_anthropic_shape(base_url: str) -> None:
    message = client(base_url).messages.create(model=MODEL, max_tokens=200, messages=MESSAGES)

    assert message.type == "message"
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.model == MODEL
    [block] = message.content
    assert block.type == "text"
    assert block.text.startswith("Echo: What is the capital of France? (claude-sonnet-4-5 ")
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == 8
    assert message.usage.output_tokens > 0


def test_it_answers_the_same_request_the_same_way(base_url: str) -> None:
    sdk = client(base_url)

    def text(**fields: Any) -> str:
        params = {"model": MODEL, "max_tokens": 200, "messages": MESSAGES, **fields}
        return sdk.messages.create(**params).content[0].text

    assert text() == text()
    assert text() != text(system="Be brief.")
    assert text() != text(max_tokens=300)
    assert text() != text(extra_body={"temperature": 0.5})


def test_it_streams_messages_as_anthropic_events(base_url: str) -> None:
    expected = client(base_url).messages.create(model=MODEL, max_tokens=200, messages=MESSAGES)

    status, headers, raw = raw_post(base_url, {"model": MODEL, "max_tokens": 200,
                                               "messages": MESSAGES, "stream": True})

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]["input_tokens"]) == (
        [], None, expected.usage.input_tokens)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert 4 <= len(deltas) <= 6
    assert "".join(delta["text"] for delta in deltas) == expected.content[0].text
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": expected.usage.output_tokens}
    assert fake_upstream_stats(base_url)["streams_completed"] == 1


def test_it_streams_to_the_sdks_stream_helper(base_url: str) -> None:
    sdk = client(base_url)
    expected = sdk.messages.create(model=MODEL, max_tokens=200, messages=MESSAGES)

    with sdk.messages.stream(model=MODEL, max_tokens=200, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == expected.content[0].text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == expected.usage.input_tokens
    assert final.usage.output_tokens == expected.usage.output_tokens


def test_it_calls_a_tool_with_arguments_of_the_schemas_types(base_url: str) -> None:
    message = client(base_url).messages.create(
        model=MODEL, max_tokens=200, tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "Paris"}])

    text, call = message.content
    assert (text.type, text.text) == ("text", "Calling get_weather.")
    assert call.type == "tool_use"
    assert call.id.startswith("toolu_")
    assert call.name == "get_weather"
    assert call.input == {"city": "Paris", "days": 42, "unit": "celsius"}
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize(("choice", "name"), [({"type": "any"}, "get_weather"),
                                              ({"type": "tool", "name": "get_time"}, "get_time")])
def test_it_calls_only_the_tool_a_forced_choice_names(base_url: str, choice: Any,
                                                      name: str) -> None:
    message = client(base_url).messages.create(
        model=MODEL, max_tokens=200, tools=[WEATHER, TIME], tool_choice=choice,
        messages=[{"role": "user", "content": "Paris"}])

    [call] = message.content
    assert (call.type, call.name) == ("tool_use", name)


def test_it_answers_in_text_when_tool_choice_is_none(base_url: str) -> None:
    message = client(base_url).messages.create(
        model=MODEL, max_tokens=200, tools=[WEATHER], tool_choice={"type": "none"},
        messages=[{"role": "user", "content": "Paris"}])

    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "end_turn"


def test_it_streams_tool_input_as_json_deltas(base_url: str) -> None:
    sdk = client(base_url)
    params: Any = {"model": MODEL, "max_tokens": 200, "tools": [WEATHER],
                   "messages": [{"role": "user", "content": "Paris"}]}
    expected = sdk.messages.create(**params)

    with sdk.messages.stream(**params) as stream:
        events = list(stream)
        final = stream.get_final_message()

    fragments = [e.delta.partial_json for e in events
                 if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == expected.content[1].input
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [(b.type, getattr(b, "name", None)) for b in starts] == [
        ("text", None), ("tool_use", "get_weather")]
    assert starts[1].input == {}
    assert final.content[1].input == expected.content[1].input
    assert final.stop_reason == "tool_use"


def test_it_answers_a_tool_result_in_text(base_url: str) -> None:
    sdk = client(base_url)
    first = sdk.messages.create(model=MODEL, max_tokens=200, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Paris"}])
    call = first.content[1]

    message = sdk.messages.create(model=MODEL, max_tokens=200, tools=[WEATHER], messages=[
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "21 degrees"}]},
    ])

    [block] = message.content
    assert block.text.startswith("Echo: 21 degrees")
    assert message.stop_reason == "end_turn"


def test_it_refuses_a_tool_result_without_its_tool_use(base_url: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client(base_url).messages.create(model=MODEL, max_tokens=200, messages=[
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_x", "content": "21"}]}])

    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_x" in str(raised.value)


def test_it_refuses_a_tool_use_left_unanswered(base_url: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client(base_url).messages.create(model=MODEL, max_tokens=200, tools=[WEATHER], messages=[
            {"role": "user", "content": "Paris"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_y", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": "and?"},
        ])

    assert "`tool_use` ids were found without `tool_result` blocks" in str(raised.value)


def test_it_stops_at_a_stop_sequence(base_url: str) -> None:
    message = client(base_url).messages.create(model=MODEL, max_tokens=200, messages=MESSAGES,
                                               stop_sequences=["zzz", "capital"])

    assert message.content[0].text == "Echo: What is the "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "capital")


def test_it_stops_at_max_tokens(base_url: str) -> None:
    message = client(base_url).messages.create(model=MODEL, max_tokens=3, messages=MESSAGES)

    assert message.content[0].text == "Echo: What i"
    assert message.stop_reason == "max_tokens"


def test_it_reads_images_given_as_base64_or_url(base_url: str) -> None:
    message = client(base_url).messages.create(model=MODEL, max_tokens=200, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PIXEL}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        ]}])

    assert message.content[0].text.startswith("Echo: Look: [image image/png] [image url]")


@pytest.mark.parametrize(("source", "complaint"), [
    ({"type": "base64", "media_type": "image/bmp", "data": PIXEL}, "source.media_type"),
    ({"type": "base64", "media_type": "image/png", "data": "not base64!"}, "source.data"),
    ({"type": "url", "url": "ftp://example.com/a.jpg"}, "source.url"),
])
def test_it_refuses_bad_image_sources(base_url: str, source: Any, complaint: str) -> None:
    status, _, body = raw_post(base_url, {"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": source}]}]})

    assert status == 400
    error = json.loads(body)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert f"messages.0.content.0.{complaint}" in error["error"]["message"]


@pytest.mark.parametrize(("body", "message"), [
    ({"model": MODEL, "messages": MESSAGES}, "max_tokens: Field required"),
    ({"max_tokens": 10, "messages": MESSAGES}, "model: Field required"),
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "n": 2},
     "n: Extra inputs are not permitted"),
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "temperature": 1.5},
     "temperature: Input should be between 0 and 1"),
    ({"model": MODEL, "max_tokens": 10,
      "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES]},
     'Unexpected role "system"'),
    ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": ""}]},
     "text content blocks must be non-empty"),
])
def test_it_refuses_what_anthropic_refuses(base_url: str, body: Any, message: str) -> None:
    status, _, raw = raw_post(base_url, body)

    assert status == 400
    error = json.loads(raw)
    assert set(error) == {"type", "error", "request_id"}
    assert error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]


def test_it_wants_an_api_key_and_a_version(base_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}

    no_key = raw_post(base_url, body, {"anthropic-version": "2023-06-01"})
    no_version = raw_post(base_url, body, {"x-api-key": "sk-ant-test"})
    bad_version = raw_post(base_url, body, {"x-api-key": "sk-ant-test",
                                            "anthropic-version": "2020-01-01"})
    # The current SDK sends its key as a Bearer token.
    bearer = raw_post(base_url, body, {"authorization": "Bearer sk-ant-test",
                                       "anthropic-version": "2026-10-21"})

    assert bearer[0] == 200
    assert fake_upstream_stats(base_url)["by_token"]["sk-ant-test"] == 3
    assert no_key[0] == 401
    assert json.loads(no_key[2])["error"] == {"type": "authentication_error",
                                              "message": "x-api-key header is required"}
    assert no_version[0] == bad_version[0] == 400
    assert json.loads(no_version[2])["error"] == {
        "type": "invalid_request_error", "message": "anthropic-version: header is required"}
    assert "invalid version" in json.loads(bad_version[2])["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client(base_url, api_key="invalid-key").messages.create(
            model=MODEL, max_tokens=10, messages=MESSAGES)
    assert raised.value.body["error"]["message"] == "invalid x-api-key"


def test_it_refuses_unknown_models(base_url: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        client(base_url).messages.create(model="unknown-claude", max_tokens=10,
                                         messages=MESSAGES)

    assert raised.value.body["error"] == {"type": "not_found_error",
                                          "message": "model: unknown-claude"}


@pytest.mark.parametrize(("status", "error_class", "error_type"), [
    (529, anthropic.OverloadedError, "overloaded_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (400, anthropic.BadRequestError, "invalid_request_error"),
])
def test_it_injects_errors_in_anthropics_shape(base_url: str, status: int, error_class: Any,
                                               error_type: str) -> None:
    with pytest.raises(error_class) as raised:
        client(base_url).messages.create(model=MODEL, max_tokens=10, messages=[
            {"role": "user", "content": f"Hi [[fault:status={status}]]"}])

    assert raised.value.status_code == status
    assert raised.value.body["error"]["type"] == error_type


def test_it_injects_rate_limits_with_retry_after(base_url: str) -> None:
    status, headers, body = raw_post(base_url, {"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": "Hi [[fault:status=429]] [[fault:retry_after=7]]"}]})

    assert status == 429
    assert headers["retry-after"] == "7"
    assert json.loads(body)["error"]["type"] == "rate_limit_error"


def test_it_sends_an_error_event_mid_stream(base_url: str) -> None:
    sdk = client(base_url)
    params: Any = {"model": MODEL, "max_tokens": 200, "messages": [
        {"role": "user", "content": "Hi [[fault:stream_error=529]] [[fault:break_after=2]]"}]}

    received = []
    with pytest.raises(anthropic.APIStatusError) as raised, sdk.messages.stream(**params) as s:
        for item in s:
            received.append(item.type)

    assert "overloaded_error" in str(raised.value)
    assert received.count("content_block_delta") == 2
    assert fake_upstream_stats(base_url)["streams_broken"] == 1


def test_it_breaks_streams(base_url: str) -> None:
    # The SDK lets the transport's error through as it is.
    with pytest.raises(httpx2.RemoteProtocolError):
        with client(base_url).messages.stream(model=MODEL, max_tokens=200, messages=[
                {"role": "user", "content": "Hi [[fault:break_after=1]]"}]) as stream:
            list(stream)

    assert fake_upstream_stats(base_url)["streams_broken"] == 1


def test_it_lists_anthropic_models_to_anthropic_clients(base_url: str) -> None:
    sdk = client(base_url)

    models = list(sdk.models.list())
    one = sdk.models.retrieve("claude-haiku-4-5")

    assert [model.id for model in models] == ["claude-opus-4-1", "claude-sonnet-4-5",
                                              "claude-haiku-4-5"]
    assert (one.id, one.type) == ("claude-haiku-4-5", "model")
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("gpt-4o")
    # OpenAI's clients, which send no anthropic-version, still get OpenAI's list.
    assert request("GET", base_url, "/v1/models")[1]["object"] == "list"


def test_it_counts_anthropic_requests_and_shows_the_last_body(base_url: str) -> None:
    client(base_url, "sk-ant-a").messages.create(model=MODEL, max_tokens=10, system="Terse.",
                                                 messages=MESSAGES)

    stats = fake_upstream_stats(base_url)
    assert stats["by_path"] == {"/v1/messages": 1}
    assert stats["by_token"] == {"sk-ant-a": 1}
    assert stats["by_model"] == {MODEL: 1}
    last = request("GET", base_url, "/stats/last")[1]
    assert last["/v1/messages"] == {"model": MODEL, "max_tokens": 10, "system": "Terse.",
                                    "messages": MESSAGES}

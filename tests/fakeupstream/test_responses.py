"""The fake upstream's OpenAI Responses API over real sockets, driven by the official
openai SDK (responses.create with and without stream, responses.stream) and raw HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from fakeupstream.testing import (
    fake_upstream_stats,
    request,
    reset_fake_upstream_stats,
    start_fake_upstream,
    stop_fake_upstream,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}}},
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    process, url = start_fake_upstream()
    yield url
    stop_fake_upstream(process)


@pytest.fixture(autouse=True)
def clean_stats(base_url: str) -> None:
    reset_fake_upstream_stats(base_url)


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)


def raw_post(base_url: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("POST", "/v1/responses", body=json.dumps(body),
                           headers={"authorization": "Bearer sk-test"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_it_answers_responses_in_openai_shape(base_url: str) -> None:
    response = client(base_url).responses.create(model="gpt-4.1", input="What is 2 + 2?")

    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == "gpt-4.1"
    [item] = response.output
    assert (item.type, item.role, item.status) == ("message", "assistant", "completed")
    assert item.content[0].type == "output_text"
    assert response.output_text.startswith("Echo: What is 2 + 2? (gpt-4.1 ")
    assert response.output_text == item.content[0].text
    assert response.usage is not None
    assert response.usage.input_tokens == 4
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)


def test_it_answers_the_same_request_the_same_way(base_url: str) -> None:
    sdk = client(base_url)

    def text(**fields: Any) -> str:
        return sdk.responses.create(**{"model": "gpt-4.1", "input": "Hi", **fields}).output_text

    assert text() == text()
    assert text() != text(instructions="Be brief.")
    assert text() != text(input="Hello")
    # The echo is the last user turn's text, whichever way the input is written.
    assert text(input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                       {"role": "assistant", "content": "Hello"},
                       {"role": "user", "content": "Again"}]).startswith("Echo: Again (")


def test_it_streams_typed_events(base_url: str) -> None:
    sdk = client(base_url)
    expected = sdk.responses.create(model="gpt-4.1", input="Stream me")

    events = list(sdk.responses.create(model="gpt-4.1", input="Stream me", stream=True))

    types = [event.type for event in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert 4 <= len(deltas) <= 6
    assert "".join(deltas) == expected.output_text
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress"
    completed = events[-1].response
    assert completed.output_text == expected.output_text
    assert completed.usage == expected.usage
    assert len({event.response.id for event in (events[0], events[-1])}) == 1
    stats = fake_upstream_stats(base_url)
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 1)


def test_it_streams_to_the_sdks_stream_helper(base_url: str) -> None:
    sdk = client(base_url)
    expected = sdk.responses.create(model="gpt-4.1", input="Helper")

    with sdk.responses.stream(model="gpt-4.1", input="Helper") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()

    assert text == final.output_text == expected.output_text


def test_it_names_each_event_on_its_event_line_and_sends_no_done(base_url: str) -> None:
    status, headers, raw = raw_post(base_url, {"model": "gpt-4.1", "input": "Hi",
                                               "stream": True})

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        name, data = block.split("\n")
        assert name == "event: " + json.loads(data.removeprefix("data: "))["type"]
    assert "[DONE]" not in raw.decode()


def test_it_calls_a_function_tool(base_url: str) -> None:
    response = client(base_url).responses.create(model="gpt-4.1", input="Paris",
                                                 tools=[WEATHER])

    [call] = response.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Paris", "days": 42}


def test_it_streams_function_call_arguments(base_url: str) -> None:
    sdk = client(base_url)
    expected = sdk.responses.create(model="gpt-4.1", input="Paris", tools=[WEATHER])

    with sdk.responses.stream(model="gpt-4.1", input="Paris", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()

    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(fragments) > 1
    assert "".join(fragments) == expected.output[0].arguments
    assert final.output[0].arguments == expected.output[0].arguments


def test_it_answers_a_function_output_in_text(base_url: str) -> None:
    sdk = client(base_url)
    call = sdk.responses.create(model="gpt-4.1", input="Paris", tools=[WEATHER]).output[0]

    response = sdk.responses.create(model="gpt-4.1", tools=[WEATHER], input=[
        {"role": "user", "content": "Paris"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees"},
    ])

    assert response.output_text.startswith("Echo: Paris")
    assert response.output[0].type == "message"


def test_it_continues_only_its_own_responses(base_url: str) -> None:
    sdk = client(base_url)
    first = sdk.responses.create(model="gpt-4.1", input="Remember 7")

    second = sdk.responses.create(model="gpt-4.1", input="What number?",
                                  previous_response_id=first.id)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="gpt-4.1", input="What number?",
                             previous_response_id="resp_elsewhere")

    assert second.previous_response_id == first.id
    assert raised.value.code == "previous_response_not_found"
    assert raised.value.param == "previous_response_id"


@pytest.mark.parametrize(("fields", "param"), [
    ({"stream": True, "stream_options": {"include_usage": True}}, "stream_options.include_usage"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "messages"),
    ({"max_tokens": 10}, "max_tokens"),
])
def test_it_refuses_chat_completions_parameters(base_url: str, fields: Any, param: str) -> None:
    status, _, body = raw_post(base_url, {"model": "gpt-4.1", "input": "Hi", **fields})

    assert status == 400
    assert json.loads(body)["error"] == {"message": f"Unknown parameter: '{param}'.",
                                         "type": "invalid_request_error", "param": param,
                                         "code": "unknown_parameter"}


def test_it_refuses_a_request_without_input(base_url: str) -> None:
    status, _, body = raw_post(base_url, {"model": "gpt-4.1"})

    assert status == 400
    assert json.loads(body)["error"]["param"] == "input"


def test_it_stops_at_max_output_tokens(base_url: str) -> None:
    response = client(base_url).responses.create(model="gpt-4.1", input="A long question",
                                                 max_output_tokens=2)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Echo: A "


def test_it_injects_error_statuses(base_url: str) -> None:
    sdk = client(base_url)

    with pytest.raises(openai.InternalServerError):
        sdk.responses.create(model="gpt-4.1", input="Hi [[fault:status=500]]")
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.responses.create(model="gpt-4.1", input="Hi [[fault:status=429]]")
    assert raised.value.response.headers["retry-after"] == "1"


def test_it_sends_an_error_event_mid_stream(base_url: str) -> None:
    events = list(client(base_url).responses.create(
        model="gpt-4.1", input="Hi [[fault:stream_error=500]] [[fault:break_after=2]]",
        stream=True))

    assert [e.type for e in events[-3:]] == ["response.output_text.delta",
                                              "response.output_text.delta", "error"]
    assert events[-1].message == "Injected fault: stream error 500."


def test_it_counts_responses_requests(base_url: str) -> None:
    client(base_url).responses.create(model="gpt-4.1", input="Hi")

    stats = fake_upstream_stats(base_url)
    assert stats["by_path"] == {"/v1/responses": 1}
    assert stats["by_model"] == {"gpt-4.1": 1}
    assert request("GET", base_url, "/stats/last")[1]["/v1/responses"] == {
        "model": "gpt-4.1", "input": "Hi"}

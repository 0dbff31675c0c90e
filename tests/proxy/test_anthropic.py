"""An organization whose provider is Anthropic, through the real gateway: the official
openai SDK asks for chat completions, the fake upstream answers as Anthropic's Messages
API (and checks what it is sent as Anthropic does), the client sees OpenAI's shapes."""

import base64
import json
import secrets
from dataclasses import dataclass

import openai
import pytest

from fakeupstream.testing import request
from organizations.services import api_key_create, organization_create, provider_add
from tests.proxy.helpers import client_for

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "claude-sonnet-4-5"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5f0000000049454e44ae426082"
)).decode()


@dataclass
class Claude:
    client: openai.OpenAI
    provider_key: str
    upstream_url: str

    def calls(self) -> int:
        stats = request("GET", self.upstream_url, "/stats")[1]
        return stats["by_token"].get(self.provider_key, 0)

    def last_sent(self) -> dict:
        """What the gateway last sent to the fake's /v1/messages."""
        return request("GET", self.upstream_url, "/stats/last")[1]["/v1/messages"]


def make_claude(gateway, fake_upstream, provider_key: str) -> Claude:
    org = organization_create(name=f"Claude {secrets.token_hex(3)}")
    raw_key = api_key_create(organization=org).raw_key
    provider_add(organization=org, name="claude", kind="anthropic", base_url=fake_upstream.url,
                 api_key=provider_key, is_default=True)
    return Claude(client_for(gateway.url, raw_key), provider_key, fake_upstream.url)


@pytest.fixture
def claude(gateway, live_world, fake_upstream) -> Claude:
    return make_claude(gateway, fake_upstream, f"sk-ant-{secrets.token_hex(6)}")


def chat(claude: Claude, content, **params):
    raw = claude.client.chat.completions.with_raw_response.create(
        model=params.pop("model", MODEL), messages=params.pop("messages", None)
        or [{"role": "user", "content": content}], **params)
    return raw.parse(), raw.headers


def test_it_answers_text_in_openai_shape(claude):
    completion, headers = chat(claude, "What is the capital of France?")

    assert completion.object == "chat.completion"
    assert completion.id.startswith("msg_")
    assert completion.model == MODEL
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith("Echo: What is the capital of France? (" + MODEL)
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 8
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)
    assert headers["x-cognitude-cache"] == "MISS"
    assert claude.last_sent() == {
        "model": MODEL, "max_tokens": 4096,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is the capital of France?"}]}]}


def test_it_serves_the_same_request_from_the_cache(claude):
    first, _ = chat(claude, "Cache me")
    second, headers = chat(claude, "Cache me")

    assert headers["x-cognitude-cache"] == "HIT"
    assert second.choices[0].message.content == first.choices[0].message.content
    assert claude.calls() == 1


def test_it_sends_system_messages_as_system_and_keeps_the_turns(claude):
    completion, _ = chat(claude, None, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "How are you?"},
    ], max_tokens=300, temperature=0.5, top_p=0.9, user="end-user-1")

    assert completion.choices[0].message.content.startswith("Echo: How are you?")
    sent = claude.last_sent()
    assert sent["system"] == "Be brief.\n\nAnswer in French."
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "user"]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (300, 0.5, 0.9)
    assert sent["metadata"] == {"user_id": "end-user-1"}


def test_it_sends_images_by_url_and_as_base64(claude):
    completion, _ = chat(claude, [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ])

    # The fake echoes each image it could read.
    assert completion.choices[0].message.content.startswith(
        "Echo: What is this? [image url] [image image/png]")


def test_it_calls_tools_and_reads_their_results(claude):
    completion, _ = chat(claude, "Paris", tools=[WEATHER])

    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Calling get_weather."
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 42}
    assert claude.last_sent()["tools"] == [{
        "name": "get_weather", "description": "The weather in a city",
        "input_schema": WEATHER["function"]["parameters"]}]

    # The next turn: the fake refuses a tool result that answers no tool use.
    answer, _ = chat(claude, None, tools=[WEATHER], messages=[
        {"role": "user", "content": "Paris"},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"},
    ])

    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content.startswith("Echo: 21 degrees")


@pytest.mark.parametrize(("tool_choice", "sent"), [
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
])
def test_it_forces_a_tool_call_as_asked(claude, tool_choice, sent):
    completion, _ = chat(claude, "Paris", tools=[WEATHER], tool_choice=tool_choice)

    message = completion.choices[0].message
    assert message.content is None
    assert [call.function.name for call in message.tool_calls] == ["get_weather"]
    assert claude.last_sent()["tool_choice"] == sent


def test_it_streams_text_with_usage(claude):
    expected, _ = chat(claude, "Stream this please")

    chunks = list(claude.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Stream this please"}],
        stream=True, stream_options={"include_usage": True},
        extra_headers={"Cache-Control": "no-cache"}))

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == expected.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert claude.last_sent()["stream"] is True


def test_it_streams_tool_calls_the_sdk_assembles(claude):
    expected, _ = chat(claude, "Rome", tools=[WEATHER])

    chunks = list(claude.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER],
        stream=True, extra_headers={"Cache-Control": "no-cache"}))

    calls = [c.choices[0].delta.tool_calls[0] for c in chunks
             if c.choices and c.choices[0].delta.tool_calls]
    assert (calls[0].index, calls[0].type, calls[0].function.name) == (
        0, "function", "get_weather")
    assert calls[0].id.startswith("toolu_")
    assert len(calls) > 2  # the opening delta, then argument fragments
    arguments = "".join(call.function.arguments or "" for call in calls)
    assert json.loads(arguments) == json.loads(
        expected.choices[0].message.tool_calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(chunk.usage is None for chunk in chunks)

    # The SDK's own stream helper puts the same call together.
    with claude.client.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER],
            extra_headers={"Cache-Control": "no-cache"}) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(arguments)


def test_it_answers_a_json_schema_response_format_as_content(claude):
    schema = {"type": "object", "properties": {"capital": {"type": "string"},
                                               "population": {"type": "integer"}}}

    completion, _ = chat(claude, "France", response_format={
        "type": "json_schema", "json_schema": {"name": "country", "schema": schema}})

    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert json.loads(choice.message.content) == {"capital": "France", "population": 42}
    assert claude.last_sent()["tool_choice"] == {"type": "tool", "name": "json_response"}


def test_it_maps_stop_and_max_tokens(claude):
    stopped, _ = chat(claude, "Say the capital", stop=["capital"])
    cut, _ = chat(claude, "Say the capital", max_tokens=3)

    assert stopped.choices[0].message.content == "Echo: Say the "
    assert stopped.choices[0].finish_reason == "stop"
    assert claude.last_sent()["max_tokens"] == 3
    assert cut.choices[0].finish_reason == "length"


def test_it_refuses_what_anthropic_cannot_do_before_asking_it(claude):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(claude, "Two answers please", n=2)

    assert raised.value.body["code"] == "unsupported_by_provider"
    assert raised.value.body["param"] == "n"
    assert claude.calls() == 0


def test_it_hands_on_anthropics_refusals_in_openai_shape(claude):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(claude, "Too hot", temperature=1.5)

    assert raised.value.status_code == 400
    assert raised.value.body == {"message": "temperature: Input should be between 0 and 1",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "invalid_request_error"}


def test_it_hands_on_a_bad_provider_key_as_401(gateway, live_world, fake_upstream):
    claude = make_claude(gateway, fake_upstream, f"invalid-{secrets.token_hex(6)}")

    with pytest.raises(openai.AuthenticationError) as raised:
        chat(claude, "Hi")

    assert raised.value.body["message"] == "invalid x-api-key"
    assert raised.value.body["code"] == "authentication_error"


def test_it_hands_on_rate_limits_with_retry_after(claude):
    with pytest.raises(openai.RateLimitError) as raised:
        chat(claude, "Hi [[fault:status=429]] [[fault:retry_after=3]]")

    assert raised.value.response.headers["retry-after"] == "3"
    assert raised.value.body["code"] == "rate_limit_error"


def test_it_hands_on_overloaded_as_a_529(claude):
    with pytest.raises(openai.InternalServerError) as raised:
        chat(claude, "Hi [[fault:status=529]]")

    assert raised.value.status_code == 529
    assert raised.value.body["code"] == "overloaded_error"


def test_it_raises_an_overloaded_error_that_arrives_mid_stream(claude):
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in claude.client.chat.completions.create(
                model=MODEL, stream=True, messages=[{"role": "user", "content":
                                                     "Hi [[fault:stream_error=529]]"}]):
            received.append(chunk)

    assert raised.value.body["code"] == "overloaded_error"
    assert received[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in received).startswith("Echo: Hi")

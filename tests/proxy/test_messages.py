"""POST /v1/messages, the Anthropic Messages API, with the official anthropic SDK as the
client: our keys by x-api-key or Bearer, routed to an Anthropic provider (the fake
speaks its wire format), passed through natively, streamed event by event, cached and
replayed either way."""

import anthropic
import pytest

from tests.proxy.helpers import wait_for_entries
from tests.proxy.routes import add_provider, closed_port_base, provider_key, set_route

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "claude"  # the route's name; the provider is asked for claude-haiku-4-5


@pytest.fixture
def claude(gateway, live_world, fake_upstream):
    org = live_world.a.org
    provider = add_provider(org, "anthropic", fake_upstream.url, kind="anthropic")
    set_route(org, MODEL, (provider, "claude-haiku-4-5"))
    return provider


def sdk(gateway, raw_key: str, **auth) -> anthropic.Anthropic:
    auth = auth or {"api_key": raw_key}
    return anthropic.Anthropic(base_url=gateway.url, max_retries=0, timeout=20, **auth)


def ask(client: anthropic.Anthropic, text: str, **params):
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": text}], **params)
    return raw.parse(), raw.headers


def test_it_answers_a_message_and_serves_it_again_from_the_cache(gateway, live_world,
                                                                 fake_upstream, claude):
    client = sdk(gateway, live_world.a.raw_key)

    first, first_headers = ask(client, "What is the capital of France?",
                               system="Answer briefly.")
    wait_for_entries(live_world.a.org, 1)
    second, second_headers = ask(client, "What is the capital of France?",
                                 system="Answer briefly.")

    assert first.type == "message" and first.role == "assistant"
    assert first.model == "claude-haiku-4-5"
    assert first.content[0].text.startswith("Echo: What is the capital of France?")
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert (first_headers["x-cognitude-cache"], second_headers["x-cognitude-cache"]) == (
        "MISS", "HIT")
    assert first_headers["x-cognitude-provider"] == "anthropic"
    assert first_headers["x-cognitude-model"] == "claude-haiku-4-5"
    assert second.model_dump() == first.model_dump()
    assert fake_upstream.calls_with(provider_key(claude)) == 1


def test_it_takes_our_key_as_a_bearer_token_too(gateway, live_world, claude):
    client = sdk(gateway, live_world.a.raw_key, auth_token=live_world.a.raw_key)

    message, headers = ask(client, "bearer please")

    assert message.content[0].text.startswith("Echo: bearer please")
    assert headers["x-cognitude-cache"] == "MISS"


def test_it_refuses_a_bad_key(gateway, live_world, claude):
    with pytest.raises(anthropic.AuthenticationError):
        ask(sdk(gateway, "ck_not_a_key"), "let me in")


def test_it_streams_a_message_and_replays_it_from_the_cache(gateway, live_world,
                                                            fake_upstream, claude):
    client = sdk(gateway, live_world.a.raw_key)
    request = {"model": MODEL, "max_tokens": 200,
               "messages": [{"role": "user", "content": "Stream the capital of Italy"}]}

    with client.messages.stream(**request) as stream:
        first_text = "".join(stream.text_stream)
        first = stream.get_final_message()
    wait_for_entries(live_world.a.org, 1)
    with client.messages.stream(**request) as stream:
        second_text = "".join(stream.text_stream)
        second = stream.get_final_message()
    as_json, headers = ask(client, "Stream the capital of Italy")

    assert first_text.startswith("Echo: Stream the capital of Italy")
    assert second_text == first_text
    assert first.usage.output_tokens > 0 and first.stop_reason == "end_turn"
    assert second.model_dump() == first.model_dump()
    # The stream's assembled message answers the same request asked as JSON.
    assert headers["x-cognitude-cache"] == "HIT"
    assert as_json.content[0].text == first_text
    assert fake_upstream.calls_with(provider_key(claude)) == 1


def test_it_replays_a_cached_message_as_a_stream(gateway, live_world, fake_upstream, claude):
    client = sdk(gateway, live_world.a.raw_key)
    tools = [{"name": "get_weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}]
    request = {"model": MODEL, "max_tokens": 200, "tools": tools,
               "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    answer = client.messages.create(**request)
    wait_for_entries(live_world.a.org, 1)

    with client.messages.stream(**request) as stream:
        replayed = stream.get_final_message()

    assert answer.stop_reason == "tool_use"
    assert replayed.model_dump() == answer.model_dump()
    assert fake_upstream.calls_with(provider_key(claude)) == 1


def test_it_falls_back_to_the_next_anthropic_target(gateway, live_world, fake_upstream):
    org = live_world.a.org
    dead = add_provider(org, "anthropic-dead", closed_port_base(), kind="anthropic")
    live = add_provider(org, "anthropic-live", fake_upstream.url, kind="anthropic")
    set_route(org, MODEL, (dead, "claude-haiku-4-5"), (live, "claude-sonnet-4-5"))

    message, headers = ask(sdk(gateway, live_world.a.raw_key), "fall back please")

    assert message.model == "claude-sonnet-4-5"
    assert headers["x-cognitude-fallback"] == "anthropic-dead:claude-haiku-4-5=connect"
    assert headers["x-cognitude-provider"] == "anthropic-live"


def test_it_refuses_a_message_without_max_tokens(gateway, live_world, fake_upstream, claude):
    client = sdk(gateway, live_world.a.raw_key)

    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=MODEL, max_tokens=0,
                               messages=[{"role": "user", "content": "hi"}])

    assert "max_tokens" in str(raised.value)
    assert fake_upstream.calls_with(provider_key(claude)) == 0

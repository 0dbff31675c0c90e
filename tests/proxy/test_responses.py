"""POST /v1/responses, OpenAI's Responses API, with the official openai SDK: passed to
OpenAI-kind providers, streamed as its typed events, cached like chat when the request
stands alone; a request continuing a stored response is never cached and goes to the
provider that made that response (each fake upstream knows only its own)."""

import httpx
import pytest

from fakeupstream.testing import start_fake_upstream, stop_fake_upstream
from tests.conftest import FakeUpstream
from tests.proxy.helpers import client_for, wait_for_entries
from tests.proxy.routes import add_provider, provider_key, set_route

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_upstream():
    process, url = start_fake_upstream()
    yield FakeUpstream(url)
    stop_fake_upstream(process)


def create(client, **params):
    raw = client.responses.with_raw_response.create(model=params.pop("model", "gpt-4o-mini"),
                                                     **params)
    return raw.parse(), raw.headers


def test_it_answers_a_response_and_serves_it_again_from_the_cache(gateway, live_world,
                                                                  fake_upstream):
    client = client_for(gateway.url, live_world.a.raw_key)

    first, first_headers = create(client, input="What is the capital of France?",
                                  instructions="Be brief.")
    wait_for_entries(live_world.a.org, 1)
    second, second_headers = create(client, input="What is the capital of France?",
                                    instructions="Be brief.")

    assert first.output_text.startswith("Echo: What is the capital of France?")
    assert first.usage.input_tokens > 0
    assert (first_headers["x-cognitude-cache"], second_headers["x-cognitude-cache"]) == (
        "MISS", "HIT")
    assert first_headers["x-cognitude-provider"] == "default"
    assert second.id == first.id and second.output_text == first.output_text
    assert fake_upstream.stats()["by_path"]["/v1/responses"] >= 1
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_streams_typed_events_and_replays_them_from_the_cache(gateway, live_world,
                                                                 fake_upstream):
    client = client_for(gateway.url, live_world.a.raw_key)
    request = {"model": "gpt-4o-mini", "input": "Stream the capital of Spain"}

    first_events = list(client.responses.create(**request, stream=True))
    wait_for_entries(live_world.a.org, 1)
    second_events = list(client.responses.create(**request, stream=True))
    as_json, headers = create(client, **request)

    def text(events) -> str:
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")

    assert first_events[0].type == "response.created"
    assert first_events[-1].type == "response.completed"
    assert text(first_events).startswith("Echo: Stream the capital of Spain")
    assert [e.type for e in second_events] == [e.type for e in first_events]
    assert text(second_events) == text(first_events)
    assert headers["x-cognitude-cache"] == "HIT"
    assert as_json.output_text == text(first_events)
    assert as_json.id == first_events[-1].response.id
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_replays_a_cached_response_as_a_stream(gateway, live_world, fake_upstream):
    client = client_for(gateway.url, live_world.a.raw_key)
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]
    answer, _ = create(client, input="Weather in Rome?", tools=tools)
    wait_for_entries(live_world.a.org, 1)

    events = list(client.responses.create(model="gpt-4o-mini", input="Weather in Rome?",
                                          tools=tools, stream=True))

    [call] = answer.output
    assert call.type == "function_call"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output[0].arguments == call.arguments
    arguments = "".join(e.delta for e in events
                        if e.type == "response.function_call_arguments.delta")
    assert arguments == call.arguments
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_it_sends_a_continuation_to_the_provider_that_made_the_response(
        gateway, live_world, fake_upstream, other_upstream, stream):
    org = live_world.a.org
    one = add_provider(org, "one", fake_upstream.api_base)
    two = add_provider(org, "two", other_upstream.api_base)
    set_route(org, "split", (one, "gpt-4o-mini"), (two, "gpt-4o-mini"), strategy="weighted")
    client = client_for(gateway.url, live_world.a.raw_key)
    if stream:
        with client.responses.with_streaming_response.create(
                model="split", input="Remember the number 7", stream=True) as raw:
            maker = raw.headers["x-cognitude-provider"]
            first = [event for event in raw.parse()][-1].response
    else:
        first, first_headers = create(client, model="split", input="Remember the number 7")
        maker = first_headers["x-cognitude-provider"]

    # Asked at once: the gateway knew who made it before the client could ask.
    follow_ups = [create(client, model="split", input="Which number?",
                         previous_response_id=first.id) for _ in range(8)]

    # Sent anywhere else, a follow-up would be refused (that fake never made it); and
    # none is cached, since its answer depends on what the provider holds.
    assert [h["x-cognitude-provider"] for _, h in follow_ups] == [maker] * 8
    assert [h["x-cognitude-cache"] for _, h in follow_ups] == ["BYPASS"] * 8
    assert all(r.previous_response_id == first.id for r, _ in follow_ups)
    made_by = {"one": (fake_upstream, one), "two": (other_upstream, two)}
    upstream, provider = made_by[maker]
    assert upstream.calls_with(provider_key(provider)) == 9


def test_it_refuses_a_response_request_without_input(gateway, live_world, fake_upstream):
    response = httpx.post(f"{gateway.url}/v1/responses", timeout=10,
                          headers={"Authorization": f"Bearer {live_world.a.raw_key}"},
                          json={"model": "gpt-4o-mini"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
    assert fake_upstream.calls_with(live_world.a.provider_key) == 0

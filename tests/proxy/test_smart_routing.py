"""Smart routing live: the official SDK against a real gateway and the fake upstream.
`auto` is routed by task complexity and explained in X-Cognitude-Route and the record;
shadow mode changes nothing but those; guards hold; the cache serves a routed answer to
the next identical `auto` and a policy change starts a new generation; feedback is
stored against the request, in the caller's organization only."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from analytics.models import Feedback
from analytics.prices import PriceBook
from routing.policies import routing_policy_set
from tests.proxy.helpers import ask, client_for
from tests.proxy.routes import set_route
from tests.proxy.test_routing_records import records_of

pytestmark = pytest.mark.django_db(transaction=True)
TIERS = {"simple_model": "gpt-4o-mini", "standard_model": "gpt-4.1-mini",
         "complex_model": "gpt-4o"}
SIMPLE = "hi"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def set_policy(org, **fields):
    policy, _ = routing_policy_set(organization=org, **{"mode": "on", **TIERS, **fields})
    return policy


def route_header(headers) -> dict[str, str]:
    return dict(part.split("=", 1) for part in headers["x-cognitude-route"].split("; "))


def test_it_routes_auto_and_explains_it_in_the_header_and_the_record(gateway, live_world):
    org = live_world.a.org
    set_policy(org)
    client = client_for(gateway.url, live_world.a.raw_key)

    answer, headers = ask(client, SIMPLE, model="auto")
    again, hit_headers = ask(client, SIMPLE, model="auto")
    miss, hit = records_of(org, 2)

    said = route_header(headers)
    assert (said["tier"], said["model"], said["asked"]) == ("simple", "gpt-4o-mini", "auto")
    assert 0 <= float(said["score"]) < 1 and "mode" not in said
    assert answer.model == "gpt-4o-mini" and headers["x-cognitude-model"] == "gpt-4o-mini"
    # The routed answer serves the next identical `auto`, explained the same way.
    assert hit_headers["x-cognitude-cache"] == "HIT"
    assert hit_headers["x-cognitude-route"] == headers["x-cognitude-route"]
    assert again.choices[0].message.content == answer.choices[0].message.content
    assert (miss.model_requested, miss.model_used, miss.route_mode, miss.route_tier) == (
        "auto", "gpt-4o-mini", "on", "simple")
    assert miss.route_score == pytest.approx(float(said["score"]), abs=0.005)
    # Exact sums: the asked cost is the complex tier's model on the same tokens.
    prices = PriceBook.load()
    asked = prices.cost("gpt-4o", miss.created_at, miss.prompt_tokens, miss.completion_tokens)
    assert miss.asked_cost == asked and miss.routing_saved_cost == asked - miss.cost > 0
    assert hit.routing_saved_cost == asked - hit.saved_cost


def test_it_only_records_and_says_so_in_shadow_mode(gateway, live_world, fake_upstream):
    org = live_world.a.org
    set_policy(org, mode="shadow", apply_to=["gpt-4-turbo"])
    client = client_for(gateway.url, live_world.a.raw_key)

    listed, listed_headers = ask(client, SIMPLE, model="gpt-4-turbo")
    auto, auto_headers = ask(client, "hello there", model="auto")
    plain, plain_headers = ask(client, SIMPLE, model="gpt-4o-mini")
    first, second, third = records_of(org, 3)

    assert listed.model == "gpt-4-turbo"  # sent as asked
    assert route_header(listed_headers) | {"score": ""} == {
        "tier": "simple", "score": "", "model": "gpt-4o-mini", "asked": "gpt-4-turbo",
        "mode": "shadow"}
    assert auto.model == "gpt-4o"  # `auto` in shadow: the complex tier, as without routing
    assert route_header(auto_headers)["mode"] == "shadow"
    assert "x-cognitude-route" not in plain_headers and plain.model == "gpt-4o-mini"
    assert (first.model_used, first.route_mode, first.route_tier) == (
        "gpt-4-turbo", "shadow", "simple")
    assert first.routing_saved_cost > 0  # what routing would have saved
    assert (second.model_used, second.route_mode) == ("gpt-4o", "shadow")
    assert (third.route_mode, third.route_score) == ("", None)


def test_it_keeps_guarded_requests_up(gateway, live_world):
    set_policy(live_world.a.org)
    client = client_for(gateway.url, live_world.a.raw_key)

    tools, headers = ask(client, SIMPLE, model="auto", tools=[TOOL], tool_choice="required")

    assert tools.model == "gpt-4o"
    assert route_header(headers) | {"score": ""} == {
        "tier": "complex", "score": "", "model": "gpt-4o", "asked": "auto", "guard": "tools"}


def test_it_keeps_images_and_strict_schemas_off_models_that_cannot_take_them(gateway,
                                                                            live_world):
    # gpt-3.5-turbo: text only, no structured outputs (the model table says so).
    set_policy(live_world.a.org, simple_model="gpt-3.5-turbo")
    client = client_for(gateway.url, live_world.a.raw_key)
    image = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    schema = {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True, "schema": {
            "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
            "additionalProperties": False}}}

    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": image}])
    strict, strict_headers = ask(client, SIMPLE, model="auto", response_format=schema)
    plain, plain_headers = ask(client, SIMPLE, model="auto")

    assert raw.parse().model == "gpt-4.1-mini"
    assert route_header(raw.headers)["guard"] == "images"
    assert strict.model == "gpt-4.1-mini" and route_header(strict_headers)["guard"] == "schema"
    assert plain.model == "gpt-3.5-turbo" and "guard" not in route_header(plain_headers)


def test_it_refuses_auto_with_routing_off(gateway, live_world):
    client = client_for(gateway.url, live_world.a.raw_key)

    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, SIMPLE, model="auto")
    set_policy(live_world.b.org, mode="off")
    with pytest.raises(openai.BadRequestError):
        ask(client_for(gateway.url, live_world.b.raw_key), SIMPLE, model="auto")

    assert refused.value.code == "routing_off"
    assert "smart routing is off" in refused.value.message


def test_it_starts_a_new_cache_generation_when_the_policy_changes(gateway, live_world):
    org = live_world.a.org
    set_policy(org)
    client = client_for(gateway.url, live_world.a.raw_key)
    first, _ = ask(client, SIMPLE, model="auto")

    set_policy(org, simple_model="gpt-4.1-nano")
    time.sleep(1.2)  # the gateway keeps a key's snapshot COGNITUDE_API_KEY_CACHE_SECONDS (1)
    after, headers = ask(client, SIMPLE, model="auto")

    assert first.model == "gpt-4o-mini"
    assert headers["x-cognitude-cache"] == "MISS"
    assert after.model == "gpt-4.1-nano" and route_header(headers)["model"] == "gpt-4.1-nano"


def test_it_starts_a_new_cache_generation_when_a_tiers_route_changes(gateway, live_world):
    # The policy names a route, not a model: pointing the route elsewhere changes what
    # answers `auto` as surely as a policy change does.
    org = live_world.a.org
    provider = org.providers.get()
    set_route(org, "cheap", (provider, "gpt-4o-mini"))
    set_policy(org, simple_model="@cheap")
    client = client_for(gateway.url, live_world.a.raw_key)
    first, _ = ask(client, SIMPLE, model="auto")

    set_route(org, "cheap", (provider, "gpt-4.1-nano"))
    time.sleep(1.2)  # the gateway keeps a key's snapshot COGNITUDE_API_KEY_CACHE_SECONDS (1)
    after, headers = ask(client, SIMPLE, model="auto")

    assert first.model == "gpt-4o-mini"
    assert headers["x-cognitude-cache"] == "MISS"
    assert after.model == "gpt-4.1-nano"


def feedback(gateway, raw_key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/feedback", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {raw_key}"})


def test_it_stores_feedback_against_the_callers_own_requests(gateway, live_world):
    a, b = live_world.a, live_world.b
    set_policy(a.org)
    _, headers = ask(client_for(gateway.url, a.raw_key), SIMPLE, model="auto")
    request_id = headers["x-request-id"]

    down = feedback(gateway, a.raw_key, {"request_id": request_id, "rating": "down"})
    changed = feedback(gateway, a.raw_key, {"request_id": request_id, "score": 0.8,
                                            "note": "better on second look"})
    with ThreadPoolExecutor(2) as pool:  # each waits out COGNITUDE_FEEDBACK_WAIT_SECONDS
        theirs, unknown = pool.map(lambda rid: feedback(gateway, b.raw_key, {
            "request_id": rid, "rating": "up"}), [request_id, "0" * 32])

    assert down.status_code == 201, down.text
    assert changed.status_code == 200
    assert changed.json() == {"object": "feedback", "request_id": request_id, "score": 0.8,
                              "rating": None, "note": "better on second look"}
    # Another organization's request looks exactly like one that does not exist.
    assert theirs.status_code == unknown.status_code == 404
    assert (theirs.json()["error"] | {"message": ""}) == (unknown.json()["error"]
                                                          | {"message": ""})
    assert list(Feedback.objects.values_list("organization", "score")) == [(a.org.pk, 0.8)]
    api = f"{gateway.url}/api/feedback"
    mine = httpx.get(api, headers={"Authorization": f"Bearer {a.raw_key}"}, timeout=10)
    other = httpx.get(api, params={"request_id": request_id}, timeout=10,
                      headers={"Authorization": f"Bearer {b.raw_key}"})
    assert [row["request_id"] for row in mine.json()] == [request_id]
    assert other.json() == []
    tiers = httpx.get(f"{gateway.url}/api/analytics/routing", timeout=10,
                      headers={"Authorization": f"Bearer {a.raw_key}"}).json()["data"]
    assert [(t["mode"], t["tier"], t["requests"], t["feedback"], t["mean_score"])
            for t in tiers] == [("on", "simple", 1, 1, 0.8)]
    assert httpx.get(f"{gateway.url}/api/analytics/routing", timeout=10, headers={
        "Authorization": f"Bearer {b.raw_key}"}).json()["data"] == []


BAD_FEEDBACK = [
    ({"rating": "up"}, "request_id"),
    ({"request_id": "x", "rating": "sideways"}, "rating"),
    ({"request_id": "x", "score": 1.5}, "score"),
    ({"request_id": "x", "score": True}, "score"),
    ({"request_id": "x"}, "score"),
    ({"request_id": "x", "score": 1, "rating": "up"}, "score"),
    ({"request_id": "x", "score": 1, "note": "n" * 2001}, "note"),
]


def test_it_refuses_bad_feedback_clearly(gateway, live_world):
    for body, param in BAD_FEEDBACK:
        refused = feedback(gateway, live_world.a.raw_key, body)
        assert refused.status_code == 400, body
        assert refused.json()["error"]["param"] == param, body
    not_json = httpx.post(f"{gateway.url}/v1/feedback", content=b"{", timeout=10,
                          headers={"Authorization": f"Bearer {live_world.a.raw_key}"})
    assert not_json.json()["error"]["code"] == "invalid_json"
    assert feedback(gateway, "cog_nope", {"request_id": "x", "rating": "up"}).status_code == 401

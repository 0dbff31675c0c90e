"""Requests the gateway refuses before it calls anyone or caches anything, and the
small things around them: how the key may be sent, methods and paths, /v1/models,
embeddings and the legacy completions endpoint.

Everything goes over sockets to the gateway process, through the official OpenAI SDK
where the SDK can send the request, and through httpx where it cannot (bodies that are
not JSON, bodies that are too big, the X-API-Key header, other auth schemes).
"""

import time

import httpx
import openai
import pytest

from caching.models import CacheEntry
from organizations.keys import generate_key
from organizations.models import ApiKey
from organizations.services import api_key_revoke
from tests.proxy.helpers import client_for

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What is a cache?"}]
# A good request, as raw bytes, for the cases the SDK cannot send.
CHAT_BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
# What a settled gateway has had time to do: its event buffer flushes every 0.05 s
# in tests, so a cold-tier row would be there long before this.
SETTLE_SECONDS = 0.5


def sdk(gateway, raw_key: str) -> openai.OpenAI:
    return client_for(gateway.url, raw_key, timeout=10)


def post(gateway, path: str, content: bytes, headers: dict) -> httpx.Response:
    return httpx.post(gateway.url + path, content=content, timeout=10,
                      headers={"Content-Type": "application/json", **headers})


def bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


def assert_openai_error(response: httpx.Response, status: int, *,
                        param: str | None = None) -> dict:
    """The error in OpenAI's shape, as the SDK and every OpenAI client parse it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] == param
    return error


def assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, tenant) -> None:
    time.sleep(SETTLE_SECONDS)
    assert fake_upstream.calls_with(tenant.provider_key) == 0
    assert not CacheEntry.objects.filter(organization=tenant.org).exists()
    stats = httpx.get(gateway.url + "/cache/stats", headers=bearer(tenant.raw_key)).json()
    assert stats["redis_entries"] == 0
    assert stats["total_entries"] == 0


def chat(client: openai.OpenAI, **overrides):
    fields = {"model": MODEL, "messages": MESSAGES, **overrides}
    return client.chat.completions.with_raw_response.create(**fields)


# --- Bodies that are not a request ----------------------------------------------------

@pytest.mark.parametrize("content", [b"this is not json", b'{"model": "gpt-4o-mini",', b""],
                         ids=["text", "truncated-json", "empty"])
def test_it_refuses_a_body_that_is_not_json(gateway, live_world, fake_upstream, content):
    response = post(gateway, "/v1/chat/completions", content, bearer(live_world.a.raw_key))

    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_refuses_a_json_array_body(gateway, live_world, fake_upstream):
    content = b'[{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}]'

    response = post(gateway, "/v1/chat/completions", content, bearer(live_world.a.raw_key))

    error = assert_openai_error(response, 400)
    assert "JSON object" in error["message"]
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


@pytest.mark.parametrize(("overrides", "param"), [
    ({"model": 4}, "model"),
    ({"model": ""}, "model"),
    ({"messages": "hello"}, "messages"),
    ({"messages": {"role": "user", "content": "hello"}}, "messages"),
    ({"temperature": "0.2"}, "temperature"),
    ({"n": 0}, "n"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "no role here"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]},
     "messages[1]"),
], ids=["model-number", "model-empty", "messages-string", "messages-object",
        "temperature-string", "n-zero", "max-tokens-negative", "stream-yes",
        "messages-empty", "message-without-role", "message-unknown-role"])
def test_it_refuses_a_malformed_chat_request(gateway, live_world, fake_upstream, overrides,
                                             param):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(sdk(gateway, live_world.a.raw_key), **overrides)

    assert raised.value.status_code == 400
    assert raised.value.param == param
    assert raised.value.type == "invalid_request_error"
    assert_openai_error(raised.value.response, 400, param=param)
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key"])
def test_it_refuses_a_body_that_picks_the_upstream(gateway, live_world, fake_upstream, field):
    # Someone with an org key must not be able to send the org's provider key elsewhere.
    with pytest.raises(openai.BadRequestError) as raised:
        chat(sdk(gateway, live_world.a.raw_key),
             extra_body={field: "http://attacker.example/v1"})

    assert raised.value.param == field
    assert field in raised.value.message
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_refuses_a_body_over_the_limit(gateway, live_world, fake_upstream):
    # The default limit is 4 MiB.
    huge = "x" * (5 * 1024 * 1024)

    with pytest.raises(openai.APIStatusError) as raised:
        chat(sdk(gateway, live_world.a.raw_key),
             messages=[{"role": "user", "content": huge}])

    assert raised.value.status_code == 413
    error = assert_openai_error(raised.value.response, 413)
    assert "4194304 bytes" in error["message"]
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_refuses_a_body_over_the_limit_sent_in_chunks(gateway, live_world, fake_upstream):
    # No Content-Length to check up front: the limit holds while reading.
    def chunks():
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(5):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    response = httpx.post(gateway.url + "/v1/chat/completions", content=chunks(), timeout=10,
                          headers=bearer(live_world.a.raw_key))

    assert_openai_error(response, 413)
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_accepts_null_for_optional_fields(gateway, live_world, fake_upstream):
    # OpenAI's API takes null for every optional field: null is "not given", not bad.
    nulls = {"stream": None, "stream_options": None, "temperature": None, "n": None,
             "max_tokens": None, "top_p": None}

    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                          json={"model": MODEL, "messages": MESSAGES, **nulls},
                          headers=bearer(live_world.a.raw_key))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["object"] == "chat.completion"
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


# --- Upstream refusals pass through, uncached -----------------------------------------

def test_it_passes_an_unknown_model_404_through(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)

    with pytest.raises(openai.NotFoundError) as raised:
        chat(client, model="unknown-model-9")

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert "unknown-model-9" in raised.value.message
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1
    time.sleep(SETTLE_SECONDS)
    assert not CacheEntry.objects.filter(organization=live_world.a.org).exists()
    # Asked again, it asks the upstream again: a 404 is never served from the cache.
    with pytest.raises(openai.NotFoundError):
        chat(client, model="unknown-model-9")
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2


# --- Who is calling -------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer sk-proj-not-a-cognitude-key"},
    {"Authorization": "Basic YWxpY2U6cHc="},
    {"X-API-Key": "cog_nope"},
], ids=["missing", "empty-bearer", "malformed", "basic-scheme", "malformed-x-api-key"])
def test_it_refuses_a_request_without_a_usable_key(gateway, live_world, fake_upstream,
                                                   headers):
    response = post(gateway, "/v1/chat/completions", CHAT_BODY, headers)

    error = assert_openai_error(response, 401)
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_refuses_another_scheme_even_with_a_good_key(gateway, live_world, fake_upstream):
    response = post(gateway, "/v1/chat/completions", CHAT_BODY,
                    {"Authorization": f"Token {live_world.a.raw_key}"})

    assert_openai_error(response, 401)
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


@pytest.mark.parametrize("make_key", [
    lambda real: generate_key(),  # well formed, checksum right, never issued
    lambda real: real[:-1] + ("A" if real[-1] != "A" else "B"),  # checksum wrong
], ids=["never-issued", "bad-checksum"])
def test_it_refuses_a_key_it_never_issued(gateway, live_world, fake_upstream, make_key):
    with pytest.raises(openai.AuthenticationError) as raised:
        chat(sdk(gateway, make_key(live_world.a.raw_key)))

    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_refuses_a_revoked_key_within_a_second(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    chat(client)  # the gateway now remembers the key as good
    api_key = ApiKey.objects.get(organization=live_world.a.org)

    api_key_revoke(api_key=api_key)
    revoked_at = time.monotonic()

    # COGNITUDE_API_KEY_CACHE_SECONDS is 1 in tests: the bound on a revoked key's life,
    # plus a request or two of headroom for a loaded machine (the default is 5 s).
    while True:
        try:
            chat(client)
        except openai.AuthenticationError as refused:
            assert refused.status_code == 401
            break
        assert time.monotonic() - revoked_at < 2.0, "the revoked key still works"
        time.sleep(0.05)
    assert time.monotonic() - revoked_at < 2.0
    # Only the first request reached the upstream; the rest were hits or refusals.
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_accepts_the_key_in_x_api_key(gateway, live_world, fake_upstream):
    response = post(gateway, "/v1/chat/completions", CHAT_BODY,
                    {"X-API-Key": live_world.a.raw_key})

    assert response.status_code == 200
    assert response.headers["x-cognitude-cache"] == "MISS"
    assert response.json()["choices"][0]["message"]["content"].startswith("Echo: hi")
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


# --- Per-request cache controls -------------------------------------------------------

@pytest.mark.parametrize("cache_control", [
    "max-age=soon", "max-age=0", "max-age=-5", "max-age=", "max-age=1.5", "no-store, max-age=x",
])
def test_it_refuses_a_bad_max_age(gateway, live_world, fake_upstream, cache_control):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(sdk(gateway, live_world.a.raw_key), extra_headers={"Cache-Control": cache_control})

    assert raised.value.code == "invalid_cache_control"
    assert "max-age" in raised.value.message
    assert_openai_error(raised.value.response, 400)
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_refuses_a_max_age_in_non_ascii_digits(gateway, live_world, fake_upstream):
    # "²" is a digit to str.isdigit() but not to int(); latin-1 headers can carry it.
    response = post(gateway, "/v1/chat/completions", CHAT_BODY,
                    {**bearer(live_world.a.raw_key), "Cache-Control": b"max-age=\xb2"})

    assert_openai_error(response, 400)
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_caps_a_huge_max_age(gateway, live_world, fake_upstream):
    # RFC 9111 1.2.2: a delta-seconds too big to represent counts as 2**31 seconds.
    client = sdk(gateway, live_world.a.raw_key)
    forever = {"Cache-Control": "max-age=99999999999999999999999"}

    first = chat(client, extra_headers=forever)
    second = chat(client, extra_headers=forever)

    assert first.headers["x-cognitude-cache"] == "MISS"
    assert second.headers["x-cognitude-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


# --- Methods, paths and the other endpoints -------------------------------------------

def test_it_refuses_get_on_chat_completions(gateway, live_world, fake_upstream):
    response = httpx.get(gateway.url + "/v1/chat/completions",
                         headers=bearer(live_world.a.raw_key))

    error = assert_openai_error(response, 405)
    assert "POST" in error["message"]
    assert response.headers["allow"] == "POST"
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_answers_an_unknown_v1_path_with_404(gateway, live_world, fake_upstream):
    response = httpx.post(gateway.url + "/v1/chat/completion", json={"model": MODEL},
                          headers=bearer(live_world.a.raw_key))

    error = assert_openai_error(response, 404)
    assert "/v1/chat/completion" in error["message"]
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_lists_the_upstream_models(gateway, live_world, fake_upstream):
    models = [model.id for model in sdk(gateway, live_world.a.raw_key).models.list()]

    assert "gpt-4o-mini" in models
    assert "text-embedding-3-small" in models
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_refuses_to_list_models_without_a_key(gateway, live_world, fake_upstream):
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "cog_not-a-key").models.list()

    assert fake_upstream.calls_with(live_world.a.provider_key) == 0


def test_it_caches_embeddings(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    ask = {"model": "text-embedding-3-small", "input": ["a cache", "a hit"]}

    first = client.embeddings.with_raw_response.create(**ask)
    second = client.embeddings.with_raw_response.create(**ask)

    assert first.headers["x-cognitude-cache"] == "MISS"
    assert second.headers["x-cognitude-cache"] == "HIT"
    miss, hit = first.parse(), second.parse()
    assert len(hit.data) == 2
    assert [item.embedding for item in hit.data] == [item.embedding for item in miss.data]
    assert hit.usage.prompt_tokens == miss.usage.prompt_tokens
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


def test_it_refuses_a_streamed_embedding(gateway, live_world, fake_upstream):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(gateway, live_world.a.raw_key).embeddings.create(
            model="text-embedding-3-small", input="x", extra_body={"stream": True})

    assert raised.value.param == "stream"
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


def test_it_caches_legacy_completions(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    ask = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 16}

    first = client.completions.with_raw_response.create(**ask)
    second = client.completions.with_raw_response.create(**ask)

    assert first.headers["x-cognitude-cache"] == "MISS"
    assert second.headers["x-cognitude-cache"] == "HIT"
    assert second.parse().choices[0].text == first.parse().choices[0].text
    assert first.parse().choices[0].text.startswith("Echo: Once upon a time")
    assert fake_upstream.calls_with(live_world.a.provider_key) == 1


@pytest.mark.parametrize("prompt", [[], 7, None], ids=["empty-list", "number", "missing"])
def test_it_refuses_a_legacy_completion_without_a_prompt(gateway, live_world, fake_upstream,
                                                         prompt):
    body = {"model": "gpt-3.5-turbo-instruct"}
    if prompt is not None:
        body["prompt"] = prompt

    response = httpx.post(gateway.url + "/v1/completions", json=body,
                          headers=bearer(live_world.a.raw_key))

    assert_openai_error(response, 400, param="prompt")
    assert_nothing_reached_upstream_or_cached(gateway, fake_upstream, live_world.a)


@pytest.mark.parametrize("model, header", [
    ("gpt-4o-mini\u0000x", "gpt-4o-mini%00x"),
    ("gpt-4o-mini\r\nX-Injected: 1", "gpt-4o-mini%0D%0AX-Injected: 1"),
    ("gpt-4o-mini-caf\u00e9", "gpt-4o-mini-caf%C3%A9"),
])
def test_it_answers_a_model_name_no_header_can_hold(gateway, live_world, fake_upstream,
                                                    model, header):
    # The model as asked goes upstream and comes back in X-Cognitude-Model: a NUL or a
    # newline there made the server drop the connection instead of answering.
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10,
                          headers=bearer(live_world.a.raw_key))

    assert response.status_code == 200
    assert response.headers["x-cognitude-model"] == header
    assert "x-injected" not in response.headers

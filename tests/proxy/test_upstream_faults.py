"""When the upstream fails: its errors pass through with their status and body, a slow
upstream becomes a 504, an unreachable one a 502, a stream that breaks ends in an
error the SDK raises; and no failure is ever cached.

Faults are asked of the fake upstream by markers in the last message's text.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from caching.models import CacheEntry
from fakeupstream.testing import free_port
from tests.conftest import make_tenant
from tests.proxy.helpers import client_for

MODEL = "gpt-4o-mini"
SETTLE_SECONDS = 0.5  # the gateway flushes cold-tier writes every 0.05 s in tests


def sdk(gateway, raw_key: str) -> openai.OpenAI:
    return client_for(gateway.url, raw_key, timeout=10)


def ask(text: str) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


def call(client: openai.OpenAI, request: dict, *, stream: bool):
    """Send a chat request; a streamed one is read to its end."""
    if stream:
        return list(client.chat.completions.create(**request, stream=True))
    return client.chat.completions.create(**request)


def assert_nothing_cached(gateway, tenant) -> None:
    """Neither tier holds anything for the tenant once the gateway has settled."""
    time.sleep(SETTLE_SECONDS)
    assert not CacheEntry.objects.filter(organization=tenant.org).exists()
    stats = httpx.get(f"{gateway.url}/cache/stats", headers={"X-API-Key": tenant.raw_key}).json()
    assert (stats["total_entries"], stats["redis_entries"]) == (0, 0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_it_passes_an_upstream_500_through_uncached(gateway, live_world, fake_upstream,
                                                    stream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Fail please [[fault:status=500]]")

    with pytest.raises(openai.InternalServerError) as raised:
        call(client, request, stream=stream)

    assert raised.value.status_code == 500
    assert "Injected fault: status 500." in raised.value.message
    assert raised.value.body["message"] == "Injected fault: status 500."
    assert raised.value.body["type"] == "server_error"
    assert raised.value.response.headers["x-cognitude-cache"] == "MISS"
    assert_nothing_cached(gateway, live_world.a)
    # The same request again asks the upstream again.
    with pytest.raises(openai.InternalServerError):
        call(client, request, stream=stream)
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_it_passes_an_upstream_429_through_with_retry_after(gateway, live_world,
                                                            fake_upstream, stream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Slow down [[fault:status=429]] [[fault:retry_after=7]]")

    with pytest.raises(openai.RateLimitError) as raised:
        call(client, request, stream=stream)

    assert raised.value.status_code == 429
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.body["message"] == "Injected fault: status 429."
    assert raised.value.response.headers["retry-after"] == "7"
    assert_nothing_cached(gateway, live_world.a)
    with pytest.raises(openai.RateLimitError):
        call(client, request, stream=stream)
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_it_answers_504_when_the_upstream_is_too_slow(gateway, live_world, fake_upstream,
                                                      stream):
    # The gateway waits COGNITUDE_UPSTREAM_TIMEOUT (3 s in tests) for upstream bytes.
    client = sdk(gateway, live_world.a.raw_key)
    started = time.monotonic()

    with pytest.raises(openai.APIStatusError) as raised:
        call(client, ask("Take your time [[fault:delay_ms=5000]]"), stream=stream)

    elapsed = time.monotonic() - started
    assert raised.value.status_code == 504
    assert 2.9 < elapsed < 4, elapsed
    assert raised.value.body["type"] == "upstream_timeout"
    assert "in time" in raised.value.body["message"]
    assert set(raised.value.body) == {"message", "type", "param", "code"}
    assert_nothing_cached(gateway, live_world.a)


def test_it_answers_a_later_request_after_a_timeout(gateway, live_world, fake_upstream):
    # A timed-out call must not leave the key locked or poisoned for the next caller.
    client = sdk(gateway, live_world.a.raw_key)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**ask("Late [[fault:delay_ms=5000]]"))

    answer = client.chat.completions.with_raw_response.create(**ask("On time"))

    assert answer.headers["x-cognitude-cache"] == "MISS"
    assert answer.parse().choices[0].message.content.startswith("Echo: On time")


@pytest.fixture
def unreachable(live_world, settings):
    """A tenant whose provider base URL is a closed port on this machine."""
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    return make_tenant("Org Closed", live_world.charlie,
                       f"http://127.0.0.1:{free_port()}/v1")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_it_answers_502_when_the_upstream_cannot_be_reached(gateway, unreachable, stream):
    client = sdk(gateway, unreachable.raw_key)
    started = time.monotonic()

    with pytest.raises(openai.APIStatusError) as raised:
        call(client, ask("Anyone there?"), stream=stream)

    assert time.monotonic() - started < 2
    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "upstream_error"
    assert "could not be reached" in raised.value.body["message"]
    assert raised.value.response.json() == {"error": raised.value.body}
    assert set(raised.value.body) == {"message", "type", "param", "code"}
    assert raised.value.response.headers["x-request-id"]
    assert_nothing_cached(gateway, unreachable)


def test_it_answers_502_for_models_when_the_upstream_cannot_be_reached(gateway, unreachable):
    with pytest.raises(openai.APIStatusError) as raised:
        sdk(gateway, unreachable.raw_key).models.list()

    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "upstream_error"


def test_it_answers_502_when_the_upstream_answer_is_cut_short(gateway, live_world,
                                                              fake_upstream):
    # Headers and 20 bytes of the JSON body, then the connection drops.
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Half an answer [[fault:break_after=20]]")

    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(**request)

    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "upstream_error"
    assert_nothing_cached(gateway, live_world.a)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**request)
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2


def test_it_ends_a_broken_stream_with_an_error(gateway, live_world, fake_upstream):
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Stream and stumble [[fault:break_after=2]]")
    received = []

    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(**request, stream=True):
            received.append(chunk)

    # The role chunk and the two content chunks arrived before the error.
    assert len(received) == 3
    assert received[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in received)
    assert text.startswith("Echo: Stream")
    assert all(chunk.choices[0].finish_reason is None for chunk in received)
    assert not isinstance(raised.value, openai.APIStatusError)  # the status was 200
    assert raised.value.body["type"] == "upstream_error"
    assert raised.value.message
    assert fake_upstream.stats()["streams_broken"] >= 1
    assert_nothing_cached(gateway, live_world.a)
    # Asked again, it goes upstream again (and breaks again): nothing partial was kept.
    again = client.chat.completions.with_raw_response.create(**request, stream=True)
    assert again.headers["x-cognitude-cache"] == "MISS"
    with pytest.raises(openai.APIError):
        list(again.parse())
    assert fake_upstream.calls_with(live_world.a.provider_key) == 2


def test_it_ends_a_stream_that_stalls_with_an_error(gateway, live_world, fake_upstream):
    # The role chunk comes at once, then nothing for longer than the 3 s timeout.
    client = sdk(gateway, live_world.a.raw_key)
    request = ask("Stall [[fault:chunk_delay_ms=4500]]")
    received = []
    started = time.monotonic()

    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(**request, stream=True):
            received.append(chunk)

    assert 2.9 < time.monotonic() - started < 4.5
    assert [chunk.choices[0].delta.role for chunk in received] == ["assistant"]
    assert raised.value.body["type"] == "upstream_timeout"
    assert_nothing_cached(gateway, live_world.a)


@contextmanager
def loopback_server(answer: Callable[[BaseHTTPRequestHandler], None]
                    ) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback, in a thread: yields its URL and the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer(self)

        do_GET = do_POST

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()


SECRET = b"SECRET-INTERNAL-METADATA"


def answer_secret(handler: BaseHTTPRequestHandler) -> None:
    # A well-formed completion, so a gateway that followed the redirect would hand it
    # to the tenant as a success.
    body = json.dumps({
        "id": "chatcmpl-secret", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": SECRET.decode()}}],
    }).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def redirecting(live_world):
    """A tenant whose provider answers every call with a 307 to a server on the
    operator's loopback holding a secret; yields (tenant, paths the secret server saw).

    Private upstreams are allowed (both servers are on loopback): what is under test is
    that the redirect is not followed, whatever the address check says."""
    with loopback_server(answer_secret) as (secret_url, secret_asked):
        def answer_redirect(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(307)
            handler.send_header("Location", f"{secret_url}/latest/meta-data")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with loopback_server(answer_redirect) as (provider_url, _):
            tenant = make_tenant("Org Redirect", live_world.charlie, f"{provider_url}/v1")
            yield tenant, secret_asked


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_it_answers_502_and_does_not_follow_an_upstream_redirect(gateway, redirecting,
                                                                 stream):
    tenant, secret_asked = redirecting

    with pytest.raises(openai.APIStatusError) as raised:
        call(sdk(gateway, tenant.raw_key), ask("Where is the metadata?"), stream=stream)

    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "upstream_error"
    assert raised.value.body["code"] == "upstream_redirect"
    assert "307" in raised.value.body["message"]
    assert SECRET not in raised.value.response.content
    assert secret_asked == []
    assert_nothing_cached(gateway, tenant)


def test_it_answers_502_and_does_not_follow_a_redirect_for_models(gateway, redirecting):
    tenant, secret_asked = redirecting

    with pytest.raises(openai.APIStatusError) as raised:
        sdk(gateway, tenant.raw_key).models.list()

    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "upstream_redirect"
    assert SECRET not in raised.value.response.content
    assert secret_asked == []

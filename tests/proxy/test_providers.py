"""The OpenAI adapter against a real HTTP server on loopback."""

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web

from fakeupstream.testing import request
from proxy.providers import Provider, ProviderConfig, provider_for
from proxy.providers.base import UpstreamError, close_sessions, session
from proxy.providers.openai import OpenAIProvider


def openai_at(base_url: str) -> OpenAIProvider:
    provider = provider_for(ProviderConfig(id=1, name="test", kind="openai", base_url=base_url,
                                           api_key="sk-test"))
    assert isinstance(provider, OpenAIProvider)
    return provider


async def _serve(handler, path: str = "/v1/chat/completions") -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/v1"


class Secret:
    """A loopback server holding something the tenant must never see; counts its visitors."""

    BODY = {"id": "chatcmpl-secret", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "SECRET-INTERNAL"},
         "finish_reason": "stop"}]}

    def __init__(self) -> None:
        self.visits = 0

    async def handler(self, request: web.Request) -> web.Response:
        self.visits += 1
        return web.json_response(self.BODY)


def test_it_relays_an_sse_event_longer_than_aiohttps_line_limit(settings):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    arguments = "x" * 300_000  # one tool-call delta of 300 kB, past aiohttp's 128 KiB
    chunk = {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}}
    ]}

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        payload = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
        for start in range(0, len(payload), 4096):  # arrives in many pieces
            await response.write(payload[start:start + 4096])
        await response.write_eof()
        return response

    async def run() -> list[bytes]:
        runner, base_url = await _serve(handler)
        try:
            provider = openai_at(base_url)
            async with provider.stream("chat/completions", {}) as upstream:
                assert upstream.status == 200
                return [line async for line in upstream.lines]
        finally:
            await close_sessions()
            await runner.cleanup()

    lines = [line for line in asyncio.run(run()) if line.strip()]
    assert len(lines) == 2
    assert orjson.loads(lines[0][len(b"data: "):]) == chunk
    assert lines[1] == b"data: [DONE]"


@pytest.mark.parametrize("status", [500, 429])
def test_it_hands_back_an_upstream_error_body_whole(settings, status):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "nope"}}, status=status)

    async def run():
        runner, base_url = await _serve(handler)
        try:
            provider = openai_at(base_url)
            async with provider.stream("chat/completions", {}) as upstream:
                return upstream.status, upstream.body, upstream.lines
        finally:
            await close_sessions()
            await runner.cleanup()

    got_status, body, lines = asyncio.run(run())
    assert (got_status, orjson.loads(body), lines) == (status, {"error": {"message": "nope"}},
                                                        None)


async def _ask(provider: OpenAIProvider, way: str):
    """One upstream call the way the gateway makes it: JSON, streamed, or the model list."""
    if way == "send":
        return await provider.send("chat/completions", {}, b"{}")
    if way == "models":
        return await provider.send("models", {})
    async with provider.stream("chat/completions", {}) as upstream:
        return upstream.status, upstream.body, upstream.lines and [
            line async for line in upstream.lines]


@pytest.mark.parametrize("way", ["send", "stream", "models"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_it_does_not_follow_an_upstream_redirect(settings, status, way):
    # Private upstreams allowed, so both servers on loopback can be reached: what is
    # under test is that the second one is never asked.
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    secret = Secret()

    async def run():
        secret_runner, secret_url = await _serve(secret.handler, "/{tail:.*}")

        async def redirect(request: web.Request) -> web.Response:
            return web.Response(status=status, text="moved",
                                headers={"Location": f"{secret_url}/latest/meta-data"})

        runner, base_url = await _serve(redirect, "/v1/{tail:.*}")
        try:
            return await _ask(openai_at(base_url), way)
        finally:
            await close_sessions()
            await runner.cleanup()
            await secret_runner.cleanup()

    with pytest.raises(UpstreamError) as raised:
        asyncio.run(run())

    assert raised.value.status == 502
    assert raised.value.code == "upstream_redirect"
    assert str(status) in raised.value.message
    assert "SECRET" not in raised.value.message
    assert secret.visits == 0


def test_it_refuses_a_private_address_on_any_connection_the_session_makes(settings):
    # Not through an adapter: a plain request on the shared session, to an IP literal
    # (which aiohttp connects to without asking any resolver). Whatever path a request
    # takes, redirect or future code, the connection itself is refused.
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    secret = Secret()

    async def run():
        runner, base_url = await _serve(secret.handler, "/{tail:.*}")
        try:
            async with session().get(f"{base_url}/latest/meta-data") as response:
                return response.status
        finally:
            await close_sessions()
            await runner.cleanup()

    with pytest.raises(aiohttp.ClientConnectorError) as raised:
        asyncio.run(run())

    assert "private address" in str(raised.value)
    assert secret.visits == 0


@pytest.mark.parametrize("way", ["send", "stream", "models"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["literal", "name"])
def test_it_refuses_a_private_base_url_when_the_request_is_made(settings, host, way):
    # A base URL stored while private upstreams were allowed (or written to the
    # database by hand, or a name re-pointed since): the check at save time is not the
    # only one.
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = False
    secret = Secret()

    async def run():
        runner, base_url = await _serve(secret.handler, "/{tail:.*}")
        base_url = base_url.replace("127.0.0.1", host)
        try:
            return await _ask(openai_at(base_url), way)
        finally:
            await close_sessions()
            await runner.cleanup()

    with pytest.raises(UpstreamError) as raised:
        asyncio.run(run())

    assert (raised.value.status, raised.value.code) == (502, "upstream_unavailable")
    assert "private address" in raised.value.message
    assert secret.visits == 0


def _at(fake_upstream, kind: str, **fields) -> Provider:
    base_url = fake_upstream.api_base if kind == "openai" else fake_upstream.url
    return provider_for(ProviderConfig(id=1, name=kind, kind=kind, base_url=base_url,
                                       api_key=f"sk-{kind}", **fields))


async def _stream_lines(provider: Provider, endpoint: str, body: dict) -> tuple[int, list]:
    try:
        async with provider.stream(endpoint, body) as upstream:
            if upstream.lines is None:
                return upstream.status, []
            return upstream.status, [line async for line in upstream.lines]
    finally:
        await close_sessions()


async def _send(provider: Provider, endpoint: str, body: dict, raw: bytes | None = None):
    try:
        return await provider.send(endpoint, body, raw)
    finally:
        await close_sessions()


def test_it_sends_the_clients_bytes_when_given(settings, fake_upstream):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    raw = orjson.dumps({**body, "seed": 7})  # what the client sent, byte for byte

    answer = asyncio.run(_send(_at(fake_upstream, "openai"), "chat/completions", body, raw))

    assert answer.status == 200
    assert request("GET", fake_upstream.url, "/stats/last")[1]["/v1/chat/completions"] == {
        **body, "seed": 7}


def test_it_passes_every_line_of_a_responses_stream(settings, fake_upstream):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True

    status, lines = asyncio.run(_stream_lines(_at(fake_upstream, "openai"), "responses", {
        "model": "gpt-4.1", "input": "Hi", "stream": True}))

    assert status == 200
    # Each typed event: its event: line, its data: line, then a blank line.
    assert lines[:3] == [b"event: response.created", lines[1], b""]
    assert orjson.loads(lines[1].removeprefix(b"data: "))["type"] == "response.created"
    assert lines[-3] == b"event: response.completed"


def test_it_passes_anthropics_messages_through_natively(settings, fake_upstream):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    body = {"model": "claude-haiku-4-5", "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hi"}]}
    provider = _at(fake_upstream, "anthropic")

    answer = asyncio.run(_send(provider, "messages", body))
    status, lines = asyncio.run(_stream_lines(provider, "messages", {**body, "stream": True}))

    assert answer.status == 200
    assert orjson.loads(answer.body)["type"] == "message"
    assert status == 200
    assert [line for line in lines if line.startswith(b"event: ")][:2] == [
        b"event: message_start", b"event: ping"]
    assert lines[-3:] == [b"event: message_stop", b'data: {"type":"message_stop"}', b""]


def test_it_lists_anthropics_models_the_openai_way(settings, fake_upstream):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    provider = _at(fake_upstream, "anthropic")

    listed = asyncio.run(_send(provider, "models", {}))
    one = asyncio.run(_send(provider, "models/claude-haiku-4-5", {}))
    missing = asyncio.run(_send(provider, "models/gpt-4o", {}))

    assert [m["id"] for m in orjson.loads(listed.body)["data"]] == [
        "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"]
    assert orjson.loads(one.body) == {"id": "claude-haiku-4-5", "object": "model",
                                      "created": 0, "owned_by": "anthropic"}
    assert missing.status == 404
    assert orjson.loads(missing.body)["error"]["code"] == "not_found_error"


@pytest.mark.parametrize(("kind", "endpoint"), [("anthropic", "embeddings"),
                                                ("anthropic", "responses"),
                                                ("openai", "messages"), ("azure", "messages")])
def test_it_answers_400_for_an_endpoint_the_kind_does_not_serve(settings, fake_upstream, kind,
                                                                endpoint):
    settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = True
    before = request("GET", fake_upstream.url, "/stats")[1]["requests_total"]
    provider = _at(fake_upstream, kind)

    answer = asyncio.run(_send(provider, endpoint, {"model": "m"}))
    status, _ = asyncio.run(_stream_lines(provider, endpoint, {"model": "m", "stream": True}))

    assert (answer.status, status) == (400, 400)
    assert orjson.loads(answer.body)["error"]["code"] == "endpoint_not_supported"
    assert request("GET", fake_upstream.url, "/stats")[1]["requests_total"] == before

"""The OpenAI adapter against a real HTTP server on loopback."""

import asyncio

import orjson
import pytest
from aiohttp import web

from proxy.providers.base import close_sessions
from proxy.providers.openai import OpenAIProvider


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/v1"


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
            provider = OpenAIProvider(base_url=base_url, api_key="sk-test")
            async with provider.stream("/chat/completions", b"{}") as upstream:
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
            provider = OpenAIProvider(base_url=base_url, api_key="sk-test")
            async with provider.stream("/chat/completions", b"{}") as upstream:
                return upstream.status, upstream.body, upstream.lines
        finally:
            await close_sessions()
            await runner.cleanup()

    got_status, body, lines = asyncio.run(run())
    assert (got_status, orjson.loads(body), lines) == (status, {"error": {"message": "nope"}},
                                                        None)

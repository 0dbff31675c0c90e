"""Anthropic: the Messages API natively ("messages"), and OpenAI chat completions
translated both ways (proxy/providers/anthropic_translate.py), so the relay, the cache
and the costing see OpenAI-shaped answers and chunks whatever the provider.

Base URLs are stored the way Anthropic's SDK takes them (https://api.anthropic.com; a
trailing /v1 is tolerated). The key goes in `x-api-key`, with `anthropic-version`.
"""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from django.conf import settings

from cognitude.errors import error_body
from proxy.providers.anthropic_translate import (
    ChunkTranslator,
    SseParser,
    Untranslatable,
    chat_to_messages,
    error_to_openai,
    messages_to_chat,
    models_to_openai,
)
from proxy.providers.base import (
    Provider,
    StreamingUpstream,
    UpstreamError,
    UpstreamResponse,
    as_stream,
    is_get,
    not_served,
    open_stream,
    read_whole,
    upstream_request,
)

ANTHROPIC_VERSION = "2023-06-01"
JSON = "application/json"


def refusal(exc: Untranslatable) -> UpstreamResponse:
    return UpstreamResponse(status=400, content_type=JSON, retry_after=None,
                            body=error_body(400, exc.message, code="unsupported_by_provider",
                                            param=exc.param))


async def translated_lines(lines: AsyncIterator[bytes],
                           translator: ChunkTranslator) -> AsyncIterator[bytes]:
    parser = SseParser()
    async for line in lines:
        found = parser.feed(line)
        if found is None:
            continue
        for out in translator.feed(*found):
            yield out
        if translator.done:
            return


class AnthropicProvider(Provider):
    kind = "anthropic"

    def url(self, path: str) -> str:
        return f"{self.config.base_url.rstrip('/').removesuffix('/v1')}/v1/{path}"

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.config.api_key, "anthropic-version": ANTHROPIC_VERSION,
                "Content-Type": JSON}

    async def _ask(self, method: str, path: str, data: bytes | None) -> UpstreamResponse:
        response = await upstream_request(method, self.url(path), data=data,
                                          headers=self.headers())
        return await read_whole(response)

    async def send(self, endpoint: str, body: dict, raw: bytes | None = None) -> UpstreamResponse:
        if endpoint == "messages":
            return await self._ask("POST", "messages",
                                   raw if raw is not None else orjson.dumps(body))
        if is_get(endpoint):
            upstream = await self._ask("GET", endpoint, None)
            translate = models_to_openai
        elif endpoint == "chat/completions":
            try:
                request = chat_to_messages(
                    body, default_max_tokens=settings.COGNITUDE_ANTHROPIC_DEFAULT_MAX_TOKENS)
            except Untranslatable as exc:
                return refusal(exc)
            upstream = await self._ask("POST", "messages", orjson.dumps(request.body))

            def translate(raw_answer: bytes) -> bytes:
                return orjson.dumps(messages_to_chat(orjson.loads(raw_answer),
                                                     json_tool=request.json_tool,
                                                     created=int(time.time())))
        else:
            return not_served(endpoint, self.kind)
        if upstream.status != 200:
            return UpstreamResponse(status=upstream.status, content_type=JSON,
                                    body=error_to_openai(upstream.status, upstream.body),
                                    retry_after=upstream.retry_after)
        try:
            answer = translate(upstream.body)
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            raise UpstreamError(502, "The upstream provider sent an unreadable answer",
                                code="upstream_bad_answer") from exc
        return UpstreamResponse(status=200, content_type=JSON, body=answer, retry_after=None)

    @asynccontextmanager
    async def stream(self, endpoint: str, body: dict) -> AsyncIterator[StreamingUpstream]:
        if endpoint == "messages":
            async with open_stream(self.url("messages"), data=orjson.dumps(body),
                                   headers=self.headers()) as upstream:
                yield upstream
            return
        if endpoint != "chat/completions":
            yield as_stream(not_served(endpoint, self.kind))
            return
        try:
            request = chat_to_messages(
                body, default_max_tokens=settings.COGNITUDE_ANTHROPIC_DEFAULT_MAX_TOKENS)
        except Untranslatable as exc:
            yield as_stream(refusal(exc))
            return
        translator = ChunkTranslator(json_tool=request.json_tool,
                                     include_usage=request.include_usage,
                                     created=int(time.time()))
        async with open_stream(
            self.url("messages"), data=orjson.dumps(request.body), headers=self.headers(),
            error=error_to_openai, lines=lambda lines: translated_lines(lines, translator),
        ) as upstream:
            yield upstream

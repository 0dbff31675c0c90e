"""OpenAI and every OpenAI-compatible API (Groq, Together, Mistral, vLLM, Ollama, ...).

Base URLs are stored the way OpenAI's SDK takes them (".../v1"); the body goes as the
client sent it (`raw`) whenever the gateway changed nothing, so the common path does
no re-serialisation, and streams (chat's `data:` lines, the Responses API's `event:`
and `data:` lines) pass line by line as they arrive.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from proxy.providers.base import (
    Provider,
    StreamingUpstream,
    UpstreamResponse,
    as_stream,
    is_get,
    not_served,
    open_stream,
    read_whole,
    upstream_request,
)


class OpenAIProvider(Provider):
    kind = "openai"

    def url(self, endpoint: str, body: dict) -> str:
        return f"{self.config.base_url}/{endpoint}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}",
                "Content-Type": "application/json"}

    async def send(self, endpoint: str, body: dict, raw: bytes | None = None) -> UpstreamResponse:
        if endpoint == "messages":
            return not_served(endpoint, self.kind)
        if is_get(endpoint):
            method, data = "GET", None
        else:
            method, data = "POST", raw if raw is not None else orjson.dumps(body)
        response = await upstream_request(method, self.url(endpoint, body), data=data,
                                          headers=self.headers())
        return await read_whole(response)

    @asynccontextmanager
    async def stream(self, endpoint: str, body: dict) -> AsyncIterator[StreamingUpstream]:
        if endpoint == "messages":
            yield as_stream(not_served(endpoint, self.kind))
            return
        async with open_stream(self.url(endpoint, body), data=orjson.dumps(body),
                               headers=self.headers()) as upstream:
            yield upstream

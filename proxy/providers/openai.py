"""OpenAI and every OpenAI-compatible API (Azure OpenAI, Groq, Together, vLLM, ...)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from proxy.providers.base import (
    NETWORK_ERRORS,
    Provider,
    StreamingUpstream,
    UpstreamResponse,
    upstream_error,
    upstream_request,
)


class OpenAIProvider(Provider):
    def _url(self, path: str) -> str:
        # Base URLs are stored like OpenAI's SDK takes them: ".../v1".
        return f"{self.base_url}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    async def send(self, path: str, body: bytes | None) -> UpstreamResponse:
        method = "POST" if body is not None else "GET"
        response = await upstream_request(method, self._url(path), data=body,
                                          headers=self._headers())
        try:
            content = await response.read()
        except NETWORK_ERRORS as exc:
            raise upstream_error(exc) from exc
        finally:
            response.release()
        return UpstreamResponse(
            status=response.status,
            content_type=response.headers.get("Content-Type", "application/json"),
            body=content,
            retry_after=response.headers.get("Retry-After"),
        )

    @asynccontextmanager
    async def stream(self, path: str, body: bytes) -> AsyncIterator[StreamingUpstream]:
        response = await upstream_request("POST", self._url(path), data=body,
                                          headers=self._headers())
        try:
            if response.status != 200:
                try:
                    error = await response.read()
                except NETWORK_ERRORS as exc:
                    raise upstream_error(exc) from exc
                yield StreamingUpstream(
                    status=response.status,
                    content_type=response.headers.get("Content-Type", "application/json"),
                    body=error,
                    retry_after=response.headers.get("Retry-After"),
                    lines=None,
                )
                return
            yield StreamingUpstream(
                status=200, content_type="text/event-stream", body=b"", retry_after=None,
                lines=self._lines(response),
            )
        finally:
            # Closing (rather than releasing) drops the connection, which is how a
            # client that went away cancels the upstream generation.
            response.close()

    @staticmethod
    async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        # Split lines ourselves: aiohttp's line reader refuses lines over 128 KiB, and a
        # single SSE event (a large tool call, say) can be longer.
        pending = b""
        try:
            async for data in response.content.iter_any():
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line
        except NETWORK_ERRORS as exc:
            raise upstream_error(exc) from exc
        if pending:
            yield pending

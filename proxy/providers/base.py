"""The only code that talks to upstream providers: a small base and one adapter each.

One aiohttp session per event loop (per process in production): httpx's own pool
collapsed under concurrency here (encode/httpx#3215), aiohttp's did not.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from django.conf import settings

from cognitude.errors import error_body
from organizations.urlcheck import PrivateAddressRefused, public_socket
from routing.table import ProviderConfig


class UpstreamError(Exception):
    """The upstream could not be reached or used (502) or did not answer in time (504)."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ("upstream_timeout" if status == 504 else "upstream_unavailable")


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    content_type: str
    body: bytes
    retry_after: str | None


_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    """The event loop's upstream session. Adapters open responses with upstream_request."""
    loop = asyncio.get_running_loop()
    found = _sessions.get(loop)
    if found is None or found.closed:
        found = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, keepalive_timeout=30,
                socket_factory=public_socket,
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=10, sock_read=settings.COGNITUDE_UPSTREAM_TIMEOUT
            ),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        _sessions[loop] = found
    return found


async def close_sessions() -> None:
    loop = asyncio.get_running_loop()
    found = _sessions.pop(loop, None)
    if found is not None:
        await found.close()


NETWORK_ERRORS = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                  OSError)


def upstream_error(exc: BaseException) -> UpstreamError:
    """What the client is told about one of NETWORK_ERRORS."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamError(504, "The upstream provider did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, PrivateAddressRefused
    ):
        return UpstreamError(502, "The provider URL points to a private address")
    return UpstreamError(502, f"The upstream provider could not be reached ({type(exc).__name__})")


async def upstream_request(
    method: str, url: str, *, data: bytes | None, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    """Open one upstream response (the caller closes it); every adapter call goes here.

    Redirects are never followed: a provider's Location may point anywhere, the
    operator's network included, and the body found there would go to the tenant. A
    3xx is an upstream error instead.
    """
    try:
        response = await session().request(
            method, url, data=data, headers=headers, allow_redirects=False
        )
    except NETWORK_ERRORS as exc:
        raise upstream_error(exc) from exc
    if 300 <= response.status < 400:
        response.close()
        raise UpstreamError(
            502,
            f"The upstream provider answered {response.status} (a redirect); "
            "the gateway does not follow redirects",
            code="upstream_redirect",
        )
    return response


class Provider:
    """One upstream kind, built per attempt from the provider's config (cheap).

    `endpoint` is ours: "chat/completions", "completions", "embeddings", "models" (and
    "models/ID"), "responses", "messages". `body` is the client's request with "model"
    already set to the target's upstream model; `raw`, when given, is the exact bytes to
    send because nothing changed (an adapter that sends the body as it is sends raw).
    """

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    async def send(self, endpoint: str, body: dict, raw: bytes | None = None) -> UpstreamResponse:
        raise NotImplementedError

    def stream(self, endpoint: str, body: dict) -> AbstractAsyncContextManager["StreamingUpstream"]:
        """An async context manager around the open upstream response."""
        raise NotImplementedError


@dataclass(slots=True)
class StreamingUpstream:
    """An open upstream response: a non-200 status carries its whole body instead.

    `lines` are the response's lines without their newlines, blank ones included, as
    they arrive (an SSE event is its `event:` and `data:` lines, then a blank line).
    """

    status: int
    content_type: str
    body: bytes
    retry_after: str | None
    lines: AsyncIterator[bytes] | None


def is_get(endpoint: str) -> bool:
    return endpoint == "models" or endpoint.startswith("models/")


def not_served(endpoint: str, kind: str) -> UpstreamResponse:
    """The answer for an endpoint this kind of provider does not have: the caller's
    request (or its route) is wrong, so a 400, never retried elsewhere as a failure."""
    return UpstreamResponse(
        status=400, content_type="application/json", retry_after=None,
        body=error_body(400, f"/v1/{endpoint} is not served by {kind} providers",
                        code="endpoint_not_supported"),
    )


def as_stream(response: UpstreamResponse) -> StreamingUpstream:
    """A whole (error) answer where a stream was asked for."""
    return StreamingUpstream(status=response.status, content_type=response.content_type,
                             body=response.body, retry_after=response.retry_after, lines=None)


async def read_whole(response: aiohttp.ClientResponse) -> UpstreamResponse:
    """The whole of an open upstream response, the connection released."""
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


async def response_lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Every line of a streamed response as it arrives, newlines removed."""
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


LineFilter = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]


@asynccontextmanager
async def open_stream(
    url: str, *, data: bytes, headers: dict[str, str],
    error: Callable[[int, bytes], bytes] | None = None, lines: LineFilter | None = None,
) -> AsyncIterator[StreamingUpstream]:
    """POST and hold the response open; a non-200 answer is read whole (and shaped by
    `error` if given), a 200's lines pass through `lines` if given."""
    response = await upstream_request("POST", url, data=data, headers=headers)
    try:
        if response.status != 200:
            try:
                body = await response.read()
            except NETWORK_ERRORS as exc:
                raise upstream_error(exc) from exc
            content_type = response.headers.get("Content-Type", "application/json")
            if error is not None:
                body, content_type = error(response.status, body), "application/json"
            yield StreamingUpstream(status=response.status, content_type=content_type,
                                    body=body, retry_after=response.headers.get("Retry-After"),
                                    lines=None)
            return
        upstream_lines = response_lines(response)
        yield StreamingUpstream(
            status=200, content_type="text/event-stream", body=b"", retry_after=None,
            lines=upstream_lines if lines is None else lines(upstream_lines),
        )
    finally:
        # Closing (rather than releasing) drops the connection, which is how a
        # client that went away cancels the upstream generation.
        response.close()

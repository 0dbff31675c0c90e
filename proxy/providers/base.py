"""The only code that talks to upstream providers: a small base and one adapter each.

One aiohttp session per event loop (per process in production): httpx's own pool
collapsed under concurrency here (encode/httpx#3215), aiohttp's did not.
"""

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiohttp
from django.conf import settings

from organizations.urlcheck import is_public_address


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


class PrivateAddressRefused(OSError):
    """A connection to a private, loopback or link-local address was not made."""

    def __init__(self) -> None:
        # The same text for every address: aiohappyeyeballs then raises this error
        # itself, not a combined OSError, when all of a name's addresses are refused.
        super().__init__(errno.EACCES, "The provider URL points to a private address")


def _public_socket(addr_info: aiohttp.AddrInfoType) -> socket.socket:
    """aiohttp's socket factory: it sees the address of every connection the session
    makes, whatever produced it (a resolved name, an IP literal, which aiohttp connects
    to without a resolver, a proxy), so nothing reaches the operator's own network.

    Base URLs are checked when saved too, but a name can be re-pointed afterwards (DNS
    rebinding) and a URL can be stored while private upstreams were allowed.
    """
    family, type_, proto, _, sockaddr = addr_info
    if not settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS:
        try:
            public = is_public_address(sockaddr[0])
        except ValueError:
            public = False
        if not public:
            raise PrivateAddressRefused
    return socket.socket(family, type_, proto)


_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    """The event loop's upstream session. Adapters open responses with upstream_request."""
    loop = asyncio.get_running_loop()
    found = _sessions.get(loop)
    if found is None or found.closed:
        found = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, keepalive_timeout=30,
                socket_factory=_public_socket,
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
        return UpstreamError(502, exc.os_error.strerror)
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
    """One upstream kind. Adapters translate our OpenAI-shaped request to theirs."""

    def __init__(self, *, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key

    async def send(self, path: str, body: bytes | None) -> UpstreamResponse:
        raise NotImplementedError

    def stream(self, path: str, body: bytes) -> AbstractAsyncContextManager["StreamingUpstream"]:
        """An async context manager around the open upstream response."""
        raise NotImplementedError


@dataclass(slots=True)
class StreamingUpstream:
    """An open upstream response: a non-200 status carries its whole body instead."""

    status: int
    content_type: str
    body: bytes
    retry_after: str | None
    lines: AsyncIterator[bytes] | None

"""The only code that talks to upstream providers: a small base and one adapter each.

One aiohttp session per event loop (per process in production): httpx's own pool
collapsed under concurrency here (encode/httpx#3215), aiohttp's did not.
"""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
from aiohttp.resolver import ThreadedResolver
from django.conf import settings

from organizations.urlcheck import is_public_address


class UpstreamError(Exception):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def code(self) -> str:
        return "upstream_timeout" if self.status == 504 else "upstream_unavailable"


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    content_type: str
    body: bytes
    retry_after: str | None


class PublicOnlyResolver(ThreadedResolver):
    """Refuses upstream hosts that resolve to private, loopback or link-local addresses.

    Base URLs are checked when saved, but a name can be re-pointed afterwards (DNS
    rebinding); checking what the connection will really use closes that gap.
    """

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET) -> list:
        results = await super().resolve(host, port, family)
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise OSError(f"{host} resolves only to private addresses")
        return public


_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    found = _sessions.get(loop)
    if found is None or found.closed:
        found = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, keepalive_timeout=30,
                resolver=None if settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS
                else PublicOnlyResolver(),
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


@lru_cache(maxsize=1024)
def is_private_literal(base_url: str) -> bool:
    """True for a URL whose host is a private IP literal (names go through the resolver)."""
    host = urlsplit(base_url).hostname or ""
    try:
        return not is_public_address(host)
    except ValueError:
        return False


class Provider:
    """One upstream kind. Adapters translate our OpenAI-shaped request to theirs."""

    def __init__(self, *, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key

    def check_destination(self) -> None:
        """Refuse a private address unless the operator allows private upstreams."""
        if not settings.COGNITUDE_ALLOW_PRIVATE_UPSTREAMS and is_private_literal(self.base_url):
            raise UpstreamError(502, "The provider URL points to a private address")

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

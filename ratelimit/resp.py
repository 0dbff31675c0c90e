"""A small pipelined Redis client for the limits scripts: one connection per event loop
with any number of commands in flight on it (Redis answers in order), commands packed
and answers parsed in C by hiredis.

Every limited request makes one script call before the cache, so what a call costs the
gateway's CPU is the limits' cost on a hit. Through redis-py's asyncio client a call
cost ~150 µs of CPU here (a pool checkout, a retry wrapper, per-read timeouts, argument
packing in Python), about a third of a whole cache hit; through this ~25 µs, and a busy
process sends many calls in one write. It speaks only what the limits need: commands
and their replies, AUTH and SELECT from the URL, TLS for rediss://, and a Sentinel set
(redis+sentinel://, cognitude/redis_urls.py): each new connection asks the Sentinels for
the master (SENTINEL get-master-addr-by-name) and checks its ROLE, so after a failover
the next connection finds the new master; a connection whose server answers READONLY (a
master demoted under it) is dropped, so the next call discovers again.
"""

import asyncio
import ssl
from collections import deque
from urllib.parse import unquote, urlsplit

import hiredis

from cognitude.redis_urls import SentinelSet, is_sentinel_url, sentinel_set


class RespError(Exception):
    """Redis answered with an error (its message is the exception's)."""


class _Protocol(asyncio.Protocol):
    """One connection: commands in flight, answered in the order they were sent."""

    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader()
        # (deadline, future) of each command sent and not yet answered.
        self.pending: deque[tuple[float, asyncio.Future]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._timeout = timeout
        self._watching = False
        # Commands of this turn of the event loop, written together at its end: one
        # send() for many (a write is a system call, and the dearest part of a call).
        self._outbox: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, payload: bytes) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((loop.time() + self._timeout, future))
        if not self._outbox:
            loop.call_soon(self._write)
        self._outbox.append(payload)
        if not self._watching:
            # One timer for the connection, not one per command.
            self._watching = True
            loop.call_later(self._timeout, self._watch)
        return future

    def _write(self) -> None:
        outbox, self._outbox = self._outbox, []
        if self.lost is None:
            self.transport.write(b"".join(outbox))

    def _watch(self) -> None:
        """Fail the commands past their deadline (they keep their place in the order:
        their answers may still come, and are then dropped)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for deadline, future in self.pending:
            if deadline > now:
                loop.call_later(deadline - now, self._watch)
                return
            if not future.done():
                future.set_exception(TimeoutError("the limits Redis did not answer in time"))
        self._watching = False

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            _, future = self.pending.popleft()
            if future.done():
                continue  # it timed out, or its caller went away
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RespError(str(reply)))
                if str(reply).startswith("READONLY") and self.lost is None:
                    # A replica now (a failover demoted it): the next call reconnects,
                    # and with Sentinel, finds the new master.
                    self.lost = ConnectionResetError("the limits Redis is read-only now")
                    self.transport.close()
            else:
                future.set_result(reply)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("the limits Redis closed the connection")
        while self.pending:
            _, future = self.pending.popleft()
            if not future.done():
                future.set_exception(ConnectionError(str(self.lost)))


class RespClient:
    def __init__(self, url: str, *, timeout: float) -> None:
        self._sentinel: SentinelSet | None = None
        if is_sentinel_url(url):
            self._sentinel = found = sentinel_set(url)
            # The data node's address comes from the Sentinels; the rest as a URL's.
            url = f"{'rediss' if found.ssl else 'redis'}://sentinel/{found.db}"
        parts = urlsplit(url)
        self._unix = parts.path if parts.scheme == "unix" else None
        self._host, self._port = parts.hostname or "localhost", parts.port or 6379
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        if self._sentinel is not None:
            self._username, self._password = self._sentinel.username, self._sentinel.password
        db = parts.path.lstrip("/") if self._unix is None else ""
        self._db = int(db) if db else 0
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        host, port = self._host, self._port
        if self._sentinel is not None:
            host, port = await self._master_address()
        async with asyncio.timeout(self._timeout):
            if self._unix is not None:
                _, protocol = await loop.create_unix_connection(
                    lambda: _Protocol(self._timeout), self._unix)
            else:
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self._timeout), host, port, ssl=self._ssl)
        self._protocol = protocol
        if self._password is not None:
            credentials = ((self._username, self._password) if self._username
                           else (self._password,))
            await self.call("AUTH", *credentials)
        if self._db:
            await self.call("SELECT", self._db)
        if self._sentinel is not None:
            # A Sentinel's answer may lag a failover by a moment: only a server that
            # says it is the master is used (what the Sentinel clients' guide asks).
            role = await self.call("ROLE")
            if not role or role[0] != b"master":
                await self.close()
                raise ConnectionError(f"{host}:{port} is not the master (yet)")
        return protocol

    async def _master_address(self) -> tuple[str, int]:
        """The master's address, from the first Sentinel that knows it."""
        assert self._sentinel is not None
        found = self._sentinel
        problem: BaseException | None = None
        for host, port in found.sentinels:
            try:
                async with asyncio.timeout(self._timeout):
                    reader, writer = await asyncio.open_connection(
                        host, port, ssl=self._ssl)
                    try:
                        if found.sentinel_password is not None:
                            await _ask(reader, writer, "AUTH", *(
                                (found.sentinel_username, found.sentinel_password)
                                if found.sentinel_username else (found.sentinel_password,)))
                        reply = await _ask(reader, writer, "SENTINEL",
                                           "get-master-addr-by-name", found.service)
                    finally:
                        writer.close()
            except (OSError, TimeoutError, RespError) as exc:
                problem = exc
                continue
            if reply:
                return reply[0].decode(), int(reply[1])
            problem = ConnectionError(f"this Sentinel does not know {found.service!r}")
        raise ConnectionError(f"no Sentinel gave the master of {found.service!r}: {problem!r}")

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            # One connection attempt however many calls are waiting for it.
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future) -> None:
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the waiters got it

    async def call(self, *args):
        """One command's reply; raises RespError, ConnectionError, OSError, TimeoutError."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connection()
        return await protocol.send(hiredis.pack_command(args))

    def submit(self, *args) -> asyncio.Future:
        """`call` without a coroutine when connected: a future of the reply."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            return asyncio.ensure_future(self.call(*args))
        return protocol.send(hiredis.pack_command(args))

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *args):
    """One command on a plain stream (the Sentinels': a few calls per connection made)."""
    writer.write(hiredis.pack_command(args))
    parser = hiredis.Reader()
    while (reply := parser.gets()) is False:
        data = await reader.read(65536)
        if not data:
            raise ConnectionResetError("the Sentinel closed the connection")
        parser.feed(data)
    if isinstance(reply, hiredis.ReplyError):
        raise RespError(str(reply))
    return reply


class Script:
    """A Lua script called by its SHA1 (EVALSHA), sent in full (EVAL) when the server
    does not have it yet (a restart, a flush of scripts)."""

    def __init__(self, client: RespClient, source: str) -> None:
        import hashlib

        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: tuple):
        try:
            return await self._client.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self._client.call("EVAL", self._source, len(keys), *keys, *args)

    def submit(self, keys: list[str], args: tuple) -> asyncio.Future:
        """The call without a coroutine: a future of the reply (for work nobody waits
        on, like settlements)."""
        answer = asyncio.get_running_loop().create_future()

        def evalsha_done(sent: asyncio.Future) -> None:
            exc = None if sent.cancelled() else sent.exception()
            if isinstance(exc, RespError) and str(exc).startswith("NOSCRIPT"):
                self._client.submit("EVAL", self._source, len(keys), *keys,
                                    *args).add_done_callback(eval_done)
            else:
                eval_done(sent)

        def eval_done(sent: asyncio.Future) -> None:
            if answer.done():
                return
            if sent.cancelled():
                answer.cancel()
            elif sent.exception() is not None:
                answer.set_exception(sent.exception())
            else:
                answer.set_result(sent.result())

        self._client.submit("EVALSHA", self._sha, len(keys), *keys,
                            *args).add_done_callback(evalsha_done)
        return answer

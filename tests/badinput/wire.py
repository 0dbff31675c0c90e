"""A small HTTP/1.1 client over raw asyncio sockets, for requests no well-behaved client
sends (bad request lines, CR/LF in header values, invalid UTF-8, lying lengths).

Keep-alive: a connection is reused until the server closes it or says `connection:
close`, so a thousand requests cost a handful of TCP handshakes.
"""

import asyncio
from dataclasses import dataclass

# Longest answer head or body read: every answer of the gateway is far smaller.
_READ_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: the server closed the connection without answering; -1: no answer in time
    headers: dict[str, str]  # names lowercased, the last of repeated headers
    body: bytes


DROPPED = Answer(0, {}, b"")
TIMED_OUT = Answer(-1, {}, b"")


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=_READ_LIMIT)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass
        self._reader = self._writer = None

    async def exchange(self, raw: bytes, *, head: bool = False,
                       timeout: float = 10.0) -> Answer:
        """Send one complete request as bytes and read its answer. The connection is
        closed afterwards when the server asked for it or went away."""
        reader, writer = await self._open()
        writer.write(raw)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # refused before the whole body was sent: the answer may be there
        try:
            answer = await asyncio.wait_for(_read_answer(reader, head=head), timeout)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            await self.close()
            return DROPPED
        except TimeoutError:
            await self.close()
            return TIMED_OUT
        if answer.headers.get("connection", "").lower() == "close":
            await self.close()
        return answer


async def _read_answer(reader: asyncio.StreamReader, *, head: bool) -> Answer:
    block = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = block[:-4].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head or status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        return Answer(status, headers, b"".join(chunks))
    if "content-length" in headers:
        return Answer(status, headers, await reader.readexactly(int(headers["content-length"])))
    return Answer(status, headers, await reader.read())


def request_bytes(method: str, target: str | bytes, headers: list[tuple[bytes, bytes]],
                  body: bytes = b"", *, content_length: bool = True) -> bytes:
    """A request as bytes: `Host` first, then `headers` as given (nothing checked or
    escaped), then Content-Length unless the headers give their own framing."""
    if isinstance(target, str):
        target = target.encode()
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    framed = any(name.lower() in (b"content-length", b"transfer-encoding")
                 for name, _ in headers)
    if content_length and not framed and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body

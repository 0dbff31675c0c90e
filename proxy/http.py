"""Small ASGI helpers for the /v1 app: reading a body, answering, request ids."""

import os
from urllib.parse import quote

from cognitude.errors import error_body

JSON = b"application/json"
SSE = b"text/event-stream"


def header_value(text: str) -> bytes:
    """`text` as a response header value. Names that reach headers (a model as the client
    asked for it, a provider's or a route's name) may hold anything JSON can; a NUL or a
    newline in a header makes the server drop the connection instead of answering, so
    every character outside printable ASCII is percent-encoded."""
    if text.isascii() and text.isprintable():
        return text.encode()
    return "".join(c if c.isascii() and c.isprintable() else quote(c, safe="")
                   for c in text).encode()


def new_request_id() -> str:
    """32 random hex digits, like a uuid4 but a fifth of its cost (0.35 vs 1.7 µs)."""
    return os.urandom(16).hex()


class BodyTooLarge(Exception):
    pass


async def read_body(receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away while sending")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send, status: int, body: bytes, headers: list, content_type: bytes = JSON):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def respond_error(send, status: int, message: str, headers: list, *,
                        code: str | None = None, param: str | None = None) -> None:
    await respond(send, status, error_body(status, message, code=code, param=param), headers)

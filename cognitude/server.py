"""uvicorn's HTTP protocol (httptools) with the gateway's error shape below the app.

A request the HTTP parser cannot read (a NUL or a bare CR in a header, a bad request
line, lying lengths) never reaches the ASGI app: uvicorn answers it itself, as
`text/plain` "Invalid HTTP request received.". OpenAI's SDKs and every client of
/v1 read errors as `{"error": {...}}`, so this class answers those in that shape,
and refuses a request head (request line and headers) over `MAX_HEAD_BYTES` with a
431, which plain uvicorn would read to any size. Run it with

    uvicorn cognitude.asgi:application --http cognitude.server:HttpProtocol

uvicorn takes a protocol class by import path for `--http`; only its
`send_400_response` and two parser callbacks are overridden, so the rest (keep-alive,
flow control, pipelining, upgrades) is uvicorn's own. Without the flag the gateway
works the same, with uvicorn's text answers for what its parser refuses.
"""

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cognitude.errors import error_body

# Larger than any head a client of the gateway sends (the OpenAI SDK's is under 1 KiB;
# nginx's default limit for one header line is 8 KiB, Node's for the head 16 KiB).
MAX_HEAD_BYTES = 64 * 1024


class HeadTooLarge(Exception):
    pass


class HttpProtocol(HttpToolsProtocol):
    _head_bytes = 0
    _head_too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            # Raised inside a parser callback, it comes out of feed_data as the parser's
            # own error, which uvicorn answers through send_400_response.
            raise HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            status = 431
            body = error_body(431, f"The request line and headers are over {MAX_HEAD_BYTES} "
                              "bytes", code="request_header_fields_too_large")
        else:
            status = 400
            body = error_body(400, "Invalid HTTP request: the server could not parse it",
                              code="invalid_http_request")
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            body,
        ])
        self.transport.write(b"".join(content))
        self.transport.close()

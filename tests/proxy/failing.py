"""An upstream that fails on demand, over a real socket: the fake upstream's faults are
asked for in the request's text, which every target of a route receives alike, so a
route whose first target fails and second answers needs an upstream of its own.

`FailingUpstream.mode` says what every request gets until changed:
  "ok"      an OpenAI chat completion (JSON, or SSE chunks ending in [DONE])
  "500"     a 500 with an OpenAI error body (any status: "502", "503", "404", "400" ...)
  "429"     a 429 with Retry-After: `retry_after`
  "hang"    nothing for `hang_seconds`, then the answer "ok" would give
  "break"   a 200 stream (or JSON body) that is cut before its first byte of data
  "break-1" a 200 stream cut after its first chunk
It counts the requests that reached it.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fakeupstream.testing import free_port


class FailingUpstream:
    def __init__(self) -> None:
        self.mode = "500"
        self.retry_after = 1
        self.hang_seconds = 5.0
        self.requests = 0
        self.models: list[str] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # /v1/models
                upstream._count("")
                self._json(200, {"object": "list", "data": [
                    {"id": "failing-model", "object": "model", "created": 0,
                     "owned_by": "failing"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream._count(body.get("model", ""))
                mode = upstream.mode
                if mode == "hang":
                    time.sleep(upstream.hang_seconds)
                    mode = "ok"
                if mode.isdigit():
                    headers = {"Retry-After": str(upstream.retry_after)} if mode == "429" else {}
                    self._json(int(mode), {"error": {"message": f"failing upstream: {mode}",
                                                     "type": "server_error", "param": None,
                                                     "code": None}}, headers)
                elif body.get("stream"):
                    self._stream(body, mode)
                elif mode == "break":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"id": "cut')
                    self.close_connection = True
                else:
                    self._json(200, completion(body))

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict, mode: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = stream_events(body)
                if mode == "break":
                    events = []
                elif mode == "break-1":
                    events = events[:1]
                for event in events:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                if mode.startswith("break"):
                    # No terminating chunk: the client sees the connection cut.
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _count(self, model: str) -> None:
        with self._lock:
            self.requests += 1
            self.models.append(model)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def completion(body: dict) -> dict:
    return {"id": "chatcmpl-failing", "object": "chat.completion", "created": 1,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "from the failing upstream"},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


def stream_events(body: dict) -> list[bytes]:
    head = {"id": "chatcmpl-failing", "object": "chat.completion.chunk", "created": 1,
            "model": body.get("model")}

    def chunk(**fields) -> bytes:
        return b"data: " + json.dumps({**head, **fields}).encode() + b"\n\n"

    return [
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "from the "},
                        "logprobs": None, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {"content": "failing upstream"},
                        "logprobs": None, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]),
        chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 4,
                                 "total_tokens": 7}),
        b"data: [DONE]\n\n",
    ]

"""Real receivers on loopback for the alert tests: an HTTP server (Slack, Teams,
PagerDuty, webhooks) and an SMTP server (aiosmtpd), each in a thread of the test
process, on a free port. The HTTP one can be stopped and started again on the same
port, so that "the receiver is down" is a closed port, not a simulation."""

import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """Answers each POST with the next of `answers` (status, body), then `default`."""

    port: int = field(default_factory=free_port)
    answers: list[tuple[int, str]] = field(default_factory=list)
    default: tuple[int, str] = (200, "ok")
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[Received]:
        """What the receiver answered 2xx to: what a user would say arrived."""
        return [r for r, status in zip(self.received, self._statuses, strict=True)
                if 200 <= status < 300]

    def __post_init__(self) -> None:
        self._statuses: list[int] = []
        self._lock = threading.Lock()

    def start(self) -> "HttpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status, text = (receiver.answers.pop(0) if receiver.answers
                                    else receiver.default)
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    receiver._statuses.append(status)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         kwargs={"poll_interval": 0.05}).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def start_in(self, seconds: float) -> threading.Thread:
        """Come up after `seconds` (the receiver is down until then)."""
        def later() -> None:
            time.sleep(seconds)
            self.start()
        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        return thread


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_RCPT(self, server, session, envelope, address, options) -> str:  # noqa: N802
        if address.startswith("nobody@"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's)
        self.messages.append(message_from_bytes(envelope.original_content,
                                                policy=policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """An SMTP server on loopback that keeps every message it accepts; it refuses
    mailboxes named nobody@ (a permanent 550)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = _Inbox()
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def start(self) -> "SmtpReceiver":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        return self.inbox.messages

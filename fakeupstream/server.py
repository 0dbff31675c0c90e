"""Serve the fake upstream with uvicorn, tuned so that it is never the bottleneck."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from fakeupstream.app import make_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001


class DropBrokenResponseNotice(logging.Filter):
    """Hide uvicorn's error for responses left unfinished: break_after faults do it on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of both entry points (`python -m fakeupstream`, manage.py)."""
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="wait this long before each /v1/ answer")


def serve(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, latency_ms: float = 0) -> None:
    """Run the fake upstream until interrupted (uvloop, httptools, no access log)."""
    config = uvicorn.Config(
        make_app(latency_ms=latency_ms),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    # uvicorn.Config sets up logging, so the filter goes on afterwards.
    logging.getLogger("uvicorn.error").addFilter(DropBrokenResponseNotice())
    print(
        f"fakeupstream listening on http://{host}:{port} (latency {latency_ms:g} ms)",
        flush=True,
    )
    uvicorn.Server(config).run()

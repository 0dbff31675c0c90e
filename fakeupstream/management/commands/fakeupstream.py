from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fakeupstream.server import DEFAULT_HOST, DEFAULT_PORT, serve


class Command(BaseCommand):
    help = "Run the OpenAI-compatible fake upstream (uvicorn, uvloop, httptools)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=DEFAULT_HOST)
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument(
            "--latency-ms",
            type=float,
            default=0.0,
            help="wait this long before each /v1/ answer",
        )

    def handle(self, *args: Any, host: str, port: int, latency_ms: float, **options: Any) -> None:
        serve(host=host, port=port, latency_ms=latency_ms)

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fakeupstream.server import add_arguments, serve


class Command(BaseCommand):
    help = "Run the OpenAI-compatible fake upstream (uvicorn, uvloop, httptools)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, host: str, port: int, latency_ms: float, **options: Any) -> None:
        serve(host=host, port=port, latency_ms=latency_ms)

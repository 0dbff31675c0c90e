"""``python -m fakeupstream --port P [--host H] [--latency-ms N]``, without Django."""

import argparse

from fakeupstream.server import add_arguments, serve


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fakeupstream", description="Run the OpenAI-compatible fake upstream."
    )
    add_arguments(parser)
    args = parser.parse_args()
    serve(host=args.host, port=args.port, latency_ms=args.latency_ms)


if __name__ == "__main__":
    main()

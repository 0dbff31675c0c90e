"""``python -m fakeupstream --port P [--host H] [--latency-ms N]``, without Django."""

import argparse

from fakeupstream.server import DEFAULT_HOST, DEFAULT_PORT, serve


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fakeupstream", description="Run the OpenAI-compatible fake upstream."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="wait this long before each /v1/ answer",
    )
    args = parser.parse_args()
    serve(host=args.host, port=args.port, latency_ms=args.latency_ms)


if __name__ == "__main__":
    main()

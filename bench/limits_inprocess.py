"""What the limits cost a request in process: `RequestLimits` as the gateway calls it
(`take`, then `take_upstream`, then `settle`: a miss's three steps), one request at a
time, against the real limits Redis, for a key with no limits and for a key with the
benchmark's limits and daily budget (`run.BENCH_LIMITS`, far above what this uses).

    .venv/bin/python bench/limits_inprocess.py [--requests N] [--concurrency C --hold-ms H]

No HTTP, no cache, no upstream: the difference between the two keys is the limits'
own CPU per miss, which the load benchmark's req/s (a noisy machine's) only brackets.
With --concurrency, C misses are in flight at once, each for H ms between its call
upstream and its settlement (so blocks end with requests in flight, as under load).
DATABASE_URL defaults to the cognitude_bench database, COGNITUDE_LIMITS_REDIS_URL to
redis://127.0.0.1:6379/13.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from run import BENCH_BUDGET_USD, BENCH_LIMITS, ensure_database  # noqa: E402

DATABASE_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/cognitude_bench"
LIMITS_REDIS_DEFAULT = "redis://127.0.0.1:6379/13"
ROUNDS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per key and round")
    parser.add_argument("--concurrency", type=int, default=1, help="misses in flight")
    parser.add_argument("--hold-ms", type=float, default=0.0,
                        help="how long each is in flight (its call upstream)")
    return parser.parse_args()


def setup() -> tuple[int, dict[str, int]]:
    """A fresh organization with a plain key and a limited one: (org id, key ids)."""
    os.environ.setdefault("DATABASE_URL", DATABASE_URL_DEFAULT)
    os.environ.setdefault("COGNITUDE_LIMITS_REDIS_URL", LIMITS_REDIS_DEFAULT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    from organizations.models import ApiKey

    def manage(*args: str) -> str:
        out = io.StringIO()
        call_command(*args, stdout=out)
        return out.getvalue().strip().splitlines()[-1].split()[-1]

    call_command("migrate", "--noinput", verbosity=0)
    slug = manage("create_org", f"limits in process {uuid.uuid4().hex[:8]}")
    manage("create_api_key", "--org", slug, "--name", "plain")
    limited = manage("create_api_key", "--org", slug, "--name", "limited")
    call_command("set_limits", "--org", slug, "--key", limited, *BENCH_LIMITS,
                 stdout=io.StringIO())
    call_command("set_budget", "--org", slug, "--key", limited, "--period", "day",
                 "--usd", BENCH_BUDGET_USD, stdout=io.StringIO())
    found = list(ApiKey.objects.filter(organization__slug=slug))
    ids = {k.name: k.id for k in found}
    return found[0].organization_id, {"plain": ids["plain"], "limited": ids["limited"]}


async def one_miss(org_id: int, key_id: int, i: int, hold_s: float = 0.0) -> None:
    from ratelimit.gate import RequestLimits

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {i}"}]}
    limits = RequestLimits()
    refused = await limits.take(org_id=org_id, key_id=key_id, endpoint="chat/completions",
                                body=body, body_size=80, lease=uuid.uuid4().hex)
    assert refused is None, refused
    refused = await limits.take_upstream([(b"content-type", b"application/json")])
    assert refused is None, refused
    if hold_s:
        await asyncio.sleep(hold_s)
    limits.settle(model="gpt-4o-mini", status=200, prompt_tokens=20, completion_tokens=10)


async def measure(org_id: int, keys: dict[str, int], args: argparse.Namespace
                  ) -> dict[str, list[float]]:
    hold_s, each = args.hold_ms / 1000, args.requests // args.concurrency

    async def flow(key_id: int, first: int) -> None:
        for i in range(first, first + each):
            await one_miss(org_id, key_id, i, hold_s)

    for key_id in keys.values():  # warm: plans, prices, the Redis connection
        for i in range(1000):
            await one_miss(org_id, key_id, i)
    found: dict[str, list[float]] = {name: [] for name in keys}
    for _ in range(ROUNDS):
        for name, key_id in keys.items():
            started = time.process_time()
            await asyncio.gather(*(flow(key_id, c * each) for c in range(args.concurrency)))
            await asyncio.sleep(0.3)  # the last blocks end and settle: theirs too
            found[name].append((time.process_time() - started) * 1e6 / (each * args.concurrency))
    return found


def main() -> int:
    args = parse_args()
    org_id, keys = setup()
    found = asyncio.run(measure(org_id, keys, args))
    for name, rounds in found.items():
        print(f"{name:8} CPU per miss: " + ", ".join(f"{us:.1f} µs" for us in rounds))
    added = sorted(b - a for a, b in zip(found["plain"], found["limited"], strict=True))
    print(f"the limits add {added[len(added) // 2]:.1f} µs of CPU per miss (median of "
          f"{ROUNDS} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

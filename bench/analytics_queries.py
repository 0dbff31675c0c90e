"""How fast the analytics reads are on a million request records.

    .venv/bin/python bench/analytics_queries.py                 # 1,000,000 rows, 30 days
    .venv/bin/python bench/analytics_queries.py --rows 200000 --keep

It creates a scratch database (default cognitude_analytics_bench on the PostgreSQL of
BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432), migrates it, loads the
rows for one organization over the last 30 days with COPY, runs VACUUM ANALYZE (the
state autovacuum keeps a live table in), then times every selector, the
recommendations and /cache/stats' query: each run --repeat times, best and median
printed. The database is dropped at the end unless --keep.
"""

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432")

# (model asked for, model the upstream names, share of traffic)
MODELS = [
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.45),
    ("gpt-4o", "gpt-4o-2024-08-06", 0.25),
    ("claude-sonnet-4-20250514", "claude-sonnet-4-20250514", 0.10),
    ("text-embedding-3-small", "text-embedding-3-small", 0.12),
    ("my-finetune", "my-finetune", 0.08),  # unpriced
]
# cache outcome -> share
OUTCOMES = [("hit_redis", 0.40), ("hit_postgres", 0.05), ("hit_coalesced", 0.01),
            ("miss", 0.47), ("bypass", 0.06), ("none", 0.01)]
ENDPOINTS = {"text-embedding-3-small": "embeddings"}
COLUMNS = ("request_id", "organization_id", "api_key_id", "endpoint", "model_requested",
           "model_used", "provider", "cache_outcome", "status", "error_type",
           "prompt_tokens", "completion_tokens", "cost", "saved_cost", "latency_ms",
           "upstream_latency_ms", "streamed", "cache_bypassed", "cache_key", "created_at")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default="cognitude_analytics_bench")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a kept database (skip creating and loading)")
    return parser.parse_args()


def admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def setup_django(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")
    import django

    django.setup()


def seeded_organization(args: argparse.Namespace, *, slug: str, name: str):
    """Django set up on the scratch database `args.database`, and the organization
    `slug` with `args.rows` records over `args.days` days (plus a tenth as many for a
    second organization); with `args.reuse`, the ones an earlier `--keep` run left."""
    if not args.reuse:
        admin_execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin_execute(f'CREATE DATABASE "{args.database}"')
    setup_django(args.database)

    from django.core.management import call_command
    from django.db import connection

    from organizations.models import Organization
    from organizations.services import api_key_create, organization_create

    if args.reuse:
        return Organization.objects.get(slug=slug)
    call_command("migrate", verbosity=0)
    org = organization_create(name=name, slug=slug)
    keys = [api_key_create(organization=org, name=f"key {n}").api_key for n in range(5)]
    other = organization_create(name="Bench other", slug="bench-other")
    seconds = load(org, keys, args.rows, args.days)
    load(other, [api_key_create(organization=other, name="k").api_key],
         args.rows // 10, args.days)
    print(f"loaded {args.rows:,} rows (+{args.rows // 10:,} for a second org) "
          f"in {seconds:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE analytics_requestlog")
    return org


def scratch_drop(args: argparse.Namespace) -> None:
    """Drop the scratch database unless `--keep` asked to keep it."""
    from django.db import connection

    connection.close()
    if not args.keep:
        admin_execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def pick(rng: random.Random, table: list[tuple]) -> tuple:
    roll, total = rng.random(), 0.0
    for entry in table:
        total += entry[-1]
        if roll < total:
            return entry
    return table[-1]


def load(org, keys, rows: int, days: int) -> float:
    from django.db import connection

    from analytics.prices import PriceBook, request_costs

    prices = PriceBook.load()
    rng = random.Random(org.pk)  # repeatable, and distinct request ids per org
    now = datetime.now(UTC)
    span = days * 86400
    started = time.perf_counter()
    with connection.cursor() as cursor, cursor.cursor.copy(
        f"COPY analytics_requestlog ({', '.join(COLUMNS)}) FROM STDIN"
    ) as copy:
        for i in range(rows):
            asked, used, _ = pick(rng, MODELS)
            outcome = pick(rng, OUTCOMES)[0]
            hit = outcome.startswith("hit_")
            status = 200 if outcome == "none" or rng.random() > 0.02 else 500
            status = 400 if outcome == "none" else status
            prompt = int(rng.lognormvariate(5, 1)) + 1 if status == 200 else 0
            completion = 0 if asked.startswith("text-") or status != 200 else rng.randint(5, 600)
            # In time order, as the pipeline appends them (a range is then a run of
            # neighbouring pages), with a little disorder from batching.
            created = now - timedelta(seconds=span * (1 - i / rows) + rng.random() * 5)
            cost, saved = request_costs(prices=prices, model=used, hit=hit, status=status,
                                        prompt_tokens=prompt, completion_tokens=completion,
                                        at=created)
            latency = rng.lognormvariate(0.5, 0.6) if hit else rng.lognormvariate(6.5, 0.7)
            copy.write_row((
                uuid.UUID(int=rng.getrandbits(128)).hex, org.pk, keys[i % len(keys)].pk,
                ENDPOINTS.get(asked, "chat/completions"), asked, used, "openai", outcome,
                status, "" if status == 200 else "upstream_error", prompt, completion,
                cost, saved, latency, None if hit else latency * 0.95,
                rng.random() < 0.2, outcome == "bypass",
                f"{rng.randrange(200_000):064x}", created,
            ))
    return time.perf_counter() - started


def timed(label: str, repeat: int, call) -> None:
    from django.db import reset_queries

    runs = []
    for _ in range(repeat):
        reset_queries()
        started = time.perf_counter()
        call()
        runs.append((time.perf_counter() - started) * 1000)
    print(f"{label:<52} best {min(runs):8.1f} ms   median {statistics.median(runs):8.1f} ms")


def main() -> None:
    args = parse_args()
    org = seeded_organization(args, slug="bench-analytics", name="Bench analytics")

    from asgiref.sync import async_to_sync

    from analytics.recommendations import recommendations_for
    from analytics.selectors import usage_breakdown, usage_summary, usage_timeseries
    from caching.services import cache_stats

    # Other work on the machine shows up in every number below; say how much there was.
    one, five, fifteen = os.getloadavg()
    print(f"load average (1, 5, 15 min): {one:.2f} {five:.2f} {fifteen:.2f}")
    now = datetime.now(UTC)
    r = args.repeat
    for period, delta in (("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
                          ("30d", timedelta(days=30))):
        start = now - delta
        timed(f"usage_summary {period}", r,
              lambda s=start: usage_summary(organization=org, start=s, end=now))
        interval = "hour" if period != "30d" else "day"
        timed(f"usage_timeseries {period} by {interval}", r,
              lambda s=start, i=interval: usage_timeseries(organization=org, start=s, end=now,
                                                           interval=i))
        for by in ("model", "api_key", "endpoint"):
            timed(f"usage_breakdown {period} by {by}", r,
                  lambda s=start, b=by: usage_breakdown(organization=org, start=s, end=now,
                                                        by=b))
    for days in (7, 30):
        timed(f"recommendations_for days={days}", r,
              lambda d=days: recommendations_for(organization=org, days=d))
    timed("cache_stats (all time)", r, lambda: async_to_sync(cache_stats)(org_id=org.pk))
    one, five, fifteen = os.getloadavg()
    print(f"load average (1, 5, 15 min): {one:.2f} {five:.2f} {fifteen:.2f}")

    scratch_drop(args)


if __name__ == "__main__":
    main()

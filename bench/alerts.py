"""How long one alerts evaluation tick takes: 1,000 rules over organizations holding a
million request records in total (the issue's bound: under 5 s).

    .venv/bin/python bench/alerts.py                   # 100 orgs x 10 rules, 1M rows, 7 days
    .venv/bin/python bench/alerts.py --days 1 --keep   # the same records over one day
    .venv/bin/python bench/alerts.py --reuse           # time a kept database again

It creates a scratch database (default cognitude_alerts_bench on the PostgreSQL of
BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432), migrates it, makes the
organizations (each with its three default rules, a daily budget and seven more rules:
spend over 1 h and over a day for one model, error rate and p95 latency over a day,
cache hit rate over 1 h, limit rejections over 5 min, no traffic), loads the records in
SQL (the rollup triggers run as on any insert), VACUUM ANALYZE, then runs --ticks ticks
of alerts.evaluation.alerts_evaluate and prints each one's time and queries. Budgets
are read from the records (no limits Redis): the slower path.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432")
CHUNK = 200_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--ticks", type=int, default=3)
    parser.add_argument("--database", default="cognitude_alerts_bench")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database")
    return parser.parse_args()


def admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


# Seven rules besides the three defaults: (name, metric, comparison, threshold, window, model)
RULES = [
    ("spend 1h", "spend_usd", "gt", "50", 3600, ""),
    ("spend 24h gpt-4o", "spend_usd", "gt", "500", 86400, "gpt-4o"),
    ("errors 24h", "error_rate_pct", "gt", "5", 86400, ""),
    ("p95 24h", "p95_latency_ms", "gt", "2000", 86400, ""),
    ("hit rate 1h", "cache_hit_rate_pct", "lt", "20", 3600, ""),
    ("rejections 5m", "limit_rejections", "gt", "100", 300, ""),
    ("no traffic", "no_traffic_minutes", "gte", "30", 300, ""),
]


def seed(args: argparse.Namespace) -> None:
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection

    from alerts.services import RuleSpec, alert_rule_create
    from organizations.services import organization_create
    from ratelimit.models import Budget

    call_command("migrate", verbosity=0)
    org_ids = []
    for i in range(args.orgs):
        org = organization_create(name=f"Bench {i}")
        Budget.objects.create(organization=org, period="day", limit_usd=Decimal("100"))
        for name, metric, comparison, threshold, window, model in RULES:
            alert_rule_create(organization=org, spec=RuleSpec(
                name=name, metric=metric, comparison=comparison, threshold=threshold,
                window_seconds=window, model=model))
        org_ids.append(org.pk)
    with connection.cursor() as cursor:
        # Whatever NOT NULL columns the record has beyond these get their type's zero.
        cursor.execute("""
            SELECT column_name, data_type FROM information_schema.columns
            WHERE table_name = 'analytics_requestlog' AND is_nullable = 'NO'
              AND column_default IS NULL AND column_name <> 'id'""")
        given = {"request_id", "organization_id", "endpoint", "model_requested", "model_used",
                 "provider", "cache_outcome", "status", "error_type", "prompt_tokens",
                 "completion_tokens", "cost", "saved_cost", "latency_ms", "created_at"}
        zeros = {name: ("''" if "char" in kind or kind == "text" else
                        "false" if kind == "boolean" else "0")
                 for name, kind in cursor.fetchall() if name not in given}
        columns = ", ".join([*sorted(given), *zeros])
        for start in range(0, args.rows, CHUNK):
            stop = min(args.rows, start + CHUNK)
            values = {
                "cache_outcome": "(ARRAY['hit_redis','miss','miss','bypass'])[1 + g % 4]",
                "completion_tokens": "50", "cost": "0.0004", "created_at":
                    f"now() - random() * interval '{args.days} days'",
                "endpoint": "'chat/completions'",
                "error_type": "CASE WHEN g % 50 = 0 THEN 'rate_limit_rpm' ELSE '' END",
                "latency_ms": "50 + random() * 900",
                "model_requested": "(ARRAY['gpt-4o-mini','gpt-4o'])[1 + g % 2]",
                "model_used": "(ARRAY['gpt-4o-mini','gpt-4o'])[1 + g % 2]",
                "organization_id": "(%(orgs)s::bigint[])[1 + g %% %(n)s]",
                "prompt_tokens": "200", "provider": "'default'",
                "request_id": "md5(g::text)", "saved_cost": "0",
                "status": "CASE WHEN g % 50 = 0 THEN 429 WHEN g % 37 = 0 THEN 500 ELSE 200 END",
            }
            selected = ", ".join([*(values[c].replace("%", "%%")
                                    if c != "organization_id" else values[c]
                                    for c in sorted(given)), *zeros.values()])
            cursor.execute(f"INSERT INTO analytics_requestlog ({columns}) SELECT {selected} "
                           f"FROM generate_series({start}, {stop - 1}) g",
                           {"orgs": org_ids, "n": len(org_ids)})
            print(f"  {stop:,} records", flush=True)
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/{args.database}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    args = parse_args()
    if not args.reuse:
        admin_execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin_execute(f'CREATE DATABASE "{args.database}"')
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{args.database}"
    os.environ["REDIS_URL"] = os.environ["COGNITUDE_LIMITS_REDIS_URL"] = ""
    os.environ["CELERY_BROKER_URL"] = ""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitude.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alerts.evaluation import alerts_evaluate
    from alerts.models import AlertRule
    from analytics.models import RequestLog

    if not args.reuse:
        started = time.perf_counter()
        seed(args)
        print(f"seeded in {time.perf_counter() - started:.1f}s")
    print(f"{AlertRule.objects.filter(enabled=True).count():,} rules, "
          f"{RequestLog.objects.count():,} records, "
          f"{RequestLog.objects.values('organization').distinct().count()} organizations")
    times = []
    for tick in range(args.ticks):
        with CaptureQueriesContext(connection) as queries:
            result = alerts_evaluate()
        times.append(result.seconds)
        print(f"tick {tick + 1}: {result.seconds:.3f}s, {len(queries)} queries, "
              f"{len(result.transitions)} transitions")
    print(f"median tick {statistics.median(times):.3f}s over {args.ticks} "
          f"(bound: 5 s for 1,000 rules)")
    connection.close()
    if not args.keep:
        admin_execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


if __name__ == "__main__":
    main()

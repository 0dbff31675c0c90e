"""How long the dashboard's pages take on 30 days of a busy organization.

    .venv/bin/python bench/dashboard_page.py                  # 1,000,000 rows, 30 days
    .venv/bin/python bench/dashboard_page.py --reuse --keep   # again, on the kept database

Loads a scratch database the way bench/analytics_queries.py does (same rows, COPY,
VACUUM ANALYZE), logs a member in and times whole requests through Django's test
client: middleware, session, the selectors, the recommendations and the template, i.e.
the server time of one page view. Each page runs --repeat times cold (Django's cache
emptied first: the first member to open the page this minute) and --repeat times warm
(the same minute, another member or a reload); best and median are printed. The
overview's recommendations arrive in a second request (top-recommendations), timed on
its own. The database is dropped at the end unless --keep.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from bench.analytics_queries import scratch_drop, seeded_organization  # noqa: E402

PAGES = [
    ("overview 24h", ""),
    ("  its recommendations 24h", "top-recommendations/"),
    ("overview 7d", "?period=7d"),
    ("overview 30d", "?period=30d"),
    ("  its recommendations 30d", "top-recommendations/?period=30d"),
    ("usage 30d by model", "usage/?period=30d"),
    ("usage 30d by api_key", "usage/?period=30d&by=api_key"),
    ("usage.csv 30d by model", "usage.csv?period=30d"),
    ("recommendations 30d", "recommendations/?period=30d"),
    ("cache", "cache/"),
    ("keys", "keys/"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default="cognitude_dashboard_bench")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a kept database (skip creating and loading)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    org = seeded_organization(args, slug="bench-dashboard", name="Bench dashboard")

    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.test import Client

    from organizations.services import membership_set
    user, _ = get_user_model().objects.get_or_create(username="bench-owner")
    membership_set(organization=org, user=user, role="owner")

    client = Client(HTTP_HOST="localhost")
    client.force_login(user)

    def timed(url: str) -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, (url, response.status_code)
        return elapsed

    print(f"{'':<28} {'cold best':>10} {'cold median':>12} {'warm best':>10} "
          f"{'warm median':>12}   (ms)")
    for label, path in PAGES:
        url = f"/orgs/{org.slug}/{path}"
        cold = []
        for _ in range(args.repeat):
            cache.clear()
            cold.append(timed(url))
        warm = [timed(url) for _ in range(args.repeat)]
        print(f"{label:<28} {min(cold):10.1f} {statistics.median(cold):12.1f} "
              f"{min(warm):10.1f} {statistics.median(warm):12.1f}")

    scratch_drop(args)


if __name__ == "__main__":
    main()

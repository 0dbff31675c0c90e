"""Soak: the chaos suite's stack (two gateways, two Celery workers, private Redis, broker
and PostgreSQL) under a steady mixed load for a long time, no faults, watching for
leaks.

    .venv/bin/python bench/soak.py [--minutes 20] [--rate 50] [--warmup-minutes 2]

Every --every seconds it samples each process's RSS (/proc/PID/status) and open file
descriptors (/proc/PID/fd), the clients connected to each Redis (INFO clients) and the
PostgreSQL sessions (pg_stat_activity). It passes when, after the warm-up, no process's
RSS grew 10 % or more, the descriptor and connection counts stayed flat (within a
small slack for what comes and goes), no request failed, every 2xx request is recorded
once, and the spools are empty at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.chaos import (  # noqa: E402
    TEMPLATE_DATABASE_DEFAULT,
    Load,
    Stack,
    control_fake_upstream,
    percentile,
    private_database,
    provision,
    start_fake_upstream,
    start_stack,
    stop_fake_upstream,
    wait_for_books,
    warm_hits,
)
from fakeupstream.testing import HOST  # noqa: E402

RSS_GROWTH_LIMIT = 0.10
# Descriptors and connections that come and go with the traffic (a keep-alive socket
# opened a moment ago, a connection in its pool's hands): growth beyond this is a leak.
FD_SLACK = 8
CONNECTION_SLACK = 4


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_clients(port: int) -> int:
    client = redis.Redis(host=HOST, port=port, socket_timeout=2)
    try:
        # Less this one.
        return int(client.info("clients")["connected_clients"]) - 1
    finally:
        client.close()


def pg_sessions(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=3) as db:
        name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
        return db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                          "AND pid <> pg_backend_pid()", (name,)).fetchone()[0]


def sample(stack: Stack) -> dict[str, int]:
    found: dict[str, int] = {}
    for name, pid in stack.pids().items():
        found[f"{name} rss_kb"] = rss_kb(pid)
        found[f"{name} fds"] = fds(pid)
    found["redis-hot clients"] = redis_clients(stack.hot.port)
    found["redis-broker clients"] = redis_clients(stack.broker.server.port)
    found["postgres sessions"] = pg_sessions(stack.database_url)
    return found


def verdicts(samples: list[tuple[float, dict[str, int]]], warmup: float) -> list[str]:
    """One line per measure: value at the end of the warm-up, at the end, verdict."""
    after = [values for at, values in samples if at >= warmup]
    if len(after) < 2:
        return ["not enough samples after the warm-up"]
    lines = []
    half = after[:max(1, len(after) // 2)]
    for measure in after[0]:
        # Medians of three at each end: one sample taken mid-collection says little.
        start = statistics.median(values[measure] for values in after[:3])
        end = statistics.median(values[measure] for values in after[-3:])
        peak = max(values[measure] for values in after)
        if measure.endswith("rss_kb"):
            growth = end / start - 1 if start else 0.0
            ok = growth < RSS_GROWTH_LIMIT
            # The hot tier's Redis grows with what it caches (every miss is an entry for
            # 24 h): its memory is data, bounded by maxmemory, not a leak.
            verdict = ("data" if measure.startswith("redis-hot") else
                       "OK" if ok else "FAIL")
            lines.append(f"| {measure} | {start / 1024:.1f} MiB | {end / 1024:.1f} MiB | "
                         f"{peak / 1024:.1f} MiB | {growth:+.1%} | {verdict} |")
        else:
            # Descriptors and connections follow the concurrency's high-water mark (each
            # pool keeps what a burst made it open), so a leak is a count that keeps
            # setting new highs: the end above the first half's peak.
            slack = FD_SLACK if measure.endswith("fds") else CONNECTION_SLACK
            first_peak = max(values[measure] for values in half)
            ok = end <= first_peak + slack
            lines.append(f"| {measure} | {start:g} | {end:g} | {peak:g} (first half "
                         f"{first_peak:g}) | {end - start:+g} | {'OK' if ok else 'FAIL'} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rate", type=float, default=50, help="requests/s (default 50)")
    parser.add_argument("--warmup-minutes", type=float, default=2)
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument("--template-database", default=os.environ.get(
        "CHAOS_TEMPLATE_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or TEMPLATE_DATABASE_DEFAULT)
    args = parser.parse_args()
    cluster, database_url = private_database(args.template_database)
    upstream = start_fake_upstream()
    try:
        org_id, api_key = provision(database_url, upstream[1])
    except BaseException:
        stop_fake_upstream(upstream[0])
        cluster.destroy()
        raise
    stack = start_stack(database_url=database_url, org_id=org_id, api_key=api_key,
                        upstream=upstream, pg=cluster)
    samples: list[tuple[float, dict[str, int]]] = []
    try:
        control_fake_upstream(stack.upstream_url, latency_ms=30, chunk_delay_ms=5)
        warm_hits(stack)
        load = Load(stack, rate=args.rate).start()
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < args.minutes * 60:
                samples.append((elapsed, sample(stack)))
                values = samples[-1][1]
                webs = " ".join(f"{values[f'web{i} rss_kb'] / 1024:.0f}MiB/"
                                f"{values[f'web{i} fds']}fd" for i in range(len(stack.webs)))
                print(f"{elapsed / 60:5.1f} min  {len(load.samples)} requests  web {webs}  "
                      f"redis {values['redis-hot clients']}  pg {values['postgres sessions']}",
                      flush=True)
                time.sleep(args.every)
        finally:
            requests = load.stop()
        samples.append((time.monotonic() - started, sample(stack)))
        wanted = {s.request_id for s in requests if s.ok and s.request_id}
        records = wait_for_books(stack, wanted, timeout=120)
        spooled = stack.spooled_bytes()
        samples.append((time.monotonic() - started, sample(stack)))
    finally:
        stack.close()
    failed = [s for s in requests if not s.ok]
    missing = sum(1 for rid in wanted if records.get(rid, 0) == 0)
    doubled = sum(1 for rid in wanted if records.get(rid, 0) > 1)
    took = [s.took for s in requests if s.ok]
    reasons: dict[str, int] = {}
    for s in failed:
        reasons[s.error or f"HTTP {s.status}"] = reasons.get(s.error or f"HTTP {s.status}", 0) + 1
    print()
    print(f"{len(requests)} requests in {args.minutes:g} min at {args.rate:g}/s: "
          f"{len(failed)} failed, p50 {percentile(took, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(took, 0.99) * 1000:.0f} ms; 2xx records missing {missing}, "
          f"doubled {doubled}; spool left {spooled} bytes")
    if failed:
        print("failures: " + ", ".join(f"{n}× {reason}" for reason, n in
                                       sorted(reasons.items(), key=lambda x: -x[1])))
        # When: a stall of the machine shows as failures bunched in a few seconds.
        minutes: dict[int, int] = {}
        for s in failed:
            minute = int((s.sent - requests[0].sent) // 60)
            minutes[minute] = minutes.get(minute, 0) + 1
        print("failures by minute: " + ", ".join(f"{m}: {n}" for m, n in sorted(minutes.items())))
    print()
    print(f"| measure (after {args.warmup_minutes:g} min warm-up) | start | end | peak | "
          "change | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    lines = verdicts(samples[:-1], args.warmup_minutes * 60)
    print("\n".join(lines))
    # The last sample is after the load stopped: what is left open when idle.
    idle = samples[-1][1]
    print()
    print("idle after the run: " + ", ".join(f"{k} {v}" for k, v in idle.items()
                                            if not k.endswith("rss_kb")))
    ok = (not failed and not missing and not doubled and not spooled
          and not any(line.endswith("FAIL |") for line in lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

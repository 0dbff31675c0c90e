"""Load benchmark: wrk against the fake upstream and the Cognitude gateway.

    .venv/bin/python bench/run.py [--scenario NAME ...] [--duration S] [--connections C]

The gateway gets CPU 0 to itself; wrk and the fake upstream share CPU 1, so the
gateway's numbers are what one core of it can do. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as a script, only bench/ is on the path; the project root holds fakeupstream.
sys.path.insert(0, str(PROJECT_DIR))

from fakeupstream.testing import (  # noqa: E402 (needs the path above)
    HOST,
    control_fake_upstream,
    fake_upstream_stats,
    free_port,
    start_fake_upstream,
    stop_fake_upstream,
)

GATEWAY_CPU = 0
CLIENT_CPU = 1  # wrk and the fake upstream
WRK_SCRIPT = PROJECT_DIR / "bench" / "bench.lua"
CHAT_PATH = "/v1/chat/completions"
PROVIDER_KEY = "sk-fake-bench-provider"
CACHE_HEADER = "x-cognitude-cache"
FALLBACK_HEADER = "x-cognitude-fallback"
# The routes provision() makes: two healthy targets; a dead first target, then a healthy.
TWO_TARGET_ROUTE = "bench-route"
FALLBACK_ROUTE = "bench-fallback"
# A route scenario may be at most this much slower than the plain miss of the same run.
ROUTE_TOLERANCE = 0.05
# A scenario with limits and a budget on: at most this much slower than the same without.
LIMITS_TOLERANCE = 0.10
# Smart routing (model auto, policy on): the gateway CPU it may add per request to the
# same scenario asking for a model (issue 11's bound for a hit; a miss is assessed too).
ROUTING_CPU_BUDGET_US = 50.0
# The limited key's limits (never reached in a run: it is their cost that is measured,
# every one of them checked and settled) and its daily budget in USD.
BENCH_LIMITS = ("--rpm", "2000000000", "--tpm", "2000000000", "--rpd", "2000000000",
                "--concurrent", "10000")
BENCH_BUDGET_USD = "1000000"
GATEWAY_ENV_DEFAULTS = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/cognitude_bench",
}
# The Redis servers the run starts for itself, as docker-compose runs them: the hot tier
# (LRU) and the limits (never evicts). On the client core: sharing the gateway's core,
# their work (the limits' scripts above all) would be measured as the gateway's slowness;
# in production they have cores of their own.
REDIS_SERVERS = {"REDIS_URL": "allkeys-lru", "COGNITUDE_LIMITS_REDIS_URL": "noeviction"}
BROKER_URL_DEFAULT = "amqp://guest:guest@127.0.0.1:5672//"
READY_TIMEOUT_S = 60.0
WARMUP_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 300.0
WARMUP_RUN_S = 3
QUIET_POLL_S = 0.25
QUIET_TIMEOUT_S = 10.0

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
# "{n}" is replaced by bench.lua with a per-request counter when bodies must be unique.
UNIQUE_MESSAGES = [
    MESSAGES[0],
    {"role": "user", "content": "Question {n}: what is the capital of France?"},
]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    via_gateway: bool = True
    stream: bool = False
    unique: bool = False
    connections: int | None = None  # None: the --connections option
    # False runs on a gateway started with COGNITUDE_REQUEST_LOG=false: what analytics
    # costs the hot path is the difference with the same scenario recorded.
    record_requests: bool = True
    model: str = "gpt-4o-mini"
    # Before the run, send misses until the route's first target is skipped (breaker open).
    open_breaker: bool = False
    # The scenario of the same run this one must stay within `tolerance` of (req/s).
    compare_to: str | None = None
    tolerance: float = ROUTE_TOLERANCE
    # Set: the check is on the gateway's CPU per request instead (at most this many µs
    # more than `compare_to`), which the client core's load does not move as it moves req/s.
    cpu_budget_us: float | None = None
    # Sent with the key that has rate limits and a budget (provision()).
    limited: bool = False

    def body(self) -> str:
        payload: dict[str, Any] = {"model": self.model, "temperature": 0}
        payload["messages"] = UNIQUE_MESSAGES if self.unique else MESSAGES
        if self.stream:
            payload["stream"] = True
        return json.dumps(payload)

    @property
    def expects_hits(self) -> bool:
        return self.via_gateway and not self.unique


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "upstream",
            "wrk straight at the fake upstream: the baseline",
            via_gateway=False,
        ),
        Scenario(
            "upstream-c1",
            "the baseline at concurrency 1: what a direct call takes",
            via_gateway=False,
            connections=1,
        ),
        Scenario("hit", "the same body every time: cache hits after a warm-up"),
        Scenario("hit-c1", "cache hits at concurrency 1: latency", connections=1),
        Scenario("hit-nolog", "cache hits with request records off (analytics' cost)",
                 record_requests=False),
        Scenario("hit-limited", "cache hits with rate limits and a budget on the key",
                 limited=True, compare_to="hit", tolerance=LIMITS_TOLERANCE),
        Scenario("hit-routed", "cache hits for model auto, smart routing on (the classifier "
                 "and the decision on every hit)", model="auto", compare_to="hit",
                 cpu_budget_us=ROUTING_CPU_BUDGET_US),
        Scenario("miss", "a unique body every time: every request goes upstream", unique=True),
        Scenario("miss-routed", "misses for model auto, smart routing on", unique=True,
                 model="auto", compare_to="miss", cpu_budget_us=ROUTING_CPU_BUDGET_US),
        Scenario("miss-c1", "misses at concurrency 1: what the gateway adds to a call",
                 unique=True, connections=1),
        Scenario("miss-limited", "misses with rate limits and a budget on the key",
                 unique=True, limited=True, compare_to="miss", tolerance=LIMITS_TOLERANCE),
        Scenario("miss-route", "misses through a two-target route (the first answers)",
                 unique=True, model=TWO_TARGET_ROUTE, compare_to="miss"),
        Scenario("miss-fallback", "misses whose route's first target refuses connections "
                 "(its breaker open)", unique=True, model=FALLBACK_ROUTE, open_breaker=True,
                 compare_to="miss"),
        Scenario(
            "stream-hit",
            "stream: true, the same body: hits replayed as SSE",
            stream=True,
        ),
        Scenario(
            "stream-miss",
            "stream: true, unique bodies: relayed streams",
            stream=True,
            unique=True,
        ),
    )
}


@dataclass(frozen=True)
class Result:
    scenario: str
    requests: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    check: str
    # The gateway's own CPU time per request: unlike req/s, it does not move when the
    # client core is busy too (the worker shares it with wrk).
    cpu_us_per_request: float | None = None
    # The Redis servers' CPU time per request (both of them).
    redis_us_per_request: float | None = None
    # Against its `compare_to` scenario over several rounds: the median of each round's
    # own comparison (req/s change, gateway CPU added).
    change: float | None = None
    added_cpu_us: float | None = None


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def medians(rounds: dict[str, list[Result]]) -> list[Result]:
    """Each scenario's median round; and against the scenario it is compared with, the
    median of the rounds' own comparisons (the two ran one after the other in each
    round): load that comes and goes between rounds moves both alike, where comparing
    the two medians would compare different moments of the machine."""
    out = []
    for name, runs in rounds.items():
        median = sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]
        base = rounds.get(SCENARIOS[name].compare_to or "")
        pairs = list(zip(runs, base, strict=True)) if base else []
        if pairs and all(b.requests_per_s for _, b in pairs):
            median = replace(median, change=_median(
                [r.requests_per_s / b.requests_per_s - 1 for r, b in pairs]))
            if all(r.cpu_us_per_request and b.cpu_us_per_request for r, b in pairs):
                median = replace(median, added_cpu_us=_median(
                    [r.cpu_us_per_request - b.cpu_us_per_request for r, b in pairs]))
        out.append(median)
    return out


@dataclass(frozen=True)
class Gateway:
    process: subprocess.Popen[bytes]
    base_url: str
    api_key: str
    limited_api_key: str
    ready_s: float
    idle_rss_kb: int

    def key_for(self, scenario: Scenario) -> str:
        return self.limited_api_key if scenario.limited else self.api_key


class BenchError(Exception):
    """A step failed; the message says which and why."""


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command]


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed: run `sudo apt-get install -y wrk` and try again")
    print("wrk is not installed: installing it with apt-get", flush=True)
    subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL, check=False)
    subprocess.run(["apt-get", "install", "-y", "wrk"], stdout=subprocess.DEVNULL, check=False)
    if not shutil.which("wrk"):
        raise BenchError("installing wrk with apt-get failed")


def http_request(
    base_url: str,
    method: str,
    path: str,
    *,
    body: str | None = None,
    api_key: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        return (
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            content,
        )
    finally:
        connection.close()


def run_wrk(
    url: str, scenario: Scenario, *, duration: int, connections: int, api_key: str
) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_BODY": scenario.body(),
        "BENCH_KEY": api_key,
        "BENCH_UNIQUE": "1" if scenario.unique else "0",
        # A fresh nonce per run keeps unique bodies unique even against an old cache.
        "BENCH_NONCE": f"{scenario.name}-{time.time_ns():x}",
    }
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    completed = subprocess.run(
        pinned(CLIENT_CPU, command),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return dict(json.loads(line.removeprefix("BENCH_RESULT ")))
    raise BenchError(
        f"wrk gave no result (exit {completed.returncode}): {completed.stderr.strip()}"
    )


def wrk_errors(wrk: dict[str, Any]) -> int:
    """Non-2xx answers (wrk counts status >= 400) plus socket errors and timeouts."""
    return sum(int(wrk[kind]) for kind in ("status", "connect", "read", "write", "timeout"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds() -> float:
    """User plus system CPU time so far of the Redis servers the run started."""
    return sum(cpu_seconds(pid) for pid in _redis_pids)


def to_result(scenario: Scenario, wrk: dict[str, Any], check: str,
              cpu_s: float | None = None, redis_s: float | None = None) -> Result:
    def per_request(seconds: float | None) -> float | None:
        return seconds / wrk["requests"] * 1e6 if seconds and wrk["requests"] else None

    return Result(
        cpu_us_per_request=per_request(cpu_s),
        redis_us_per_request=per_request(redis_s),
        scenario=scenario.name,
        requests=wrk["requests"],
        requests_per_s=wrk["requests"] / (wrk["duration_us"] / 1e6),
        p50_ms=wrk["p50_us"] / 1000,
        p90_ms=wrk["p90_us"] / 1000,
        p99_ms=wrk["p99_us"] / 1000,
        errors=wrk_errors(wrk),
        check=check,
    )


def upstream_calls(upstream_url: str) -> int:
    """Calls the gateway made upstream: the fake counts them per provider key."""
    return int(fake_upstream_stats(upstream_url)["by_token"].get(PROVIDER_KEY, 0))


def warm_up(gateway: Gateway, scenario: Scenario) -> str:
    """Send the scenario's body until the gateway answers from its cache; '' if it does."""
    body = scenario.body()
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    outcome = ""
    while time.monotonic() < deadline:
        status, headers, _ = http_request(
            gateway.base_url, "POST", CHAT_PATH, body=body, api_key=gateway.key_for(scenario)
        )
        outcome = headers.get(CACHE_HEADER, "")
        if status == 200 and outcome.upper().startswith("HIT"):
            return ""
        # A miss may be stored after the response (streams are stored when complete).
        time.sleep(0.05)
    return f"FAIL (no HIT after warm-up; last {CACHE_HEADER}: {outcome or 'absent'})"


def open_breaker(gateway: Gateway, scenario: Scenario) -> str:
    """Send misses until the route's first target is skipped; '' once it is."""
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    fallback, n = "", 0
    while time.monotonic() < deadline:
        n += 1
        body = scenario.body().replace("{n}", f"breaker-{time.time_ns()}-{n}")
        status, headers, _ = http_request(
            gateway.base_url, "POST", CHAT_PATH, body=body, api_key=gateway.api_key
        )
        fallback = headers.get(FALLBACK_HEADER, "")
        if status == 200 and fallback.endswith("=open"):
            return ""
    return f"FAIL (first target never skipped; last {FALLBACK_HEADER}: {fallback or 'absent'})"


def wait_for_quiet_upstream(upstream_url: str) -> None:
    """Until the requests the gateway still had in flight when wrk stopped have reached
    the fake upstream: counted in the next scenario, they would fail a hit check."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    last = fake_upstream_stats(upstream_url)["requests_total"]
    while time.monotonic() < deadline:
        time.sleep(QUIET_POLL_S)
        stats = fake_upstream_stats(upstream_url)
        if stats["requests_total"] == last and stats["in_flight"] == 0:
            return
        last = stats["requests_total"]


def run_scenario(
    scenario: Scenario,
    *,
    upstream_url: str,
    gateway: Gateway | None,
    duration: int,
    connections: int,
) -> Result:
    control_fake_upstream(upstream_url)  # 0 ms latency, whatever an earlier run left
    if not scenario.via_gateway:
        wrk = run_wrk(
            upstream_url + CHAT_PATH,
            scenario,
            duration=duration,
            connections=connections,
            api_key="",
        )
        return to_result(scenario, wrk, "-")
    assert gateway is not None
    wait_for_quiet_upstream(upstream_url)
    warm_failure = warm_up(gateway, scenario) if scenario.expects_hits else ""
    if scenario.open_breaker:
        warm_failure = open_breaker(gateway, scenario)
    before = upstream_calls(upstream_url)
    cpu_before, redis_before = cpu_seconds(gateway.process.pid), redis_cpu_seconds()
    wrk = run_wrk(
        gateway.base_url + CHAT_PATH,
        scenario,
        duration=duration,
        connections=connections,
        api_key=gateway.key_for(scenario),
    )
    cpu_s = cpu_seconds(gateway.process.pid) - cpu_before
    redis_s = redis_cpu_seconds() - redis_before
    calls = upstream_calls(upstream_url) - before
    if scenario.expects_hits:
        # Hits must never reach the upstream.
        check = warm_failure or ("OK" if calls == 0 else "FAIL") + f" ({calls} upstream calls)"
    else:
        # Every answered miss must have reached the upstream.
        answered = int(wrk["requests"]) - wrk_errors(wrk)
        check = warm_failure or (
            ("OK" if calls >= answered else "FAIL") + f" ({calls} upstream calls)")
    return to_result(scenario, wrk, check, cpu_s, redis_s)


def manage(env: dict[str, str], *arguments: str) -> str:
    """Run a management command; returns the last line of its output."""
    completed = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchError(f"manage.py {' '.join(arguments)} failed:\n{completed.stderr.strip()}")
    lines = completed.stdout.strip().splitlines()
    return lines[-1].strip() if lines else ""


def ensure_database(database_url: str) -> None:
    """Create the benchmark's PostgreSQL database if it does not exist yet."""
    if not database_url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg
    from psycopg import sql

    params = psycopg.conninfo.conninfo_to_dict(database_url)
    name = str(params["dbname"])
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as connection:
        if not connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


_redis_pids: list[int] = []
_redis_urls: dict[str, str] = {}


# Local servers the gateway talks to on every miss, moved to the client core for the run
# (and back after): left to the scheduler, PostgreSQL's backends ran on the gateway's core
# at ~6% of it, at moments that differed between a scenario and the one it is compared with.
CLIENT_CORE_SERVERS = ("postgres", "beam.smp")


@contextmanager
def servers_on_client_core() -> Iterator[None]:
    """PostgreSQL's and RabbitMQ's processes on this machine (all their threads; new
    backends inherit the postmaster's) on the client core, as the run's Redis servers;
    their affinity restored after. Without the right to (another user's), as they were."""
    moved: dict[int, set[int]] = {}
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        try:
            if (task / "comm").read_text().strip() not in CLIENT_CORE_SERVERS:
                continue
            tid = int(task.name)
            before = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {CLIENT_CPU})
            moved[tid] = before
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to move
    try:
        yield
    finally:
        for tid, before in moved.items():
            try:
                os.sched_setaffinity(tid, before)
            except OSError:
                continue  # a backend that ended


@contextmanager
def redis_servers() -> Iterator[dict[str, str]]:
    """The run's own Redis servers on the client core: their URLs by setting."""
    import redis

    processes, urls = [], {}
    try:
        for setting, policy in REDIS_SERVERS.items():
            port = free_port()
            processes.append(subprocess.Popen(pinned(CLIENT_CPU, [
                "redis-server", "--port", str(port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--maxmemory", "256mb", "--maxmemory-policy", policy]),
                stdout=subprocess.DEVNULL))
            urls[setting] = f"redis://{HOST}:{port}/0"
            client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.2)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise BenchError(f"redis-server on port {port} did not start") from None
                    time.sleep(0.02)
            client.close()
        _redis_pids[:] = [process.pid for process in processes]
        yield urls
    finally:
        _redis_pids.clear()
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def gateway_env(tasks: str, record_requests: bool) -> dict[str, str]:
    env = {**GATEWAY_ENV_DEFAULTS, **_redis_urls, **os.environ}
    env["COGNITUDE_REQUEST_LOG"] = "true" if record_requests else "false"
    # "worker" is the production shape: the gateway only publishes event batches and
    # a Celery worker (on the client core) writes them; "inline" is the embedded mode.
    env["CELERY_BROKER_URL"] = (
        os.environ.get("CELERY_BROKER_URL", BROKER_URL_DEFAULT) if tasks == "worker" else ""
    )
    # The fake upstream listens on 127.0.0.1, which the gateway refuses by default.
    env["COGNITUDE_ALLOW_PRIVATE_UPSTREAMS"] = "true"
    return env


def provision(env: dict[str, str], upstream_url: str) -> tuple[str, str]:
    """A fresh organization (so an empty cache) whose provider is the fake upstream.

    Returns two of the organization's API keys: one free, one with limits and a budget.
    """
    ensure_database(env["DATABASE_URL"])
    manage(env, "migrate", "--noinput")
    slug = manage(env, "create_org", f"bench {time.strftime('%Y-%m-%d %H:%M:%S')} {os.getpid()}")
    api_key = manage(env, "create_api_key", "--org", slug)
    # OpenAI's convention: the base URL includes /v1, as in https://api.openai.com/v1.
    base_url = upstream_url + "/v1"
    manage(
        env,
        "set_provider",
        "--org",
        slug,
        "--kind",
        "openai",
        "--base-url",
        base_url,
        "--api-key",
        PROVIDER_KEY,
    )
    # The route scenarios' providers: two on the fake upstream (its key, so the check
    # counts their calls), one on a port nothing listens on.
    for name, url in (("bench-a", base_url), ("bench-b", base_url),
                      ("bench-dead", f"http://{HOST}:{free_port()}/v1")):
        manage(env, "add_provider", "--org", slug, "--name", name, "--kind", "openai",
               "--base-url", url, "--api-key", PROVIDER_KEY)
    manage(env, "set_route", "--org", slug, "--model", TWO_TARGET_ROUTE,
           "--target", "bench-a:gpt-4o-mini", "--target", "bench-b:gpt-4o-mini")
    manage(env, "set_route", "--org", slug, "--model", FALLBACK_ROUTE,
           "--target", "bench-dead:gpt-4o-mini", "--target", "bench-a:gpt-4o-mini")
    # The routed scenarios' policy: `auto` goes to a tier by complexity.
    manage(env, "set_routing_policy", "--org", slug, "--mode", "on",
           "--tier", "simple=gpt-4o-mini", "--tier", "standard=gpt-4.1-mini",
           "--tier", "complex=gpt-4o")
    limited = manage(env, "create_api_key", "--org", slug, "--name", "limited")
    manage(env, "set_limits", "--org", slug, "--key", limited, *BENCH_LIMITS)
    manage(env, "set_budget", "--org", slug, "--key", limited, "--period", "day",
           "--usd", BENCH_BUDGET_USD)
    return api_key, limited


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def request_records(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT count(*) FROM analytics_requestlog").fetchone()[0]


def queued_events(env: dict[str, str]) -> int:
    """Messages waiting in the broker's task queue (Celery's default, which every task
    here uses)."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    with Connection(env["CELERY_BROKER_URL"]) as connection:
        try:
            return connection.default_channel.queue_declare(
                queue="celery", passive=True).message_count
        except ChannelError:
            return 0  # no queue: nothing was ever published to it


def drain_events(env: dict[str, str]) -> None:
    """Run a Celery worker until the events the gateway published are all written.

    It runs after the scenarios, not during them: on this 2-core machine a worker would
    share the client core with wrk, and its inserts would be measured as the gateway's
    slowness. In production the worker has cores (or machines) of its own."""
    if not env["CELERY_BROKER_URL"]:
        return
    before = request_records(env["DATABASE_URL"])
    command = [sys.executable, "-m", "celery", "-A", "cognitude", "worker", "--loglevel",
               "warning"]
    process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env)
    try:
        # Done when the queue is empty and the records have stopped growing (what the
        # worker holds unacknowledged is in neither): records alone stood still while
        # the worker started, and the run ended with every event still queued.
        count, stable_since = before, time.monotonic()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = request_records(env["DATABASE_URL"])
            if now != count:
                count, stable_since = now, time.monotonic()
            if time.monotonic() - stable_since >= 3 and not queued_events(env):
                break
        left = queued_events(env)
        print(f"worker: wrote {count - before} request records after the run"
              + (f"; {left} event messages still queued after {DRAIN_TIMEOUT_S:.0f} s"
                 if left else ""))
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def running_gateway(upstream_url: str, tasks: str, record_requests: bool) -> Iterator[Gateway]:
    env = gateway_env(tasks, record_requests)
    keys = provision(env, upstream_url)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "cognitude.asgi:application",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    command += [
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    try:
        yield from _serve(command, env, keys, port)
    finally:
        drain_events(env)


def _serve(command: list[str], env: dict[str, str], keys: tuple[str, str],
           port: int) -> Iterator[Gateway]:
    started = time.monotonic()
    # taskset execs the command, so the pid is the gateway's own (for VmRSS).
    process = subprocess.Popen(pinned(GATEWAY_CPU, command), cwd=PROJECT_DIR, env=env)
    try:
        base_url = f"http://{HOST}:{port}"
        ready_s = wait_for_gateway(process, base_url, keys[0]) - started
        yield Gateway(process, base_url, *keys, ready_s, vm_rss_kb(process.pid))
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_gateway(process: subprocess.Popen[bytes], base_url: str, api_key: str) -> float:
    """Poll GET /v1/models with the key until it succeeds; returns when it did."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"the gateway exited with status {process.returncode} before answering"
            )
        try:
            if http_request(base_url, "GET", "/v1/models", api_key=api_key)[0] == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    raise BenchError(f"the gateway did not answer GET /v1/models within {READY_TIMEOUT_S:.0f} s")


def compared(results: list[Result]) -> list[Result]:
    """Scenarios with their req/s against the scenario they must keep up with."""
    by_name = {r.scenario: r for r in results}
    out = []
    for r in results:
        base = by_name.get(SCENARIOS[r.scenario].compare_to or "")
        if base is not None and base.requests_per_s:
            change = (r.change if r.change is not None
                      else r.requests_per_s / base.requests_per_s - 1)
            verdict = "OK" if change >= -SCENARIOS[r.scenario].tolerance else "FAIL"
            cpu = ""
            if r.cpu_us_per_request and base.cpu_us_per_request:
                added = (r.added_cpu_us if r.added_cpu_us is not None
                         else r.cpu_us_per_request - base.cpu_us_per_request)
                cpu = f", {added:+.0f} µs cpu"
                budget = SCENARIOS[r.scenario].cpu_budget_us
                if budget is not None:
                    verdict = "OK" if added <= budget else "FAIL"
            r = replace(r, check=f"{r.check}; {verdict} ({change:+.1%} req/s{cpu} vs "
                                 f"{base.scenario})")
        out.append(r)
    return out


def print_table(results: list[Result]) -> None:
    print()
    columns = ("req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "cpu µs/req", "redis µs/req")
    print(f"{'scenario':<14}" + "".join(f"{name:>9}" for name in columns[:-2])
          + "".join(f"{name:>13}" for name in columns[-2:]) + "  check")
    for r in results:
        numbers = f"{r.requests_per_s:>9.0f}{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}{r.p99_ms:>9.2f}"
        cpu = "".join(f"{value:>13.0f}" if value else f"{'-':>13}"
                      for value in (r.cpu_us_per_request, r.redis_us_per_request))
        print(f"{r.scenario:<14}{numbers}{r.errors:>9}{cpu}  {r.check}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="repeatable; default: all, in table order",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per scenario (default 10)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="for throughput scenarios (default 32)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the gateway scenarios this many times in turn and keep each one's "
        "median, and a comparison the median of the rounds' own (default 1); 3 or more on "
        "a machine with other load",
    )
    parser.add_argument(
        "--tasks",
        choices=("worker", "inline"),
        default="worker",
        help="worker (default): events go through RabbitMQ to a Celery worker on the "
        "client core, as in production; inline: the embedded mode, tasks in the gateway",
    )
    return parser.parse_args()


def run_all(
    chosen: list[Scenario],
    args: argparse.Namespace,
    upstream_url: str,
    results: list[Result],
) -> None:
    """Run the scenarios, appending to results as they finish: the upstream baseline
    first, then the gateway scenarios against one gateway process."""

    def run(scenario: Scenario, gateway: Gateway | None) -> None:
        print(f"{scenario.name}: {scenario.description}", flush=True)
        connections = scenario.connections or args.connections
        result = run_scenario(
            scenario,
            upstream_url=upstream_url,
            gateway=gateway,
            duration=args.duration,
            connections=connections,
        )
        results.append(result)

    for scenario in chosen:
        if not scenario.via_gateway:
            run(scenario, None)
    for record_requests in (True, False):
        gateway_scenarios = [scenario for scenario in chosen if scenario.via_gateway
                             and scenario.record_requests == record_requests]
        if not gateway_scenarios:
            continue
        with running_gateway(upstream_url, args.tasks, record_requests) as gateway:
            rss_mib = gateway.idle_rss_kb / 1024
            print(f"gateway: ready in {gateway.ready_s:.2f} s, idle RSS {rss_mib:.1f} MiB")
            # Unmeasured misses first, so that the first scenario does not pay for the
            # process's first requests (connections opened, code paths warmed) alone.
            run_wrk(gateway.base_url + CHAT_PATH, SCENARIOS["miss"], duration=WARMUP_RUN_S,
                    connections=args.connections, api_key=gateway.api_key)
            # Several rounds take turns, so a scenario and the one it is compared with
            # see the same machine (other load comes and goes): each keeps its median.
            rounds: dict[str, list[Result]] = {}
            for _ in range(args.rounds):
                for scenario in gateway_scenarios:
                    run(scenario, gateway)
                    done = results.pop()
                    rounds.setdefault(scenario.name, []).append(done)
                    if args.rounds > 1:
                        cpu = f", {done.cpu_us_per_request:.0f} µs CPU/request" if (
                            done.cpu_us_per_request) else ""
                        print(f"  round {len(rounds[scenario.name])}: "
                              f"{done.requests_per_s:,.0f} req/s{cpu}", flush=True)
            results += medians(rounds)


def main() -> int:
    args = parse_args()
    chosen = [
        scenario for name, scenario in SCENARIOS.items() if name in (args.scenario or SCENARIOS)
    ]
    if (os.cpu_count() or 1) < 2:
        print(
            "the benchmark needs 2 CPUs: the gateway on CPU 0, wrk and the fake upstream on CPU 1"
        )
        return 1
    results: list[Result] = []
    try:
        ensure_wrk()
        upstream, upstream_url = start_fake_upstream(cpu=CLIENT_CPU)
        try:
            with servers_on_client_core(), redis_servers() as urls:
                _redis_urls.update(urls)
                run_all(chosen, args, upstream_url, results)
        finally:
            stop_fake_upstream(upstream)
    except BenchError as failure:
        print(f"FAILED: {failure}")
        print_table(results)
        return 1
    results = compared(results)
    print_table(results)
    return 0 if all("FAIL" not in r.check and r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

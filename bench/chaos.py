"""The fault suite: steady mixed load on two gateways and two Celery workers while the
things they depend on fail, one at a time and then two together; then the books.

    .venv/bin/python bench/chaos.py [--rate 100] [--fault NAME ...] [--quick]

Everything runs on loopback, privately: its own hot-tier redis-server, its own Redis
broker (noeviction, fsync'd AOF), its own PostgreSQL cluster (initdb/pg_ctl, a copy of
a migrated database), the fake upstream, two uvicorn gateways and two solo-pool Celery
workers. The machine's PostgreSQL, Redis and RabbitMQ are read from (the template
database) and never stopped. A bounded asyncio client (aiohttp) sends hits, misses and
streams at a steady rate, round robin over the two gateways, and records every answer's
X-Request-Id and status. For each fault the table gives the requests sent while it
lasted, the failed ones, p99 before and during it, the recovery time, and the
reconciliation: every 2xx request id found exactly once in RequestLog, and every miss's
answer in the cold tier (CacheEntry) once.

The same harness runs a fast subset in `make test` (tests/chaos/) and the soak
(bench/soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as a script, only bench/ is on the path.
sys.path.insert(0, str(PROJECT_DIR))

import aiohttp  # noqa: E402
import psycopg  # noqa: E402

from fakeupstream.testing import (  # noqa: E402
    HOST,
    control_fake_upstream,
    free_port,
    start_fake_upstream,
    stop_fake_upstream,
    stop_process,
)
from tests.live import RedisServer, start_redis  # noqa: E402
from tests.workers import RedisBroker, redis_broker_create  # noqa: E402

CHAT_PATH = "/v1/chat/completions"
PROVIDER_KEY = "sk-fake-chaos-provider"
TEMPLATE_DATABASE_DEFAULT = "postgres://postgres@127.0.0.1:5432/cognitude_chaos_template"
HIT_PROMPTS = 20
# What a "slow" answer is, for the recovery time: this many times the p99 before the
# fault, and never under SLOW_FLOOR_S (a loaded 2-core machine's p99 moves by itself).
SLOW_FACTOR = 3.0
SLOW_FLOOR_S = 0.25
# The request mix, one slot a request: hits, misses, streamed misses, streamed hits.
MIX = ("hit",) * 11 + ("miss",) * 5 + ("stream-miss",) * 2 + ("stream-hit",) * 2


# --- The processes ---------------------------------------------------------------------

def _wait_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{url}/v1/none", timeout=1)
        except urllib.error.HTTPError:
            return  # any HTTP answer: it serves
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class Web:
    """One gateway process on a port and spool directory of its own, which it keeps
    across a restart (as a container with a volume would): a restarted gateway finds
    what its predecessor spooled."""

    port: int
    env: dict[str, str]
    spool: Path
    process: subprocess.Popen | None = None
    # Set from SIGTERM until it serves again: what a load balancer's health check knows.
    draining: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def launch(self) -> None:
        # Its warnings (the hot tier's breaker opening, say) go to a file next to its
        # spool: interleaved with the table they would bury it.
        log = open(self.spool.parent / f"{self.spool.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "cognitude.asgi:application", "--host", HOST,
             "--port", str(self.port), "--loop", "uvloop", "--http", "httptools",
             "--no-access-log", "--log-level", "warning",
             # As an orchestrator would: drain for at most this long after SIGTERM.
             "--timeout-graceful-shutdown", "20"],
            cwd=PROJECT_DIR, env={**self.env, "COGNITUDE_SPOOL_DIR": str(self.spool)},
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()  # the child has its own copy

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        _wait_http(self.url, self.process, timeout)
        self.draining = False

    def sigterm(self, timeout: float = 30) -> tuple[int | None, float]:
        """SIGTERM and wait: (exit status, seconds it took to drain and exit)."""
        assert self.process is not None
        started = time.monotonic()
        self.draining = True
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class Worker:
    """A solo-pool Celery worker: its tasks run in the process a fault SIGKILLs."""

    env: dict[str, str]
    name: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:6]}")
    process: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)

    def launch(self) -> None:
        self._ready.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cognitude", "worker", "-n",
             f"{self.name}-{uuid.uuid4().hex[:4]}@%h", "-P", "solo", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=PROJECT_DIR, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        process = self.process

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line)
                del self.log[:-500]
                if " ready." in line:
                    self._ready.set()

        threading.Thread(target=read, daemon=True).start()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError("a celery worker did not start:\n" + "".join(self.log[-30:]))

    def kill_mid_task(self, timeout: float = 3.0) -> bool:
        """SIGKILL while it is on a CPU (a batch being written), or at `timeout`; True if
        it was caught running."""
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat")
        caught, deadline = False, time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "R":
                    caught = True
                    break
            except OSError:
                break
            time.sleep(0.002)
        self.process.kill()
        self.process.wait()
        return caught

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class Stack:
    upstream_process: subprocess.Popen
    upstream_url: str
    hot: RedisServer
    broker: RedisBroker
    database_url: str
    org_id: int
    api_key: str
    webs: list[Web]
    workers: list[Worker]
    workdir: Path
    pg: object | None = None  # tests.pgcluster.PgCluster when the suite owns the database

    def pids(self) -> dict[str, int]:
        """Every process of ours that a soak watches, by name."""
        named = {"upstream": self.upstream_process.pid, "redis-hot": self.hot.process.pid,
                 "redis-broker": self.broker.server.process.pid}
        for i, web in enumerate(self.webs):
            if web.process is not None:
                named[f"web{i}"] = web.process.pid
        for i, worker in enumerate(self.workers):
            if worker.process is not None:
                named[f"worker{i}"] = worker.process.pid
        return named

    def spooled_bytes(self) -> int:
        return sum(path.stat().st_size for web in self.webs for path in web.spool.glob("*")
                   if path.is_file())

    def close(self) -> None:
        for web in self.webs:
            web.stop()
        for worker in self.workers:
            worker.stop()
        stop_fake_upstream(self.upstream_process)
        self.hot.stop()
        self.broker.delete()
        if self.pg is not None:
            self.pg.destroy()


def base_env(*, database_url: str, hot: RedisServer, broker: RedisBroker) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cognitude.settings",
           "DATABASE_URL": database_url, "REDIS_URL": hot.url,
           "COGNITUDE_LIMITS_REDIS_URL": hot.url, "CELERY_BROKER_URL": broker.url,
           "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "true"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def start_stack(*, database_url: str, org_id: int, api_key: str, upstream: tuple | None = None,
                pg: object | None = None, webs: int = 2, workers: int = 2,
                extra_env: dict[str, str] | None = None) -> Stack:
    """Everything but the database (given: a private cluster's, or a test's) and the
    organization (given, its default provider pointing at `upstream`, or at a fake
    upstream started here)."""
    workdir = Path(tempfile.mkdtemp(prefix="cognitude-chaos-"))
    upstream_process, upstream_url = upstream or start_fake_upstream()
    hot = start_redis()
    broker = redis_broker_create(workdir / "broker")
    env = {**base_env(database_url=database_url, hot=hot, broker=broker), **(extra_env or {})}
    stack = Stack(upstream_process, upstream_url, hot, broker, database_url, org_id, api_key,
                  [Web(free_port(), env, workdir / f"spool{i}") for i in range(webs)],
                  [Worker({**env, "REDIS_URL": ""}) for _ in range(workers)], workdir, pg)
    try:
        for process in (*stack.webs, *stack.workers):
            process.launch()  # all at once: each takes seconds of Django start-up
        for process in (*stack.webs, *stack.workers):
            process.wait_ready()
    except BaseException:
        stack.close()
        raise
    return stack


# --- The load --------------------------------------------------------------------------

@dataclass(slots=True)
class Sample:
    sent: float  # monotonic
    took: float
    kind: str
    web: int
    status: int  # 0: no answer
    request_id: str = ""
    tier: str = ""
    error: str = ""
    rerouted: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error


def body_for(kind: str, n: int, nonce: str) -> dict:
    if kind.endswith("hit"):
        content = f"chaos hit {n % HIT_PROMPTS}"
    else:
        content = f"chaos miss {nonce} {n}"
    payload = {"model": "gpt-4o-mini", "temperature": 0,
               "messages": [{"role": "user", "content": content}]}
    if kind.startswith("stream"):
        payload["stream"] = True
    return payload


class Load:
    """A steady rate of requests from a thread of its own (its own event loop), so the
    caller may block on faults meanwhile. A request whose connection is refused goes
    once to the next gateway, as a load balancer does with a backend that is not
    listening; so does one that a draining gateway closed the connection under without
    an answer (uvicorn closes idle keep-alive connections at SIGTERM: a request sent on
    one at that moment was never read, and every request it did read it finishes).
    Any other failure is the request's."""

    def __init__(self, stack: Stack, *, rate: float, max_in_flight: int = 400,
                 timeout: float = 30.0) -> None:
        self._stack = stack
        self._rate = rate
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nonce = uuid.uuid4().hex[:10]
        self._counter = itertools.count()
        self.in_flight: dict[int, int] = {}

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout + 10)
        return self.samples

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks: set[asyncio.Task] = set()
            started = time.monotonic()
            for i in itertools.count():
                if self._stop.is_set():
                    break
                due = started + i / self._rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                n = next(self._counter)
                kind = MIX[n % len(MIX)]
                web = n % len(self._stack.webs)
                if len(tasks) >= self._max_in_flight:
                    self.samples.append(Sample(time.monotonic(), 0, kind, web, 0,
                                               error="client: too many in flight"))
                    continue
                task = asyncio.ensure_future(self._one(session, kind, n, web))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=self._timeout + 5)

    async def _one(self, session: aiohttp.ClientSession, kind: str, n: int, web: int) -> None:
        body = body_for(kind, n, self._nonce)
        sent = time.monotonic()
        sample = await self._send(session, kind, body, web, sent)
        if sample.status == 0 and (sample.error.startswith("connect") or (
                self._stack.webs[web].draining and not sample.error.startswith("Timeout"))):
            other = (web + 1) % len(self._stack.webs)
            sample = await self._send(session, kind, body, other, sent)
            sample.rerouted = True
        self.samples.append(sample)

    async def _send(self, session: aiohttp.ClientSession, kind: str, body: dict, web: int,
                    sent: float) -> Sample:
        url = self._stack.webs[web].url + CHAT_PATH
        headers = {"Authorization": f"Bearer {self._stack.api_key}"}
        self.in_flight[web] = self.in_flight.get(web, 0) + 1
        try:
            async with session.post(url, json=body, headers=headers) as response:
                content = await response.read()
                sample = Sample(sent, time.monotonic() - sent, kind, web, response.status,
                                response.headers.get("x-request-id", ""),
                                response.headers.get("x-cognitude-cache-tier", ""))
                if response.status >= 400:
                    # The reason in the table: the status and OpenAI-style error code.
                    code = content[content.find(b'"code"'):][:60].split(b'"')
                    sample.error = (f"HTTP {response.status} "
                                    f"{code[3].decode() if len(code) > 3 else ''}")
                elif response.status == 200:
                    if kind.startswith("stream"):
                        if b"data: [DONE]" not in content or b'"error"' in content:
                            sample.error = "stream incomplete"
                    elif b'"choices"' not in content:
                        sample.error = "no choices"
                return sample
        except aiohttp.ClientConnectorError as exc:
            return Sample(sent, time.monotonic() - sent, kind, web, 0,
                          error=f"connect: {type(exc).__name__}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Sample(sent, time.monotonic() - sent, kind, web, 0,
                          error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            self.in_flight[web] -= 1


def warm_hits(stack: Stack, *, timeout: float = 30) -> None:
    """Every hit prompt answered once and stored, so the hits are hits from the start
    (their records count like any other's)."""
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            for n in range(HIT_PROMPTS):
                body = body_for("hit", n, "")
                deadline = time.monotonic() + timeout
                while True:
                    async with session.post(stack.webs[0].url + CHAT_PATH, json=body,
                                            headers={"Authorization":
                                                     f"Bearer {stack.api_key}"}) as r:
                        await r.read()
                        if r.headers.get("x-cognitude-cache", "").startswith("HIT"):
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"hit prompt {n} never became a hit")
                    await asyncio.sleep(0.05)

    asyncio.run(run())


# --- Faults ----------------------------------------------------------------------------

@dataclass
class Fault:
    name: str
    what: str
    inject: Callable[[Stack], object]
    restore: Callable[[Stack, object], None]
    hold: float  # seconds between inject and restore
    notes: list[str] = field(default_factory=list)


def _redis_kill(stack: Stack) -> int:
    port = stack.hot.port
    stack.hot.stop()  # SIGKILL
    return port


def _redis_start(stack: Stack, port: int) -> None:
    stack.hot = start_redis(port)


def _redis_pause(stack: Stack, seconds: float) -> None:
    import redis

    client = redis.Redis(host=HOST, port=stack.hot.port)
    client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
    client.close()


def _broker_kill(stack: Stack) -> None:
    stack.broker.stop()


def _broker_start(stack: Stack, _: object) -> None:
    stack.broker.start()


def _worker_kill(stack: Stack) -> bool:
    return stack.workers[0].kill_mid_task()


def _worker_start(stack: Stack, caught: object) -> None:
    stack.workers[0].launch()
    stack.workers[0].wait_ready()


def _web_term(stack: Stack) -> tuple:
    in_flight = _LOAD_IN_FLIGHT[0](0) if _LOAD_IN_FLIGHT else 0
    code, took = stack.webs[0].sigterm()
    return code, took, in_flight


def _web_start(stack: Stack, _: object) -> None:
    stack.webs[0].launch()
    stack.webs[0].wait_ready()


def _pg_stop(stack: Stack) -> None:
    stack.pg.stop("fast")


def _pg_start(stack: Stack, _: object) -> None:
    stack.pg.start()


# Set while a load runs, for the web fault's note (requests in flight at SIGTERM).
_LOAD_IN_FLIGHT: list[Callable[[int], int]] = []


def faults(*, redis_down: float = 10, pause: float = 5, broker_down: float = 10,
           pg_down: float = 30) -> dict[str, Fault]:
    def pair(a: Fault, b: Fault) -> Fault:
        def inject(stack: Stack) -> tuple:
            return a.inject(stack), b.inject(stack)

        def restore(stack: Stack, state: tuple) -> None:
            b.restore(stack, state[1])
            a.restore(stack, state[0])

        return Fault(f"{a.name} + {b.name}", f"{a.what}, and {b.what}", inject, restore,
                     max(a.hold, b.hold))

    one = {
        "redis-kill": Fault("redis-kill", f"hot-tier Redis SIGKILLed, restarted after "
                            f"{redis_down:g} s", _redis_kill, _redis_start, redis_down),
        "redis-pause": Fault("redis-pause", f"hot-tier Redis CLIENT PAUSE ALL {pause:g} s",
                             lambda s: _redis_pause(s, pause), lambda s, _: None, pause),
        "broker-kill": Fault("broker-kill", f"Redis broker SIGKILLed for {broker_down:g} s",
                             _broker_kill, _broker_start, broker_down),
        "worker-kill": Fault("worker-kill", "a Celery worker SIGKILLed mid-batch, "
                             "restarted after 3 s", _worker_kill, _worker_start, 3),
        "web-term": Fault("web-term", "a gateway SIGTERMed (drain), restarted",
                          _web_term, _web_start, 0),
        "pg-stop": Fault("pg-stop", f"PostgreSQL stopped (fast) for {pg_down:g} s",
                         _pg_stop, _pg_start, pg_down),
    }
    one["redis-kill+broker-kill"] = pair(one["redis-kill"], one["broker-kill"])
    one["web-term+worker-kill"] = pair(one["web-term"], one["worker-kill"])
    return one


@dataclass
class Window:
    fault: Fault
    before: tuple[float, float]  # the quiet stretch just before it
    during: tuple[float, float]  # inject .. restore done
    after: tuple[float, float]  # restore .. the next fault's quiet stretch
    state: object = None


def run_faults(stack: Stack, load: Load, chosen: list[Fault], *, quiet: float,
               settle: float, log: Callable[[str], None] = print) -> list[Window]:
    windows = []
    _LOAD_IN_FLIGHT[:] = [lambda web: load.in_flight.get(web, 0)]
    try:
        for fault in chosen:
            q0 = time.monotonic()
            time.sleep(quiet)
            log(f"fault: {fault.what}")
            t0 = time.monotonic()
            state = fault.inject(stack)
            time.sleep(max(0.0, fault.hold - (time.monotonic() - t0)))
            fault.restore(stack, state)
            t1 = time.monotonic()
            time.sleep(settle)
            windows.append(Window(fault, (q0, t0), (t0, t1), (t1, time.monotonic()), state))
    finally:
        _LOAD_IN_FLIGHT.clear()
    return windows


# --- The books -------------------------------------------------------------------------

def records_of(database_url: str, org_id: int) -> dict[str, int]:
    with psycopg.connect(database_url, connect_timeout=3) as db:
        rows = db.execute("SELECT request_id, count(*) FROM analytics_requestlog "
                          "WHERE organization_id = %s GROUP BY request_id", (org_id,)).fetchall()
    return dict(rows)


def cold_tier_of(database_url: str, org_id: int) -> tuple[dict[str, int], dict[str, str]]:
    """(rows per key hash in CacheEntry, the cache key of each recorded miss by request id)."""
    with psycopg.connect(database_url, connect_timeout=3) as db:
        entries = dict(db.execute(
            "SELECT key_hash, count(*) FROM caching_cacheentry WHERE organization_id = %s "
            "GROUP BY key_hash", (org_id,)).fetchall())
        misses = dict(db.execute(
            "SELECT request_id, cache_key FROM analytics_requestlog WHERE organization_id = %s "
            "AND cache_outcome = 'miss' AND status = 200 AND cache_key <> ''",
            (org_id,)).fetchall())
    return entries, misses


def wait_for_books(stack: Stack, wanted: set[str], *, timeout: float,
                   log: Callable[[str], None] = print) -> dict[str, int]:
    """Until every wanted request id is recorded and the spools are empty, or
    `timeout`; the records then."""
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while True:
        try:
            found = records_of(stack.database_url, stack.org_id)
        except psycopg.Error:
            found = {}
        missing = wanted - found.keys()
        spooled = stack.spooled_bytes()
        # The cold-tier writes are batches of their own kind: they may land after the
        # records of the same requests.
        cold = 0 if missing else _cold_missing(stack)
        if (not missing and not spooled and not cold) or time.monotonic() > deadline:
            return found
        if time.monotonic() - last_log > 10:
            log(f"waiting for the books: {len(missing)} records missing, "
                f"{cold} cold-tier entries missing, {spooled} bytes spooled")
            last_log = time.monotonic()
        time.sleep(0.5)


def _cold_missing(stack: Stack) -> int:
    try:
        entries, misses = cold_tier_of(stack.database_url, stack.org_id)
    except psycopg.Error:
        return -1
    return sum(1 for key in set(misses.values()) if key not in entries)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    name: str
    sent: int
    failed: int
    rerouted: int
    p99_before_ms: float
    p99_during_ms: float
    recovery_s: float
    recorded: int
    missing: int
    doubled: int
    cold_missing: int
    cold_doubled: int
    note: str = ""
    failures: list[str] = field(default_factory=list)


def reconcile(windows: list[Window], samples: list[Sample], records: dict[str, int],
              entries: dict[str, int], misses: dict[str, str]) -> list[Row]:
    rows = []
    for i, window in enumerate(windows):
        # A fault's requests: sent from its start until the next quiet stretch ends.
        end = windows[i + 1].before[1] if i + 1 < len(windows) else float("inf")
        mine = [s for s in samples if window.during[0] <= s.sent < end]
        before = [s.took for s in samples
                  if window.before[0] <= s.sent < window.before[1] and s.ok]
        during = [s.took for s in samples if window.during[0] <= s.sent < window.during[1]]
        p99_before = percentile(before, 0.99)
        slow = max(SLOW_FACTOR * p99_before, SLOW_FLOOR_S)
        bad = [s for s in mine if not s.ok or s.took > slow]
        # Recovery: from the restore until the last failed or slow answer was sent.
        recovery = max(0.0, max((s.sent for s in bad), default=0.0) - window.during[1])
        ok_ids = [s.request_id for s in mine if s.ok]
        counts = [records.get(rid, 0) for rid in ok_ids]
        miss_keys = {misses[rid] for rid in ok_ids if rid in misses}
        failed = [s for s in mine if not s.ok]
        reasons: dict[str, int] = {}
        for s in failed:
            reason = s.error or f"HTTP {s.status}"
            reasons[reason] = reasons.get(reason, 0) + 1
        note = ""
        if window.fault.name.startswith("web-term") and isinstance(window.state, tuple):
            state = window.state[0] if window.fault.name != "web-term" else window.state
            code, took, in_flight = state
            note = f"drained {in_flight} in flight, exited {code} in {took:.1f} s"
        if window.fault.name.startswith("worker-kill") or window.fault.name.endswith(
                "worker-kill"):
            caught = window.state if window.fault.name == "worker-kill" else window.state[1]
            note += ("; " if note else "") + ("killed while running" if caught
                                                else "killed idle (no task caught)")
        rows.append(Row(
            name=window.fault.name, sent=len(mine), failed=len(failed),
            rerouted=sum(s.rerouted for s in mine),
            p99_before_ms=p99_before * 1000, p99_during_ms=percentile(during, 0.99) * 1000,
            recovery_s=recovery, recorded=sum(1 for c in counts if c == 1),
            missing=sum(1 for c in counts if c == 0), doubled=sum(1 for c in counts if c > 1),
            cold_missing=sum(1 for k in miss_keys if entries.get(k, 0) == 0),
            cold_doubled=sum(1 for k in miss_keys if entries.get(k, 0) > 1),
            note=note, failures=[f"{n}× {r}" for r, n in sorted(reasons.items(),
                                                                  key=lambda x: -x[1])],
        ))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| fault | sent | failed | rerouted | p99 before ms | p99 during ms | "
             "recovery s | 2xx recorded once | missing | doubled | cold missing | "
             "cold doubled |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.name} | {r.sent} | {r.failed} | {r.rerouted} | "
                     f"{r.p99_before_ms:.0f} | {r.p99_during_ms:.0f} | {r.recovery_s:.1f} | "
                     f"{r.recorded} | {r.missing} | {r.doubled} | {r.cold_missing} | "
                     f"{r.cold_doubled} |")
    details = [f"- {r.name}: {r.note + '; ' if r.note else ''}"
               f"{', '.join(r.failures) or 'no failures'}" for r in rows]
    return "\n".join(lines + [""] + details)


# --- The private database ----------------------------------------------------------------

def manage(env: dict[str, str], *arguments: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *arguments], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(arguments)}: {done.stderr.strip()}")
    lines = done.stdout.strip().splitlines()
    return lines[-1].strip() if lines else ""


def private_database(template_url: str) -> tuple[object, str]:
    """A private PostgreSQL cluster holding a migrated copy of `template_url` (created
    and migrated on the machine's server first if it is not yet: only that database
    is written there)."""
    from tests.pgcluster import pg_cluster_create

    params = psycopg.conninfo.conninfo_to_dict(template_url)
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                          (params["dbname"],)).fetchone():
            db.execute(f'CREATE DATABASE "{params["dbname"]}"')
    env = {**os.environ, "DATABASE_URL": template_url, "REDIS_URL": "",
           "CELERY_BROKER_URL": ""}
    manage(env, "migrate", "--noinput")
    cluster = pg_cluster_create()
    try:
        return cluster, cluster.copy_database(template_url, "cognitude_chaos")
    except BaseException:
        cluster.destroy()
        raise


def provision(database_url: str, upstream_url: str) -> tuple[int, str]:
    """A fresh organization whose provider is the fake upstream: (its id, an API key)."""
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": "",
           "CELERY_BROKER_URL": "", "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "true"}
    slug = manage(env, "create_org", f"chaos {time.strftime('%H:%M:%S')} {os.getpid()}")
    api_key = manage(env, "create_api_key", "--org", slug)
    manage(env, "set_provider", "--org", slug, "--kind", "openai", "--base-url",
           upstream_url + "/v1", "--api-key", PROVIDER_KEY)
    with psycopg.connect(database_url) as db:
        org_id = db.execute("SELECT id FROM organizations_organization WHERE slug = %s",
                            (slug,)).fetchone()[0]
    return org_id, api_key


@dataclass
class Outcome:
    rows: list[Row]
    samples: list[Sample]
    unaccounted: int  # 2xx answers without a request id
    spooled_bytes: int


def exercise(stack: Stack, chosen: list[Fault], *, rate: float, quiet: float, settle: float,
             books_timeout: float, log: Callable[[str], None] = print) -> Outcome:
    """Warm the hits, run the load through the faults, wait for the books, reconcile."""
    control_fake_upstream(stack.upstream_url, latency_ms=30, chunk_delay_ms=5)
    warm_hits(stack)
    load = Load(stack, rate=rate).start()
    try:
        windows = run_faults(stack, load, chosen, quiet=quiet, settle=settle, log=log)
    finally:
        samples = load.stop()
    wanted = {s.request_id for s in samples if s.ok and s.request_id}
    log(f"{len(samples)} requests sent; waiting for {len(wanted)} records")
    records = wait_for_books(stack, wanted, timeout=books_timeout, log=log)
    entries, misses = cold_tier_of(stack.database_url, stack.org_id)
    rows = reconcile(windows, samples, records, entries, misses)
    return Outcome(rows, samples, sum(1 for s in samples if s.ok and not s.request_id),
                   stack.spooled_bytes())


def diagnose(stack: Stack, outcome: Outcome) -> None:
    """What a loss looks like from the inside: dead letters, the workers' complaints,
    and when the requests whose cold-tier entry is missing were sent."""
    with psycopg.connect(stack.database_url, connect_timeout=3) as db:
        dead = db.execute("SELECT kind, error, count(*) FROM pipeline_deadletter "
                          "GROUP BY kind, error").fetchall()
    print(f"dead letters: {dead or 'none'}")
    entries, misses = cold_tier_of(stack.database_url, stack.org_id)
    lost = {rid for rid, key in misses.items() if key not in entries}
    start = outcome.samples[0].sent if outcome.samples else 0.0
    sent = sorted(round(s.sent - start, 1) for s in outcome.samples if s.request_id in lost)
    print(f"cold-tier entries missing for requests sent at (s into the load): {sent[:40]}")
    for i, worker in enumerate(stack.workers):
        worrying = [line.rstrip() for line in worker.log
                    if any(word in line for word in ("ERROR", "WARNING", "Restor", "lost",
                                                     "retry", "Retry"))]
        print(f"worker{i}: " + ("\n  ".join(worrying[-25:]) or "nothing logged"))


def main() -> int:
    every = faults()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="requests/s (default 100)")
    parser.add_argument("--fault", action="append", choices=list(every),
                        help="repeatable; default: all, one at a time then two together")
    parser.add_argument("--quick", action="store_true",
                        help="shorter outages (redis 4 s, broker 4 s, PostgreSQL 10 s)")
    parser.add_argument("--template-database", default=os.environ.get(
        "CHAOS_TEMPLATE_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or TEMPLATE_DATABASE_DEFAULT,
        help="a database on the machine's PostgreSQL to migrate and copy (only read "
             "from after that); default: $CHAOS_TEMPLATE_DATABASE_URL, $DATABASE_URL, "
             f"else {TEMPLATE_DATABASE_DEFAULT}")
    args = parser.parse_args()
    if args.quick:
        every = faults(redis_down=4, pause=3, broker_down=4, pg_down=10)
    chosen = [every[name] for name in (args.fault or every)]
    started = time.monotonic()
    print("starting: a private PostgreSQL cluster, Redis (hot tier, broker), the fake "
          "upstream, 2 gateways, 2 workers", flush=True)
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
    try:
        outcome = exercise(stack, chosen, rate=args.rate, quiet=5, settle=10,
                           books_timeout=150, log=lambda m: print(m, flush=True))
        if any(r.missing or r.cold_missing for r in outcome.rows):
            diagnose(stack, outcome)
    finally:
        stack.close()
    print()
    print(f"{len(outcome.samples)} requests at {args.rate:g}/s in "
          f"{time.monotonic() - started:.0f} s (set-up and books included); spool left: "
          f"{outcome.spooled_bytes} bytes; 2xx without a request id: {outcome.unaccounted}")
    print()
    print(table(outcome.rows))
    lost = sum(r.missing + r.doubled + r.cold_missing + r.cold_doubled for r in outcome.rows)
    return 0 if lost == 0 and outcome.spooled_bytes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""REDIS_URL and COGNITUDE_LIMITS_REDIS_URL naming a Sentinel set: a primary and its
replica, three Sentinels (redis-server --sentinel), all private, on loopback. The
primary is SIGKILLed under traffic; the Sentinels promote the replica; the same gateway
process (no restart) answers throughout and is back on the hot tier within the
breaker's window of the switch."""

import asyncio
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from cognitude.redis_urls import (
    async_redis,
    django_cache_location,
    is_redis_url,
    sentinel_set,
)
from fakeupstream.testing import free_port
from ratelimit.resp import RespClient
from tests.live import HOST, start_gateway
from tests.ratelimit.helpers import set_limits
from tests.workers import wait_until

SERVICE = "cogmaster"
DOWN_AFTER_MS = 400
BREAKER_SECONDS = 1.0
# What it takes a request to notice, on a loaded 2-core machine: a Redis timeout or two
# and the event loop's own delays.
SLACK_SECONDS = 1.5


def _redis(port: int, *extra: str) -> subprocess.Popen:
    # Its own directory: a replica's full sync writes the master's snapshot to a file
    # there, whatever --save says (it was landing in the repository as dump.rdb).
    process = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", HOST, "--save", "",
         "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="cognitude-redis-"), *extra],
        stdout=subprocess.DEVNULL)
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.2)
    wait_until(lambda: _pings(client), timeout=10, what=f"redis on {port}")
    client.close()
    return process


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@dataclass
class SentinelSet:
    primary: int
    replica: int
    sentinels: list[int]
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        members = ",".join(f"{HOST}:{port}" for port in self.sentinels)
        return f"redis+sentinel://{members}/{SERVICE}/0"

    def master(self) -> int:
        client = redis.Redis(host=HOST, port=self.sentinels[0], socket_timeout=1)
        try:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])
        finally:
            client.close()

    def kill(self, port: int) -> None:
        self.processes[port].kill()
        self.processes[port].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def sentinels(tmp_path: Path):
    primary, replica = free_port(), free_port()
    found = SentinelSet(primary, replica, [free_port() for _ in range(3)])
    try:
        found.processes[primary] = _redis(primary)
        found.processes[replica] = _redis(replica, "--replicaof", HOST, str(primary))
        for port in found.sentinels:
            conf = tmp_path / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\ndir {tmp_path}\n"
                f"sentinel monitor {SERVICE} {HOST} {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 2000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            found.processes[port] = subprocess.Popen(
                [shutil.which("redis-server"), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL)
        # Each Sentinel has found the replica and its peers: a failover can happen.
        def ready() -> bool:
            for port in found.sentinels:
                client = redis.Redis(host=HOST, port=port, socket_timeout=0.5)
                try:
                    state = client.sentinel_master(SERVICE)
                except (redis.ConnectionError, redis.ResponseError):
                    return False
                finally:
                    client.close()
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                    return False
            return True

        wait_until(ready, timeout=20, interval=0.1, what="the Sentinels to know each other")
        yield found
    finally:
        found.stop()


def test_it_reads_the_sentinel_url_form():
    found = sentinel_set("redis+sentinel://u:p%40ss@h1:26380,h2/mymaster/3"
                         "?sentinel_password=s3")
    assert found.sentinels == (("h1", 26380), ("h2", 26379))
    assert (found.service, found.db, found.username, found.password) == (
        "mymaster", 3, "u", "p@ss")
    assert found.sentinel_password == "s3" and not found.ssl
    assert sentinel_set("rediss+sentinel://h1/m").ssl
    assert is_redis_url("redis+sentinel://h1:26379/mymaster/0")
    assert not is_redis_url("redis+sentinel://h1:26379/")  # no service
    assert not is_redis_url("http://h1:26379/mymaster")


def test_it_finds_the_new_master_after_a_failover_without_a_restart(live_world, sentinels):
    tenant = live_world.a
    # A limit, so that every request goes through the limits Redis (the Sentinel set
    # too); per day, so that its counter outlives a request by most of a second (GCRA).
    set_limits(tenant, requests_per_day=100000)
    gateway = start_gateway({
        "REDIS_URL": sentinels.url, "COGNITUDE_LIMITS_REDIS_URL": sentinels.url,
        "COGNITUDE_REDIS_BREAKER_SECONDS": str(BREAKER_SECONDS),
        "COGNITUDE_LIMITS_CACHE_SECONDS": "0.5",
    })
    try:
        client = httpx.Client(base_url=gateway.url, timeout=10,
                              headers={"Authorization": f"Bearer {tenant.raw_key}"})
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "sentinel"}]}

        def ask() -> httpx.Response:
            return client.post("/v1/chat/completions", json=body)

        assert ask().headers["x-cognitude-cache"] == "MISS"
        wait_until(lambda: ask().headers.get("x-cognitude-cache-tier") == "redis", timeout=5,
                   what="a hot-tier hit through the Sentinels' master")
        old = redis.Redis(host=HOST, port=sentinels.primary)
        ask()
        assert old.keys("rl:*"), "the limits live on the master the Sentinels named"
        old.close()

        sentinels.kill(sentinels.primary)
        killed = time.monotonic()
        answers: list[tuple[float, int, str]] = []
        switched = None
        while time.monotonic() - killed < 15:
            response = ask()
            now = time.monotonic()
            answers.append((now, response.status_code,
                            response.headers.get("x-cognitude-cache-tier", "")))
            if switched is None and sentinels.master() == sentinels.replica:
                switched = now
            if switched is not None and answers[-1][2] == "redis" and now > switched:
                break
            time.sleep(0.02)
        assert switched is not None, "the Sentinels never promoted the replica"
        assert all(status == 200 for _, status, _ in answers), answers
        back = answers[-1]
        assert back[2] == "redis", answers[-5:]
        # At most the breaker's window (plus what noticing takes) of cold-tier answers
        # after the Sentinels switched.
        assert back[0] - switched <= BREAKER_SECONDS + SLACK_SECONDS, (
            back[0] - switched, switched - killed)
        cold = sum(1 for _, _, tier in answers if tier != "redis")
        print(f"failover: switched {switched - killed:.2f} s after the kill, hot tier back "
              f"{back[0] - switched:.2f} s after the switch; {len(answers)} answers, "
              f"{cold} not from the hot tier")  # the figures, with pytest -s
        assert gateway.process.poll() is None  # the same process all along
        health = client.get("/health").json()
        assert health["redis"]["status"] == "healthy", health
        assert health["limits"]["status"] == "healthy", health
        # The limits found the new master too.
        new = redis.Redis(host=HOST, port=sentinels.replica)
        wait_until(lambda: ask() and new.keys("rl:*"), timeout=5,
                   what="limit counters on the new master")
        new.close()
    finally:
        gateway.stop()


def test_it_gives_djangos_cache_the_sentinels_master(sentinels):
    from django_redis.cache import RedisCache

    location, options = django_cache_location(sentinels.url)
    cache = RedisCache(location, {"OPTIONS": {**options, "SOCKET_TIMEOUT": 0.5}})
    cache.set("greeting", "hello")
    master = redis.Redis(host=HOST, port=sentinels.primary)
    assert master.keys("*greeting"), "stored on the master the Sentinels name"
    master.close()
    # django-redis's SentinelClient reads from a replica: a moment's replication lag.
    wait_until(lambda: cache.get("greeting") == "hello", timeout=5, what="the replica's copy")


def test_it_keeps_the_limits_client_on_the_master_through_a_forced_failover(sentinels):
    """A graceful failover (SENTINEL FAILOVER) demotes a master that is still alive: a
    connection left on it must not keep writing there (or failing with READONLY)."""

    async def run() -> list[int]:
        client = RespClient(sentinels.url, timeout=0.5)
        reference = async_redis(sentinels.url, socket_timeout=0.5)
        try:
            assert await client.call("SET", "k", "before") == b"OK"
            first = int((await client.call("INFO", "server")).split(b"tcp_port:")[1]
                        .split(b"\r\n")[0])
            admin = redis.Redis(host=HOST, port=sentinels.sentinels[0])
            admin.execute_command("SENTINEL", "FAILOVER", SERVICE)
            admin.close()
            old = redis.Redis(host=HOST, port=first)

            def demoted() -> bool:
                return (sentinels.master() != first
                        and old.info("replication")["role"] == "slave")

            # Until the old master is told it is a replica it still takes writes (the
            # window of writes Sentinel can lose): wait for the demotion itself.
            await asyncio.to_thread(wait_until, demoted, timeout=15,
                                    what="the forced failover")
            old.close()
            # Calls on the demoted master fail (disconnected, or READONLY) for a moment,
            # then land on the new one.
            deadline = time.monotonic() + 10
            while True:
                try:
                    if await client.call("SET", "k", "after") == b"OK":
                        break
                except Exception:  # noqa: BLE001 (any failure: retried until the deadline)
                    pass
                assert time.monotonic() < deadline, "the limits client never found the master"
                await asyncio.sleep(0.05)
            second = int((await client.call("INFO", "server")).split(b"tcp_port:")[1]
                         .split(b"\r\n")[0])
            assert await reference.get("k") == b"after"  # on the Sentinels' master
            return [first, second]
        finally:
            await client.close()
            await reference.aclose()

    first, second = asyncio.run(run())
    assert first == sentinels.primary and second == sentinels.replica

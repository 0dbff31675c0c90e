"""Real processes for tests: the gateway under uvicorn, a throwaway Redis.

Plain functions so fixtures and individual tests (that need their own gateway, say
one pointed at a Redis they will kill) share them.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from django.db import connection

from fakeupstream.testing import free_port, stop_process
from tests.logs import log_file

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def test_database_url() -> str:
    """The URL of the database pytest-django created, for processes we start."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user, host, port = s["USER"] or "postgres", s["HOST"] or HOST, s["PORT"] or 5432
    return f"postgres://{user}@{host}:{port}/{s['NAME']}"


@dataclass
class Gateway:
    process: subprocess.Popen
    url: str
    log: Path | None = None  # its stdout and stderr, in the run's log directory

    def stop(self) -> None:
        stop_process(self.process)


def start_gateway(env: dict[str, str], *, timeout: float = 20.0,
                  args: tuple[str, ...] = ()) -> Gateway:
    """The gateway under uvicorn; `args` are uvicorn's own (`("--workers", "2")`)."""
    port = free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "COGNITUDE_ALLOW_PRIVATE_UPSTREAMS": "true",
        "COGNITUDE_EVENT_FLUSH_SECONDS": "0.05",
        "COGNITUDE_API_KEY_CACHE_SECONDS": "1",
        "COGNITUDE_UPSTREAM_TIMEOUT": "3",
        # Each gateway its own spool, so no run replays another run's events.
        "COGNITUDE_SPOOL_DIR": tempfile.mkdtemp(prefix="cognitude-spool-"),
        "CELERY_BROKER_URL": "",
        **env,
    }
    log = log_file("gateway")
    with log.open("wb") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "cognitude.asgi:application", "--host", HOST,
             "--port", str(port), "--loop", "uvloop", "--http", "httptools",
             "--no-access-log", "--log-level", "warning", *args],
            cwd=PROJECT_DIR, env=full_env, stdout=output, stderr=subprocess.STDOUT,
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}:\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            urllib.request.urlopen(f"{url}/v1/none", timeout=1)
        except urllib.error.HTTPError:
            return Gateway(process, url, log)  # any HTTP answer means it is serving
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise TimeoutError("the gateway did not start")


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_redis(port: int | None = None, *, broker_dir: Path | None = None) -> RedisServer:
    """A throwaway redis-server of our own, so a test may kill or pause it: a hot tier
    (LRU, nothing on disk), or with `broker_dir` a broker as the README configures one
    (never evicts, every write in an append-only file fsync'd before the reply), which
    a restart on the same port and directory finds again."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    if broker_dir is None:
        role = ["--appendonly", "no", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]
    else:
        role = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(broker_dir),
                "--maxmemory-policy", "noeviction"]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", *role],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    import redis

    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.2)
    while time.monotonic() < deadline:
        try:
            client.ping()
            client.close()
            return RedisServer(process, port)
        except redis.ConnectionError:
            time.sleep(0.02)
    process.kill()
    raise TimeoutError("redis-server did not start")

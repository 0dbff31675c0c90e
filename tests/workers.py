"""Real processes for pipeline tests: Celery worker and beat, a RabbitMQ vhost or a
Redis broker of the test's own, and a TCP proxy a test can cut or freeze (PostgreSQL
refusing a worker, a hung broker)."""

import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.live import (
    HOST,
    PROJECT_DIR,
    RedisServer,
    start_redis,
    stop_process,
    test_database_url,
)
from tests.logs import log_file

TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def wait_until(condition, *, timeout: float, interval: float = 0.05, what: str = "it"):
    """Poll `condition` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(interval)


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")


@dataclass
class Vhost:
    """A RabbitMQ virtual host for one test run: no stale message of an earlier run (or
    another engineer's) can reach this run's workers, and none of ours can leak out."""

    name: str
    url: str

    def delete(self) -> None:
        _rabbitmqctl("delete_vhost", self.name)

    def stop(self) -> None:
        """The whole RabbitMQ (every vhost): only the broker tests may call it."""
        broker_stop()

    def start(self) -> None:
        broker_start()


def vhost_create() -> Vhost:
    parts = urlsplit(TEST_BROKER_URL)
    name = f"cognitude-test-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
    return Vhost(name, urlunsplit((parts.scheme, parts.netloc, "/" + name, "", "")))


@dataclass
class RedisBroker:
    """A Redis broker of the test's own, set up as the README says (noeviction, an
    fsync'd append-only file), so that a test may kill it and start it again."""

    directory: Path
    server: RedisServer

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        """SIGKILL: what it acknowledged is on disk already."""
        self.server.stop()

    def start(self) -> None:
        self.server = start_redis(self.server.port, broker_dir=self.directory)

    def delete(self) -> None:
        self.server.stop()


def redis_broker_create(directory: Path) -> RedisBroker:
    directory.mkdir(parents=True, exist_ok=True)
    return RedisBroker(directory, start_redis(broker_dir=directory))


def broker_stop() -> None:
    """Stop the RabbitMQ application (the node stays up, so start_app is quick)."""
    _rabbitmqctl("stop_app")


def broker_start() -> None:
    _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup")


@dataclass
class CeleryProcess:
    process: subprocess.Popen
    log: list[str] = field(default_factory=list)

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start_celery(args: list[str], env: dict[str, str], *, ready: str,
                 timeout: float = 20.0) -> CeleryProcess:
    """`celery -A cognitude <args>` in the project directory with exactly `env`; returns
    once its log shows `ready`, and keeps collecting the log."""
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cognitude", *args, "--loglevel", "INFO"],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    started = CeleryProcess(process)
    seen = threading.Event()
    # Also kept in the run's log directory, which the end of the run checks for secrets.
    log = log_file("celery")

    def read() -> None:
        with log.open("a") as copy:
            for line in process.stdout:
                started.log.append(line)
                copy.write(line)
                copy.flush()
                if ready in line:
                    seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(timeout):
        started.kill()
        raise TimeoutError(f"celery {args[0]} did not start:\n" + "".join(started.log[-30:]))
    return started


def start_worker(broker_url: str, env: dict[str, str] | None = None, *,
                 as_deployed: bool = False) -> CeleryProcess:
    """A worker with the solo pool, so that a task runs in the process a test may
    SIGKILL; `as_deployed`: as docker-compose.yml runs it instead (prefork, here with two
    processes; gossip, mingle and heartbeats: everything that talks to the broker)."""
    name = ["-n", f"test-{uuid.uuid4().hex[:8]}@%h"]
    options = ["--concurrency", "2"] if as_deployed else [
        "-P", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return start_celery(
        ["worker", *name, *options],
        {**os.environ, "DATABASE_URL": test_database_url(), "CELERY_BROKER_URL": broker_url,
         "REDIS_URL": "", **(env or {})},
        ready=" ready.",
    )


class TcpProxy:
    """Forwards a local port to `target`. `cut()` closes the port and every connection
    through it (the far side sees connections refused); `restore()` opens it again.
    `freeze()` keeps accepting and holding connections but passes nothing either way
    (a hung server); `thaw()` lets the bytes flow again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        probe = socket.socket()
        probe.bind((HOST, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()
        try:
            upstream = socket.create_connection(self._target, timeout=2)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [client, upstream]
        self._pump(client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                self._flowing.wait()
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            pass  # cut, or a side closed
        finally:
            a.close()
            b.close()


def url_through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{HOST}:{proxy.port}"
    return urlunsplit((parts.scheme, f"{credentials}@{netloc}" if credentials else netloc,
                       parts.path, parts.query, ""))


def proxy_to(url: str) -> TcpProxy:
    """A proxy in front of the server that `url` names."""
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or HOST, parts.port)

"""A private PostgreSQL cluster for fault tests: initdb + pg_ctl in a temporary
directory, on a free loopback port of its own, so a test may stop it, start it again
on the same port, and throw it away, without ever touching the machine's PostgreSQL.

    cluster = pg_cluster_create()               # initdb + start, ~1 s
    url = cluster.copy_database(test_database_url(), "cog")   # schema and rows
    cluster.stop()                              # fast shutdown: clients see it go
    cluster.start()                             # same port, same data
    cluster.destroy()                           # stop (immediate) and delete

PostgreSQL refuses to run as root; as root the binaries run as the `postgres` user
(the directory is made theirs).
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fakeupstream.testing import free_port

HOST = "127.0.0.1"
_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
             "/usr/lib/postgresql/17/bin")


def _binary(name: str) -> str:
    for directory in _BIN_DIRS:
        path = Path(directory, name)
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (apt-get install postgresql)")
    return found


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], *, timeout: float = 60) -> str:
    done = subprocess.run(_as_owner(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class PgCluster:
    """One private cluster. `url(name)` names a database on it (user `postgres`, trust
    authentication on loopback only)."""

    directory: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@{HOST}:{self.port}/{name}"

    def is_running(self) -> bool:
        done = subprocess.run(_as_owner([_binary("pg_ctl"), "status", "-D", str(self.data_dir)]),
                              capture_output=True)
        return done.returncode == 0

    def start(self, *, timeout: float = 30) -> None:
        """Start it (on the port it had) and return once it accepts connections."""
        _run([_binary("pg_ctl"), "start", "-w", "-t", str(int(timeout)), "-D",
              str(self.data_dir), "-l", str(self.directory / "server.log")], timeout=timeout + 5)

    def stop(self, mode: str = "fast", *, timeout: float = 30) -> None:
        """Stop it: `fast` (the default) ends every session at once and shuts down
        cleanly; `immediate` is a crash (recovery at the next start); `smart` waits
        for the clients to leave."""
        _run([_binary("pg_ctl"), "stop", "-w", "-t", str(int(timeout)), "-m", mode, "-D",
              str(self.data_dir)], timeout=timeout + 5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """An empty database; its URL."""
        _run([_binary("createdb"), "-h", HOST, "-p", str(self.port), "-U", "postgres", name])
        return self.url(name)

    def copy_database(self, source_url: str, name: str) -> str:
        """A copy of the database at `source_url` (schema and rows: a migrated test
        database with its fixtures is ~1 s, against ~20 s to migrate one); its URL."""
        target = self.create_database(name)
        dump = subprocess.Popen([_binary("pg_dump"), "--no-owner", "--no-privileges",
                                 *_libpq_args(source_url)], stdout=subprocess.PIPE)
        restore = subprocess.run(
            [_binary("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-X", *_libpq_args(target)],
            stdin=dump.stdout, capture_output=True, text=True, timeout=120)
        assert dump.stdout is not None
        dump.stdout.close()
        if dump.wait() or restore.returncode:
            raise RuntimeError(f"copying {source_url}: {restore.stderr}")
        return target

    def destroy(self) -> None:
        """Stop it if it runs (immediate: nothing is kept) and delete its files."""
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


def _libpq_args(url: str) -> list[str]:
    parts = urlsplit(url)
    return ["-h", parts.hostname or HOST, "-p", str(parts.port or 5432),
            "-U", parts.username or "postgres", "-d", parts.path.lstrip("/")]


def pg_cluster_create(port: int | None = None) -> PgCluster:
    """initdb a new cluster in a temporary directory and start it on `port` (a free
    one by default). Durability settings are off (fsync, full-page writes): a stop,
    even an immediate one, loses nothing the server acknowledged, since the machine
    itself does not crash, and the cluster starts in about a second."""
    directory = Path(tempfile.mkdtemp(prefix="cognitude-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    cluster = PgCluster(directory, port or free_port())
    try:
        _run([_binary("initdb"), "-D", str(cluster.data_dir), "-U", "postgres",
              "-A", "trust", "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"])
        with open(cluster.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {cluster.port}\n"
                f"listen_addresses = '{HOST}'\n"
                # Its socket in its own directory: never next to the machine's server's.
                f"unix_socket_directories = '{directory}'\n"
                "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n"
                "shared_buffers = 32MB\nmax_connections = 200\n"
            )
        cluster.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return cluster


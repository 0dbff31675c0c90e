"""The spool: event batches the broker could not take, kept on local disk until it can.

Each process appends to its own file, `<host>-<pid>.jsonl` in COGNITUDE_SPOOL_DIR, one
JSON line per batch (with a unique batch id), fsync'd before the flusher moves on. The
process holds an exclusive flock on its file for as long as the file exists, so the
lock says whether the owner is alive: a process that can take another file's lock
adopts it (a web process that died with batches spooled loses none of them).

Replay removes a batch from the file only after the broker has confirmed it. A crash
between the two replays that batch again; the tasks are idempotent, so a row still
lands once.

A spool belongs to one deployment: its events name organizations by id, and another
database's organization with the same id is somebody else. Each line carries the
identity of the database its process was writing to (pipeline.services, a random id
made once in that database), and a process adopts only files of its own database; it
leaves any other where it is, for a process of that deployment. A random id in the
database, rather than its address, because two deployments' databases can have the
same address (every docker-compose default) and one database can change address (a
restored dump, a failover, a move to a managed service) and stay the same deployment.
Lines without an identity (written by an older version, or before the process could
reach its database) are replayed by whoever adopts them.
"""

import fcntl
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

logger = logging.getLogger("cognitude.pipeline")

# Batches copied from an orphan per write: a big orphan never sits in memory whole.
_ADOPT_CHUNK = 100


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    kind: str
    # Events as emitted (dataclasses) or as read back from a spool (their fields).
    events: list[Any]
    # The identity of the database the spooling process wrote to, if it knew it.
    database: str | None = None

    def line(self, database: str | None) -> bytes:
        return orjson.dumps({"id": self.id, "kind": self.kind, "database": database,
                             "events": self.events}) + b"\n"


def batch_new(kind: str, events: list[Any]) -> Batch:
    return Batch(uuid.uuid4().hex, kind, events)


def batches_read(path: Path) -> list[Batch]:
    """The batches in a spool file, in order."""
    with open(path, "rb") as file:
        return list(_batches_in(file, path))


def _batches_in(lines: Iterable[bytes], path: Path) -> Iterator[Batch]:
    for line in lines:
        try:
            data = orjson.loads(line)
            yield Batch(data["id"], data["kind"], data["events"], data.get("database"))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            # Only a torn last line can be bad: the process died inside write(), before
            # fsync returned, so that batch was never taken from memory as safe.
            logger.warning("skipping an unreadable line in the spool %s", path)


def _database_of(file: BinaryIO, path: Path) -> str | None:
    """The database identity a spool file's lines carry (one process wrote them, so
    one at most); None if none does. Leaves the file at its start."""
    try:
        for batch in _batches_in(file, path):
            if batch.database is not None:
                return batch.database
        return None
    finally:
        file.seek(0)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """This process's spool file. Not thread-safe: the flusher thread is its only user.

    Batches live on disk only (an outage of hours must not fill memory); the spool
    keeps just their counts."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._file: BinaryIO | None = None  # open (and locked) while the file exists
        self._batches = 0
        self.events = 0  # events waiting in the file (the spool depth metric)
        # This process's database identity, once known; written into every line, and
        # until it is known no orphan is adopted.
        self.database: str | None = None
        self._refused: set[Path] = set()  # other deployments' files, said once

    def __len__(self) -> int:
        return self._batches

    @property
    def path(self) -> Path:
        return self._dir / f"{socket.gethostname()}-{os.getpid()}.jsonl"

    def append(self, batches: list[Batch]) -> None:
        """Write batches durably: when this returns they survive a crash."""
        if not batches:
            return
        if self._file is None:
            self._file = self._create()
        self._file.write(b"".join(b.line(self.database) for b in batches))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._batches += len(batches)
        self.events += sum(len(b.events) for b in batches)

    def replay(self, publish: Callable[[Batch], None]) -> None:
        """Publish the spooled batches in order, reading them from the file one by one.

        Stops at the first failure (the exception propagates) and keeps that batch and
        the ones after it."""
        if self._file is None:
            return
        self._file.seek(0)
        offset = 0
        try:
            for line in self._file:
                for batch in _batches_in([line], self.path):
                    publish(batch)
                    self._batches -= 1
                    self.events -= len(batch.events)
                offset += len(line)
        finally:
            if offset:
                self._keep_from(offset)

    def adopt_orphans(self) -> None:
        """Move the batches of dead processes' spool files of this database into this
        one."""
        if self.database is None or not self._dir.is_dir():
            return
        for path in list(self._dir.glob("*.jsonl")):
            if (self._file is not None and path == self.path) or path in self._refused:
                continue  # our own, or another deployment's
            self._adopt(path)

    def _adopt(self, path: Path) -> None:
        try:
            orphan = open(path, "rb")  # noqa: SIM115  (closed below, lock and all)
        except FileNotFoundError:
            return  # adopted by another process, or emptied by its owner
        with orphan:
            try:
                fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its owner is alive and replays it itself
            if os.fstat(orphan.fileno()).st_nlink == 0:
                return  # adopted by another process between our open and lock
            database = _database_of(orphan, path)
            if database not in (None, self.database):
                self._refused.add(path)
                logger.error("not replaying the spool %s: it holds events of another "
                             "database (%s; this one is %s); left for that deployment",
                             path, database, self.database)
                return
            if path == self.path:
                # A dead process with our pid (a restarted container) left it: move it
                # aside, still locked, so that our own file can have the name.
                moved = self._dir / f"{uuid.uuid4().hex}.jsonl"
                os.replace(path, moved)
                path = moved
            chunk: list[Batch] = []
            for batch in _batches_in(orphan, path):
                chunk.append(batch)
                if len(chunk) == _ADOPT_CHUNK:
                    self.append(chunk)
                    chunk = []
            self.append(chunk)
            path.unlink()
            logger.info("adopted the spool %s", path)

    def _keep_from(self, offset: int) -> None:
        """Replace the file by its part from `offset` on, atomically."""
        old = self._file
        old.seek(offset)
        if old.read(1):
            old.seek(offset)
            self._file = self._create(old)
        else:
            self._file = None
            self.path.unlink()
        old.close()  # releases the lock on the old file, which no name points to now

    def _create(self, content: BinaryIO | None = None) -> BinaryIO:
        """A locked file at self.path holding the rest of `content`, replacing any file
        there.

        Written and locked under a temporary name (which adopters do not look at) and
        renamed into place, so no other process can see it unlocked or half written."""
        self._dir.mkdir(parents=True, exist_ok=True)
        temporary = self._dir / f".{uuid.uuid4().hex}.tmp"
        file = open(temporary, "ab+")  # noqa: SIM115  (kept open: it holds the lock)
        fcntl.flock(file, fcntl.LOCK_EX)
        if content is not None:
            shutil.copyfileobj(content, file)
        file.flush()
        os.fsync(file.fileno())
        os.replace(temporary, self.path)
        _fsync_dir(self._dir)
        return file

"""The spool on its own: what a failed replay keeps, what is adopted from dead
processes, and what is left to another deployment."""

import uuid
from pathlib import Path

import orjson
import pytest

from pipeline.spool import Batch, Spool, batch_new, batches_read


def test_it_keeps_what_a_failed_replay_did_not_publish(tmp_path):
    spool = Spool(tmp_path)
    first, second, third = (batch_new("request_log", [{"n": n}]) for n in range(3))
    spool.append([first, second, third])
    published = []

    def broker_fails_on_the_second(batch: Batch) -> None:
        if batch.id == second.id:
            raise ConnectionError("the broker went away")
        published.append(batch.id)

    with pytest.raises(ConnectionError):
        spool.replay(broker_fails_on_the_second)
    assert published == [first.id]
    assert [b.id for b in batches_read(spool.path)] == [second.id, third.id]
    assert spool.events == 2

    spool.replay(lambda batch: published.append(batch.id))
    assert published == [first.id, second.id, third.id]
    assert not spool.path.exists() and spool.events == 0


THIS_DATABASE = "a" * 32


def spool_in(directory: Path) -> Spool:
    """A spool whose process knows its database's identity (its flusher has read it)."""
    spool = Spool(directory)
    spool.database = THIS_DATABASE
    return spool


def test_it_adopts_a_dead_processs_spool_without_its_torn_last_line(tmp_path):
    whole = batch_new("request_log", [{"n": 1}])
    line = whole.line(THIS_DATABASE)
    (tmp_path / "otherhost-7.jsonl").write_bytes(line + line[:20])
    spool = spool_in(tmp_path)
    spool.adopt_orphans()
    assert [b.id for b in batches_read(spool.path)] == [whole.id]
    assert list(tmp_path.glob("*.jsonl")) == [spool.path]


def test_it_adopts_a_spool_left_under_its_own_name_by_a_dead_process(tmp_path):
    spool = spool_in(tmp_path)
    left = batch_new("request_log", [{"n": 1}])
    # A restarted container's process often gets the pid its predecessor had.
    spool.path.write_bytes(left.line(THIS_DATABASE))
    spool.adopt_orphans()
    assert [b.id for b in batches_read(spool.path)] == [left.id]
    assert len(spool) == 1 and spool.events == 1
    assert list(tmp_path.glob("*.jsonl")) == [spool.path]


def test_it_leaves_another_databases_spool_where_it_is(tmp_path, caplog):
    theirs = tmp_path / "otherhost-8.jsonl"
    content = batch_new("request_log", [{"n": 1}]).line("b" * 32)
    theirs.write_bytes(content)
    spool = spool_in(tmp_path)

    spool.adopt_orphans()
    spool.adopt_orphans()

    assert theirs.read_bytes() == content
    assert not spool.path.exists() and len(spool) == 0
    assert caplog.text.count("holds events of another database") == 1


def test_it_adopts_nothing_before_it_knows_its_database(tmp_path):
    orphan = tmp_path / "otherhost-9.jsonl"
    orphan.write_bytes(batch_new("request_log", [{"n": 1}]).line(THIS_DATABASE))
    Spool(tmp_path).adopt_orphans()
    assert orphan.exists()


def test_it_adopts_a_spool_written_before_databases_had_an_identity(tmp_path):
    # A line as the previous version wrote it: a rolling deploy must not strand it.
    old = orjson.dumps({"id": uuid.uuid4().hex, "kind": "request_log",
                        "events": [{"n": 1}]}) + b"\n"
    (tmp_path / "otherhost-10.jsonl").write_bytes(old)
    spool = spool_in(tmp_path)
    spool.adopt_orphans()
    (adopted,) = batches_read(spool.path)
    assert adopted.events == [{"n": 1}] and adopted.database == THIS_DATABASE

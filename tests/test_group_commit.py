"""Writers of one list share their fsyncs (fsstore/commit.py, steps 2 to 5).

A commit hands its lists over to the next writer as soon as its line is in
the commit log, before the line is durable: the next writer sees its writes,
readers do not until the fsync is done, and a commit that read the writes
of one whose fsync then failed fails with it.  On a real data directory,
with the log's fsync slowed down or stopped at the step each test names.
"""

import errno
import json
import os
import threading
import time

import pytest

from kintofs.fsstore import FileSystemStore, StorageError
from kintofs.fsstore.verify import verify

COLLECTION = (("bucket", "b"), ("collection", "c"))


@pytest.fixture
def store(tmp_path):
    store = FileSystemStore(tmp_path / "data", fsync=True)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    with store.list(COLLECTION[:1], "collection").transaction() as writer:
        writer.put("c", {}, {})
    return store


class LogFsyncs:
    """Stands in for os.fsync: counts the syncs of the commit log and lets a
    test hold them (``gate``) or fail them (``fail``); other fsyncs run as usual."""

    def __init__(self, store, monkeypatch, *, pause=0.0):
        self.log, self.pause = store.commits, pause
        self.calls = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.fail = None  # an errno: the next log fsync fails with it
        self._real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd):
        segment = self.log._segment
        if segment is None or fd != segment.fd:
            return self._real(fd)
        self.calls += 1
        self.started.set()
        assert self.gate.wait(10), "the test never let the fsync go"
        time.sleep(self.pause)
        if self.fail is not None:
            code, self.fail = self.fail, None
            raise OSError(code, os.strerror(code))
        return self._real(fd)


def run_threads(targets):
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads):
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"


def journal(root):
    path = os.path.join(root, "buckets", "b", "collections", "c", "records", "_journal.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_eight_writers_of_one_collection_share_the_log_s_fsyncs(store, monkeypatch):
    # Each log fsync takes 10 ms (an SD card's): writers that arrive meanwhile
    # write their lines behind it and share the next one.  Before, the list
    # stayed locked until the fsync was done: one fsync per write.
    fsyncs = LogFsyncs(store, monkeypatch, pause=0.01)
    records = store.list(COLLECTION, "record")

    def writer(name):
        def write():
            for i in range(10):
                with records.transaction() as w:
                    w.put(f"{name}-{i}", {"i": i}, {"write": [name]})

        return write

    join_all(run_threads([writer(f"w{n}") for n in range(8)]))
    assert fsyncs.calls <= 40, f"{fsyncs.calls} fsyncs for 80 writes"

    expected = {f"w{n}-{i}" for n in range(8) for i in range(10)}
    reopened = FileSystemStore(store.root, fsync=True)
    assert set(reopened.list(COLLECTION, "record").objects()) == expected
    stamps = [line["ts"] for line in journal(store.root)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 80  # the journal's order held
    assert [f.problem for f in verify(str(store.root)).findings] == []


def test_the_next_writer_sees_a_handed_over_write_and_readers_only_once_durable(store, monkeypatch):
    records = store.list(COLLECTION, "record")
    with records.transaction() as w:
        w.put("r", {"v": 0}, {})
    etag = records.timestamp()
    fsyncs = LogFsyncs(store, monkeypatch)
    fsyncs.gate.clear()
    seen_by_next_writer = []

    def first():
        with records.transaction() as w:
            w.put("r", {"v": 1}, {})

    def second():
        with records.transaction() as w:
            current = w.get("r")
            seen_by_next_writer.append(current.data["v"])
            w.put("r", {"v": current.data["v"] + 1}, {})

    threads = run_threads([first])
    assert fsyncs.started.wait(10)  # the first commit's line waits for its fsync
    threads += run_threads([second])
    deadline = time.monotonic() + 10
    while not seen_by_next_writer:
        assert time.monotonic() < deadline, "the next writer waited for the fsync"
        time.sleep(0.005)
    # Neither write is durable: readers see the list as it was.
    assert records.get("r").data["v"] == 0
    assert records.timestamp() == etag
    assert list(records.newest_first(since=etag)) == []
    fsyncs.gate.set()
    join_all(threads)

    assert seen_by_next_writer == [1]
    assert records.get("r").data["v"] == 2
    assert [line["id"] for line in journal(store.root)] == ["r", "r", "r"]
    with open(records.data_path("r")) as f:
        assert json.load(f)["v"] == 2


@pytest.mark.parametrize("second_line", ["before the cut", "after the cut"])
def test_a_write_that_read_one_whose_fsync_failed_fails_with_it(store, monkeypatch, second_line):
    # The first commit's fsync fails (EIO): the log is cut back, and the
    # second, which updated the record the first created, must not survive
    # it, whether its own line was written before the cut (the cut removes
    # it) or after (it is refused).  An error promises that nothing changed.
    records = store.list(COLLECTION, "record")
    etag = records.timestamp()
    fsyncs = LogFsyncs(store, monkeypatch)
    fsyncs.gate.clear()
    fsyncs.fail = errno.EIO
    outcomes, read, may_write = {}, threading.Event(), threading.Event()

    def first():
        try:
            with records.transaction() as w:
                w.put("r", {"v": 1}, {})
            outcomes["first"] = "durable"
        except (OSError, StorageError) as error:
            outcomes["first"] = error

    def second():
        try:
            with records.transaction() as w:
                current = w.get("r")
                read.set()
                assert may_write.wait(10)
                w.put("r", {"v": current.data["v"] + 1}, {})
            outcomes["second"] = "durable"
        except (OSError, StorageError) as error:
            outcomes["second"] = error

    threads = run_threads([first])
    assert fsyncs.started.wait(10)
    threads += run_threads([second])
    assert read.wait(10)
    if second_line == "before the cut":
        may_write.set()
        deadline = time.monotonic() + 10
        while len(store.commits._segment.unsynced) < 2:
            assert time.monotonic() < deadline, "the second line was never written"
            time.sleep(0.005)
        fsyncs.gate.set()
    else:
        fsyncs.gate.set()
        threads[0].join(10)
        assert "first" in outcomes
        may_write.set()
    join_all(threads)

    assert isinstance(outcomes["first"], OSError | StorageError), outcomes
    assert isinstance(outcomes["second"], OSError | StorageError), outcomes
    assert records.get("r") is None and records.timestamp() == etag
    assert not os.path.exists(records.data_path("r"))
    reopened = FileSystemStore(store.root, fsync=True)
    assert reopened.list(COLLECTION, "record").objects() == {}
    # The list works on afterwards.
    with records.transaction() as w:
        w.put("r", {"v": 10}, {})
    assert records.get("r").data["v"] == 10

"""A big list's index snapshot (fsstore/snapshot.py) spares a load the files it can vouch for.

On a real data directory: a store writes records and stops, a new store
loads the list again, and the test counts which object files that load
opened (an audit hook sees every open()).  Whatever happened to the files or
the journal in between, the second store must serve exactly what is on disk,
as a load without a snapshot would.  ``MIN_OBJECTS`` is lowered so that a
list of 30 records counts as big.
"""

import json
import os
import shutil
import sys
import zlib

import pytest
from conftest import store_with_collection

from kintofs.fsstore import FileSystemStore, listing, snapshot
from kintofs.fsstore.backup import backup
from kintofs.fsstore.journal import Journal
from kintofs.fsstore.verify import verify

RECORDS = (("bucket", "b"), ("collection", "c"))
COUNT = 30
CTIME_MARGIN_NS = listing.CTIME_MARGIN_NS  # the daemon's

_opened = []


def _record_opens(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".json"):
        _opened.append(args[0])


sys.addaudithook(_record_opens)


@pytest.fixture(autouse=True)
def small_is_big(monkeypatch):
    monkeypatch.setattr(snapshot, "MIN_OBJECTS", 10)
    # The files are a moment old, not the few seconds a load needs before it
    # vouches for what it read of them (see the last test).
    monkeypatch.setattr(listing, "CTIME_MARGIN_NS", 0)


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    store = store_with_collection(path)
    with store.commit():
        with store.list(*records_list()).transaction() as writer:
            for i in range(COUNT):
                writer.put(f"r{i:02d}", {"n": i, "text": "x" * 40}, {"write": ["alice"]})
    store.close()  # a clean stop writes the snapshot of the big list
    return path


def records_list():
    return RECORDS, "record"


def folder(data_dir):
    return os.path.join(data_dir, "buckets", "b", "collections", "c", "records")


def load(data_dir):
    """``(records, tombstones, record files opened)`` of a fresh store's first load."""
    store = FileSystemStore(data_dir, fsync=False)
    records = store.list(*records_list())
    _opened.clear()
    objects = {i: stored.data for i, stored in records.objects().items()}
    opened = sorted(os.path.basename(path) for path in _opened if path.startswith(folder(data_dir)))
    tombstones = records.tombstones()
    store.close()
    return objects, tombstones, opened


def test_a_restart_reads_no_file_the_snapshot_vouches_for(data_dir):
    assert os.path.isfile(os.path.join(folder(data_dir), "_index.snapshot"))
    objects, tombstones, opened = load(data_dir)
    assert opened == []
    assert sorted(objects) == [f"r{i:02d}" for i in range(COUNT)]
    assert objects["r07"]["n"] == 7 and tombstones == {}


def test_writes_after_the_snapshot_are_read_from_their_files(data_dir):
    store = FileSystemStore(data_dir, fsync=False)
    with store.list(*records_list()).transaction() as writer:
        writer.put("r03", {"n": "new"}, {"write": ["bob"]})
        writer.delete("r04")
        writer.put("added", {"n": "added"}, {})
    # No close: as after a crash, the snapshot still stands for the old journal.
    objects, tombstones, opened = load(data_dir)
    assert opened == ["added.json", "r03.json"]
    assert objects["r03"]["n"] == "new" and objects["added"]["n"] == "added"
    assert "r04" not in objects and "r04" in tombstones
    assert len(objects) == COUNT


def test_a_file_edited_in_place_while_stopped_is_read_and_becomes_a_revision(data_dir):
    path = os.path.join(folder(data_dir), "r05.json")
    before = os.stat(path)
    with open(path, "rb") as f:
        content = json.loads(f.read())
    edited = json.dumps(dict(content, text="y" * 40), indent=2).encode()
    with open(path, "r+b") as f:  # same inode; mtime put back, as `touch -r` would
        f.write(edited + b"\n")
        f.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    objects, _tombstones, opened = load(data_dir)
    assert opened == ["r05.json"]
    assert objects["r05"]["text"] == "y" * 40
    assert objects["r05"]["last_modified"] > content["last_modified"]


def test_files_added_and_removed_while_stopped_are_seen(data_dir):
    os.remove(os.path.join(folder(data_dir), "r06.json"))
    os.remove(os.path.join(folder(data_dir), "r06.acl"))
    with open(os.path.join(folder(data_dir), "by-hand.json"), "w") as f:
        json.dump({"n": "by hand"}, f)
    objects, tombstones, opened = load(data_dir)
    assert opened == ["by-hand.json"]
    assert "r06" not in objects and "r06" in tombstones
    assert objects["by-hand"]["n"] == "by hand"


def test_a_damaged_snapshot_is_ignored_and_written_again(data_dir):
    path = os.path.join(folder(data_dir), "_index.snapshot")
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:  # what a `sed -i s/x/z/g` over the data directory does
        f.write(content.replace(b"xxxx", b"zzzz"))
    objects, _tombstones, opened = load(data_dir)
    assert len(opened) == COUNT
    assert objects["r01"]["text"] == "x" * 40
    assert load(data_dir)[2] == [], "the full load wrote a good snapshot"


def test_a_snapshot_with_a_right_crc_but_wrong_values_is_ignored(data_dir):
    path = os.path.join(folder(data_dir), "_index.snapshot")
    with open(path, "rb") as f:
        header_line, _, body = f.read().partition(b"\n")
    header, document = json.loads(header_line), json.loads(body)
    document["objects"]["r01"][1] = ["not", "an", "object"]
    body = json.dumps(document).encode()
    header["crc32"] = zlib.crc32(body)
    with open(path, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n" + body)
    objects, _tombstones, opened = load(data_dir)
    assert len(opened) == COUNT
    assert objects["r01"]["n"] == 1


def test_a_rewritten_journal_makes_the_snapshot_stale(data_dir):
    journal = Journal(folder(data_dir))
    entries, _end = journal.read()
    del entries[0]["hash"]
    journal.rewrite(entries)  # other bytes from the first line on, as a compaction writes
    objects, _tombstones, opened = load(data_dir)
    assert len(opened) == COUNT
    assert len(objects) == COUNT


def test_a_deleted_snapshot_costs_one_full_load(data_dir):
    os.remove(os.path.join(folder(data_dir), "_index.snapshot"))
    first, _tombstones, opened = load(data_dir)
    assert len(opened) == COUNT
    again, _tombstones, opened = load(data_dir)
    assert opened == [] and again == first


def test_a_small_list_gets_no_snapshot(tmp_path):
    # (The fixture's list, loaded empty and grown by writes, gets one at the stop.)
    store = store_with_collection(tmp_path / "data")
    with store.list(*records_list()).transaction() as writer:
        for i in range(5):
            writer.put(f"r{i}", {}, {})
    store.close()
    assert not os.path.exists(os.path.join(folder(tmp_path / "data"), "_index.snapshot"))


def test_the_snapshot_is_neither_data_nor_backed_up(data_dir, tmp_path):
    assert [finding.problem for finding in verify(str(data_dir)).findings] == []
    backup(str(data_dir), str(tmp_path / "copy"), fsync=False, say=lambda *_: None)
    copied = folder(tmp_path / "copy")
    assert os.path.isfile(os.path.join(copied, "r01.json"))
    assert not os.path.exists(os.path.join(copied, "_index.snapshot"))


def test_a_restored_copy_with_its_snapshot_is_read_whole(data_dir, tmp_path):
    saved = tmp_path / "saved"
    shutil.copytree(folder(data_dir), saved, copy_function=shutil.copy2)
    store = FileSystemStore(data_dir, fsync=False)
    with store.list(*records_list()).transaction() as writer:
        writer.put("r02", {"n": "later"}, {})
    store.close()
    shutil.rmtree(folder(data_dir))
    shutil.copytree(saved, folder(data_dir), copy_function=shutil.copy2)  # `cp -a` back
    objects, _tombstones, opened = load(data_dir)
    assert len(opened) == COUNT, "copies are new files: nothing is vouched for"
    assert objects["r02"]["n"] == 2


def test_a_load_does_not_vouch_for_files_changed_just_before_it(data_dir, monkeypatch):
    monkeypatch.setattr(listing, "CTIME_MARGIN_NS", CTIME_MARGIN_NS)
    os.remove(os.path.join(folder(data_dir), "_index.snapshot"))
    assert len(load(data_dir)[2]) == COUNT
    # Written a moment before that load began: they may have changed during it,
    # within the resolution of their ctime, so they are read again.
    assert len(load(data_dir)[2]) == COUNT

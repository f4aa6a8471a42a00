"""Unit tests of the pieces under the storage contract: kintofs.fsstore's
journal, atomic writes, cross-process locks, and the edge cases of loading a
list folder (see test_storage_contract.py for the contract itself)."""

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import put_line

from kintofs.fsstore import FileSystemStore, ParentNotFound, StorageBusy, StorageError, StorageFull
from kintofs.fsstore.atomic import (
    TEMP_PREFIX,
    dump_json,
    raise_if_disk_refused,
    read_json,
    remove_quietly,
    write_bytes,
    write_json,
)
from kintofs.fsstore.journal import (
    JOURNAL_NAME,
    Journal,
    encode,
    last_written,
    rewritten_by_others,
    wall_ms,
)
from kintofs.fsstore.locks import LOCK_NAME, locked, locked_for_reading


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith(TEMP_PREFIX))


# -- journal --------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path):
    return Journal(str(tmp_path), fsync=False)


def test_encode_is_one_compact_line_per_entry():
    assert encode([{"ts": 1, "op": "put", "id": "a"}, {"ts": 2, "op": "init"}]) == (
        b'{"ts":1,"op":"put","id":"a"}\n{"ts":2,"op":"init"}\n'
    )


def test_a_missing_journal_reads_empty(journal):
    assert journal.identity() is None
    assert journal.read() == ([], 0)


def test_append_then_read_from_an_offset(journal):
    t = wall_ms()  # timestamps of now: no "at" (see the tests of stamping below)
    journal.append([{"ts": t + 1, "op": "put", "id": "a"}])
    entries, end = journal.read()
    assert entries == [{"ts": t + 1, "op": "put", "id": "a"}]
    assert end == os.path.getsize(journal.path) == journal.identity()[1]
    journal.append([{"ts": t + 2, "op": "delete", "id": "a"}, {"ts": t + 3, "op": "init"}])
    assert journal.read(end) == (
        [{"ts": t + 2, "op": "delete", "id": "a"}, {"ts": t + 3, "op": "init"}],
        os.path.getsize(journal.path),
    )


def test_read_skips_what_is_not_an_entry(journal):
    with open(journal.path, "wb") as f:
        f.write(
            b'{"ts":1,"op":"put","id":"a"}\nnot json\n[1,2]\n{"op":"put"}\n'
            b'{"ts":"2","op":"put"}\n{"ts":3,"op":"put","id":"b"}\n'
        )
    entries, end = journal.read()
    assert [entry["ts"] for entry in entries] == [1, 3]
    assert end == os.path.getsize(journal.path)


def test_a_torn_tail_is_not_read_and_the_next_append_cuts_it(journal):
    t = wall_ms()
    journal.append([{"ts": t, "op": "put", "id": "a"}])
    complete = os.path.getsize(journal.path)
    with open(journal.path, "ab") as f:
        f.write(b'{"ts":2,"op":"pu')
    assert journal.read() == ([{"ts": t, "op": "put", "id": "a"}], complete)
    journal.append([{"ts": t + 1, "op": "put", "id": "b"}])
    with open(journal.path, "rb") as f:
        assert f.read() == encode(
            [{"ts": t, "op": "put", "id": "a"}, {"ts": t + 1, "op": "put", "id": "b"}]
        )


def test_identity_changes_on_append_and_on_rewrite(journal):
    t = wall_ms()
    journal.append([{"ts": t + 1, "op": "init"}])
    first = journal.identity()
    journal.append([{"ts": t + 2, "op": "init"}])
    grown = journal.identity()
    assert grown[0] == first[0] and grown[1] > first[1]
    journal.rewrite([{"ts": t + 2, "op": "init"}])
    replaced = journal.identity()
    assert replaced[0] != first[0], "a rewrite is a new file (another process notices)"
    assert journal.read()[0] == [{"ts": t + 2, "op": "init"}]
    assert leftovers(journal.folder) == []


def test_a_line_whose_time_is_not_now_gets_the_wall_time(journal):
    journal.append([{"ts": 5, "op": "put", "id": "a"}])  # a client forced an old ts
    (entry,) = journal.read()[0]
    assert entry["ts"] == 5 and abs(entry["at"] - wall_ms()) < 60_000
    assert not rewritten_by_others(*journal_now(journal))


def test_a_journal_changed_by_another_program_is_told_from_one_we_wrote(journal, tmp_path):
    t = wall_ms()
    journal.append([{"ts": t, "op": "put", "id": "a"}])
    assert not rewritten_by_others(*journal_now(journal))
    # A copy made long ago, put back now: its ctime is now, its lines are old.
    old = t - 3_600_000
    with open(journal.path, "wb") as f:
        f.write(encode([{"ts": old, "op": "put", "id": "a"}]))
    assert rewritten_by_others(*journal_now(journal))
    old_stamped = [{"ts": old, "op": "put", "id": "a", "at": t}]
    assert not rewritten_by_others(last_written(old_stamped), journal.identity()), (
        "ours, with its wall time"
    )


def journal_now(journal):
    return last_written(journal.read()[0]), journal.identity()


def test_journal_name_is_the_documented_one(journal):
    assert os.path.basename(journal.path) == JOURNAL_NAME == "_journal.jsonl"


# -- atomic writes ------------------------------------------------------------------


def test_write_json_and_read_json(tmp_path):
    path = str(tmp_path / "doc.json")
    write_json(path, {"title": "été", "n": [1, None]}, fsync=False)
    assert read_json(path) == {"title": "été", "n": [1, None]}
    with open(path, "rb") as f:
        assert f.read() == dump_json({"title": "été", "n": [1, None]})
    assert dump_json({"a": "é"}) == '{\n  "a": "é"\n}\n'.encode()  # UTF-8, indented, for people
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_read_json_of_a_missing_file_is_none_and_of_garbage_an_error(tmp_path):
    assert read_json(str(tmp_path / "missing.json")) is None
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError):
        read_json(str(tmp_path / "bad.json"))


def test_write_bytes_replaces_whole_files(tmp_path):
    path = str(tmp_path / "f")
    write_bytes(path, b"old", fsync=True)
    inode = os.stat(path).st_ino
    write_bytes(path, b"new", fsync=False)
    assert open(path, "rb").read() == b"new"
    assert os.stat(path).st_ino != inode, "a new file renamed over the old one"
    assert leftovers(tmp_path) == []


def test_a_write_into_a_missing_folder_fails_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_bytes(str(tmp_path / "gone" / "f"), b"x")
    assert not (tmp_path / "gone").exists()


def test_refused_writes_become_storage_full():
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        with pytest.raises(StorageFull):
            raise_if_disk_refused(OSError(code, os.strerror(code)))
    raise_if_disk_refused(OSError(errno.EACCES, "denied"))  # not a full disk: the caller's


def test_remove_quietly(tmp_path):
    (tmp_path / "f").write_text("x")
    remove_quietly(str(tmp_path / "f"))
    remove_quietly(str(tmp_path / "f"))
    assert not (tmp_path / "f").exists()


# -- locks --------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from kintofs.fsstore.locks import locked
    with locked(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()  # until the test says so (or kills us)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path`` until released or killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "held\n"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_lock_held_by_another_process_excludes_us(tmp_path, holder):
    started = time.monotonic()
    with pytest.raises(StorageBusy):
        with locked(str(tmp_path), timeout=0.3):
            pass
    assert time.monotonic() - started >= 0.3
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(10)
    with locked(str(tmp_path), timeout=5):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    holder.kill()
    holder.wait(10)
    assert os.path.exists(tmp_path / LOCK_NAME), "the file stays ..."
    with locked(str(tmp_path), timeout=1):
        pass  # ... and blocks nobody


def test_threads_of_one_process_exclude_each_other(tmp_path):
    with locked(str(tmp_path)):
        with pytest.raises(StorageBusy):
            with locked(str(tmp_path), timeout=0.05):
                pass


def test_locking_never_creates_the_folder(tmp_path):
    with pytest.raises(ParentNotFound):
        with locked(str(tmp_path / "deleted")):
            pass
    with locked_for_reading(str(tmp_path / "deleted")):
        pass  # readers go on: a deleted list reads as empty
    assert not (tmp_path / "deleted").exists()


# -- loading a list folder: edge cases -----------------------------------------------

COLLECTION = (("bucket", "b"), ("collection", "c"))


@pytest.fixture
def folder(tmp_path):
    """The records folder of b/c, with r1 written; returns its path."""
    store = FileSystemStore(tmp_path / "data", fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    with store.list(COLLECTION[:1], "collection").transaction() as writer:
        writer.put("c", {}, {})
    records = store.list(COLLECTION, "record")
    with records.transaction() as writer:
        writer.put("r1", {"n": 1}, {"read": ["bob"]})
    return records.folder


def load(folder):
    """The list of ``folder`` as a process that never read it loads it."""
    root = folder.split(os.sep + "buckets" + os.sep)[0]
    return FileSystemStore(root, fsync=False).list(COLLECTION, "record")


def journal_of(folder):
    with open(os.path.join(folder, JOURNAL_NAME), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_names_that_are_not_ids_are_never_objects(folder):
    for name in ("_journal.json", ".tmp-x.json", "-dash.json", "a.b.json", "note.txt"):
        with open(os.path.join(folder, name), "w") as f:
            json.dump({"title": "not an object"}, f)
    records = load(folder)
    assert set(records.objects()) == {"r1"}
    assert len(journal_of(folder)) == 1, "and they get no journal line"


def test_a_file_that_is_not_a_json_object_is_skipped(folder):
    for name, content in (("broken", "{nope"), ("listy", "[1, 2]")):
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            f.write(content)
    assert set(load(folder).objects()) == {"r1"}


def test_an_acl_that_is_not_an_object_counts_as_none(folder):
    with open(os.path.join(folder, "r1.acl"), "w") as f:
        f.write("[]")
    assert load(folder).get("r1").acl == {}


def test_a_missing_acl_counts_as_none(folder):
    os.unlink(os.path.join(folder, "r1.acl"))
    assert load(folder).get("r1").acl == {}


def test_a_file_the_journal_never_saw_gets_a_put_line(folder):
    with open(os.path.join(folder, "r2.json"), "w") as f:
        json.dump({"title": "copied in"}, f)
    records = load(folder)
    stored = records.get("r2")
    assert stored.data["id"] == "r2" and stored.data["last_modified"] > 0
    assert journal_of(folder)[-1] == put_line(
        records.data_path("r2"), records.acl_path("r2"), stored.data["last_modified"], "r2"
    )
    assert (
        json.load(open(os.path.join(folder, "r2.json")))["last_modified"]
        == stored.data["last_modified"]
    ), "the file gets the timestamp the journal holds"


def test_a_file_that_vanished_gets_a_delete_line(folder):
    os.unlink(os.path.join(folder, "r1.json"))
    records = load(folder)
    assert records.get("r1") is None
    ts = records.tombstones()["r1"]
    assert journal_of(folder)[-1] == {"ts": ts, "op": "delete", "id": "r1"}


def test_a_container_folder_without_its_data_file_is_not_an_object(tmp_path):
    store = FileSystemStore(tmp_path / "data", fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    os.mkdir(os.path.join(store.list((), "bucket").folder, "stray"))
    fresh = FileSystemStore(tmp_path / "data", fsync=False)
    assert set(fresh.list((), "bucket").objects()) == {"b"}


def test_a_data_directory_of_another_format_is_refused(tmp_path):
    FileSystemStore(tmp_path / "data", fsync=False)
    (tmp_path / "data" / "_format.json").write_text('{"format": "kintofs", "version": 99}')
    with pytest.raises(StorageError, match="version"):
        FileSystemStore(tmp_path / "data", fsync=False)


def test_the_daemon_and_check_refuse_the_same_journal_lines(tmp_path):
    """One validator (journal.parse_line): a line check calls bad is a line the daemon skips."""
    from kintofs.fsstore.journal import Journal
    from kintofs.fsstore.verify import read_journal_leniently

    lines = [
        b'{"ts": 1, "op": "put", "id": "a"}',
        b'{"ts": true, "op": "put", "id": "b"}',  # a bool is no timestamp
        b'{"ts": 2, "op": "rename", "id": "c"}',  # no such operation
        b'{"ts": 3, "op": "delete"}',  # a delete of nothing
        b"not json",
        b'{"ts": 4, "op": "init"}',
    ]
    (tmp_path / "_journal.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    daemon_sees, _ = Journal(str(tmp_path), fsync=False).read()
    check_sees, problems, torn = read_journal_leniently(str(tmp_path))
    assert daemon_sees == check_sees == [{"ts": 1, "op": "put", "id": "a"}, {"ts": 4, "op": "init"}]
    assert [problem for problem, _ in problems] == ["bad-journal-line"] * 4 and not torn


# -- layout: the disk format in one module ---------------------------------------

ROOT = os.path.join(os.sep, "srv", "data")
BLOG = (("bucket", "b"),)
POSTS = (("bucket", "b"), ("collection", "c"))


@pytest.mark.parametrize(
    "relative, expected",
    [
        ("buckets/b/collections/c/records/r1.json", (POSTS, "record", "r1")),
        ("buckets/b/collections/c/records/r1.acl", (POSTS, "record", "r1")),
        ("buckets/b/groups/editors.json", (BLOG, "group", "editors")),
        ("buckets/b/history/0a06d584-aa.json", (BLOG, "history", "0a06d584-aa")),
        ("buckets/b", ((), "bucket", "b")),
        ("buckets/b/_bucket.json", ((), "bucket", "b")),
        ("buckets/b/_bucket.acl", ((), "bucket", "b")),
        ("buckets/b/collections/c", (BLOG, "collection", "c")),
        ("buckets/b/collections/c/_collection.json", (BLOG, "collection", "c")),
        ("accounts/alice.json", ((), "account", "alice")),
        ("accounts/alice@example.com.acl", ((), "account", "alice@example.com")),
    ],
)
def test_object_of_names_the_object_a_file_belongs_to(relative, expected):
    from kintofs.fsstore.layout import object_of

    assert object_of(ROOT, os.path.join(ROOT, *relative.split("/"))) == expected


@pytest.mark.parametrize(
    "relative",
    [
        ".",  # the data directory itself
        "_format.json",
        "_lock",
        "_userid_hmac_secret",
        "_memberships.generation",
        ".heartbeat-1234",
        ".trash-1234",
        "buckets",  # a list folder is no object
        "buckets/_journal.jsonl",
        "buckets/_lock",
        "buckets/.trash-1234",
        "buckets/b/collections/c/records/_journal.jsonl",
        "buckets/b/collections/c/records/_lock",
        "buckets/b/collections/c/records/.tmp-x1y2",
        "buckets/b/collections/c/records/.tmp-upload-x1y2",
        "buckets/b/collections/c/records/r1.attachment",
        "buckets/b/collections/c/records/r1.9f2c4e1a.attachment",
        "buckets/b/collections/c/records/notes.txt",
        "buckets/b/_collection.json",  # a bucket's folder holds _bucket.json
        "buckets/b/things/x.json",  # no kind is called "things"
        "buckets/b/groups/g/x.json",  # a group is a file, never a folder
        "_quarantine/buckets/b/_bucket.json.20260101T000000-abcdef",
        "../elsewhere/buckets/b/_bucket.json",  # outside the data directory
    ],
)
def test_object_of_is_none_for_files_of_no_object(relative):
    from kintofs.fsstore.layout import object_of

    assert object_of(ROOT, os.path.normpath(os.path.join(ROOT, *relative.split("/")))) is None


def test_names_a_list_claims_and_names_the_daemon_loads(tmp_path):
    """check looks at every <id>.json name (to report a folder there), the daemon at files."""
    from kintofs.fsstore.layout import id_with_suffix, named_ids, scan_ids, valid_id_for

    valid = valid_id_for("record")
    for name in ("r2.json", "r1.json", "r1.acl", "r3.attachment", "-x.json", "a.b.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "r0.json").mkdir()
    assert sorted(scan_ids(tmp_path, False, valid)) == ["r1", "r2"]
    assert named_ids(tmp_path, valid) == ["r0", "r1", "r2"]
    assert named_ids(tmp_path / "missing", valid) == []
    assert id_with_suffix("r3.attachment", ".attachment", valid) == "r3"
    assert id_with_suffix("r3.9f2c.attachment", ".attachment", valid) is None


def test_staging_names_are_told_apart_by_target_and_purpose():
    from kintofs.fsstore.layout import is_staging_of, staging_name

    assert staging_name("snap", "partial", "0123abcd") == ".snap.partial-0123abcd"
    assert is_staging_of(".snap.partial-0123abcd", "snap", "partial")
    assert not is_staging_of(".snap.partial-0123abcd", "snap", "restoring")
    assert not is_staging_of(".snap.partial-0123abcd", "sna", "partial")
    assert not is_staging_of(".snap.x.partial-0123abcd", "snap", "partial")  # snap.x's
    assert not is_staging_of(".snap.partial-0123abcd.partial-0123abcd", "snap", "partial")
    assert not is_staging_of(".snap.partial-0123", "snap", "partial")


def test_the_old_homes_of_reserved_names_agree_with_layout():
    """Until every module imports them from layout, the copies must not drift."""
    from kintofs.fsstore import layout, listing, store, verify

    assert TEMP_PREFIX == layout.TEMP_PREFIX
    assert listing.TRASH_PREFIX == layout.TRASH_PREFIX
    assert verify.HEARTBEAT_PREFIX == layout.HEARTBEAT_PREFIX
    assert JOURNAL_NAME == layout.JOURNAL_NAME and LOCK_NAME == layout.LOCK_NAME
    assert store.FORMAT_FILE == layout.FORMAT_FILE and store.FORMAT == layout.FORMAT


def test_every_reserved_name_is_in_the_documented_table():
    from kintofs.fsstore import layout

    docs = open(os.path.join(REPO, "docs", "storage.md"), encoding="utf-8").read()
    table = docs.split("## Names that can never be ids")[1].split("\n## ")[0]
    for name in (
        layout.FORMAT_FILE,
        layout.JOURNAL_NAME,
        layout.LOCK_NAME,
        layout.QUARANTINE,
        layout.TEMP_PREFIX,
        layout.UPLOAD_PREFIX,
        layout.TRASH_PREFIX,
        layout.HEARTBEAT_PREFIX,
        layout.ATTACHMENT_SUFFIX,
        layout.MEMBERSHIPS_GENERATION,
        layout.secret_file("userid_hmac_secret"),
    ):
        assert f"`{name}" in table or f"`<id>{name}`" in table, name


# Literals of reserved names still written out in modules of other owners,
# until they import them from layout (each one is listed in the report of
# the change that made layout their one home).  New ones fail the test below.
NOT_YET_FROM_LAYOUT = {
    ("kintofs/plugins/attachment.py", "upload-"),
    ("kintofs/plugins/attachment.py", "old-"),
}

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESERVED_LITERALS = {"_lock", ".json", ".acl", ".attachment", "old-", "upload-"}
RESERVED_PARTS = ("_journal.jsonl", "_format.json", "_quarantine", ".tmp-", ".trash-")
RESERVED_PARTS += (".heartbeat-", ".generation", ".before-restore-", ".partial-", ".restoring-")


def _string_literals(path):
    """``(line, text)`` of the string constants of a module, docstrings left out."""
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value


def test_reserved_names_are_spelled_out_in_layout_only():
    found = []
    for folder, _, names in os.walk(os.path.join(REPO, "kintofs")):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, REPO).replace(os.sep, "/")
            if relative == "kintofs/fsstore/layout.py":
                continue
            for line, text in _string_literals(path):
                reserved = text in RESERVED_LITERALS or any(p in text for p in RESERVED_PARTS)
                if reserved and (relative, text) not in NOT_YET_FROM_LAYOUT:
                    found.append(f"{relative}:{line}: {text!r} (import it from fsstore/layout.py)")
    assert not found, "\n".join(found)

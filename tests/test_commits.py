"""One change, one commit (kintofs/fsstore/commit.py).

A request's writes and everything they cause (a history entry, an
attachment, later a push event) are durable together or not at all, and so
is a whole batch.  Checked here through the API (in-process), on a real data
directory: after every refused commit a GET and a ``_since`` poll prove that
nothing changed, and no file was left behind.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import Api, assert_error, assert_status, store_with_collection

from kintofs.feed import IN_COMMIT
from kintofs.fsstore import FileSystemStore
from kintofs.fsstore import commit as commit_module
from kintofs.fsstore.atomic import dump_json
from kintofs.fsstore.commit import COMMITS_FOLDER, CommitLog
from kintofs.fsstore.verify import verify

RECORDS = "/buckets/b/collections/c/records"


@pytest.fixture
def app(start_app):
    app = start_app(plugins="history")
    api = Api(app)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    return app, api


def state(api, app):
    """What a client and a person looking at the files would see."""
    records = api.get(RECORDS)
    history = api.get("/buckets/b/history")
    files = sorted(
        os.path.relpath(os.path.join(folder, name), app.data_dir)
        for folder, _dirs, names in os.walk(app.data_dir)
        for name in names
        if COMMITS_FOLDER not in folder
    )
    return records.json(), records.headers["ETag"], history.json(), files


def fail_on(service, object_id):
    """A subscriber whose work fails for ``object_id``: a 500 inside the commit."""

    def refuse(change):
        if change.id == object_id:
            raise RuntimeError("in-commit work failed")

    service.feed.subscribe(refuse, IN_COMMIT)


def creations(count):
    return [
        {"method": "PUT", "path": f"{RECORDS}/r{i}", "body": {"data": {"n": i}}}
        for i in range(1, count + 1)
    ]


def test_a_batch_whose_tenth_write_fails_leaves_nothing_of_the_first_nine(app):
    app, api = app
    etag = api.get(RECORDS).headers["ETag"].strip('"')
    before = state(api, app)
    fail_on(app.service, "r10")
    response = api.post("/batch", json={"requests": creations(12)})
    assert response.status_code == 500
    assert state(api, app) == before
    assert api.get(RECORDS, params={"_since": etag}).json()["data"] == []
    for i in (1, 9, 10):
        assert_status(api.get(f"{RECORDS}/r{i}"), 404)
    # The same batch without the failure is stored whole, history included.
    app.service.feed._subscribers[IN_COMMIT].pop()  # noqa: SLF001 (remove the test's subscriber)
    assert_status(api.post("/batch", json={"requests": creations(12)}), 200)
    assert len(api.get(RECORDS).json()["data"]) == 12
    assert len(api.get("/buckets/b/history").json()["data"]) == 2 + 12


def test_a_4xx_sub_request_undoes_only_itself(app):
    app, api = app
    requests = creations(3) + [
        {
            "method": "PUT",
            "path": f"{RECORDS}/r2",
            "body": {"data": {"n": 20}},
            "headers": {"If-None-Match": "*"},
        },  # 412: r2 exists now
        {"method": "PUT", "path": f"{RECORDS}/r4", "body": {"data": {"n": 4}}},
    ]
    responses = assert_status(api.post("/batch", json={"requests": requests}), 200).json()
    assert [r["status"] for r in responses["responses"]] == [201, 201, 201, 412, 201]
    assert sorted(r["id"] for r in api.get(RECORDS).json()["data"]) == ["r1", "r2", "r3", "r4"]
    assert api.get(f"{RECORDS}/r2").json()["data"]["n"] == 2


def test_sub_requests_see_the_writes_before_them(app):
    app, api = app
    requests = [
        {"method": "PUT", "path": "/buckets/new", "body": {}},
        {"method": "PUT", "path": "/buckets/new/collections/fresh", "body": {}},
        {"method": "PUT", "path": "/buckets/new/collections/fresh/records/a", "body": {"data": {}}},
        {"method": "GET", "path": "/buckets/new/collections/fresh/records"},
        {"method": "DELETE", "path": "/buckets/new/collections/fresh/records/a"},
        {"method": "GET", "path": "/buckets/new/collections/fresh/records/a"},
    ]
    responses = assert_status(api.post("/batch", json={"requests": requests}), 200).json()
    statuses = [r["status"] for r in responses["responses"]]
    assert statuses == [201, 201, 201, 200, 200, 404]
    assert [r["id"] for r in responses["responses"][3]["body"]["data"]] == ["a"]
    assert_status(api.get("/buckets/new/collections/fresh"), 200)


def test_a_failed_batch_that_created_a_bucket_leaves_no_folder(app):
    app, api = app
    fail_on(app.service, "boom")
    requests = [
        {"method": "PUT", "path": "/buckets/new", "body": {}},
        {"method": "PUT", "path": "/buckets/new/collections/fresh", "body": {}},
        {"method": "PUT", "path": "/buckets/new/collections/fresh/records/boom", "body": {}},
    ]
    assert api.post("/batch", json={"requests": requests}).status_code == 500
    assert_status(api.get("/buckets/new"), 403)  # Kinto: a missing bucket is forbidden
    assert not os.path.exists(os.path.join(app.data_dir, "buckets", "new"))


def test_a_write_whose_history_entry_fails_is_not_stored(app):
    app, api = app
    before = state(api, app)
    fail_on(app.service, "r1")
    assert api.put(f"{RECORDS}/r1", json={"data": {}}).status_code == 500
    assert state(api, app) == before


@pytest.mark.daemon
def test_a_full_disk_refuses_the_whole_batch(tmp_path, monkeypatch, start_server):
    flag = tmp_path / "fault"
    monkeypatch.setenv("KFS_TEST_DISK_FAULT_FILE", str(flag))  # read by the daemon at start
    daemon = start_server(plugins="history")
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    before = state(api, daemon)
    flag.write_text("ENOSPC")
    assert_error(api.post("/batch", json={"requests": creations(10)}), 507, 201)
    flag.unlink()
    assert state(api, daemon) == before
    assert_status(api.post("/batch", json={"requests": creations(10)}), 200)
    assert len(api.get(RECORDS).json()["data"]) == 10


# -- the commit log: recovery ------------------------------------------------------


def test_a_commit_whose_files_were_never_written_is_replayed_at_the_next_start(tmp_path):
    # A child process commits (the log line is durable) and is killed before
    # it writes a single object file: the next store to open the folder
    # finishes the commit.
    root = tmp_path / "data"
    script = f"""
import os, signal
from kintofs.fsstore import FileSystemStore, listing
store = FileSystemStore({str(root)!r}, fsync=True)
with store.list((), "bucket").transaction() as w:
    w.put("b", {{}}, {{"write": ["alice"]}})
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
listing.FileList._apply_ops = killed  # dies right after the commit point
with store.list((("bucket", "b"),), "collection").transaction() as w:
    w.put("c", {{"title": "kept"}}, {{"write": ["alice"]}})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    collection_file = root / "buckets" / "b" / "collections" / "c" / "_collection.json"
    assert not collection_file.exists(), "killed before it was written"
    logs = os.listdir(root / COMMITS_FOLDER)
    assert len([name for name in logs if name.endswith(".jsonl")]) == 1
    found = sorted(f.problem for f in verify(str(root)).findings)
    assert found == ["empty-object-folder", "unfinished-commits"]  # its folder was made first

    store = FileSystemStore(root, fsync=True)
    collection = store.get((("bucket", "b"),), "collection", "c")
    assert collection.data["title"] == "kept" and collection.acl == {"write": ["alice"]}
    with open(root / "buckets" / "b" / "collections" / "_journal.jsonl") as f:
        assert [json.loads(line)["id"] for line in f] == ["c"]
    assert [n for n in os.listdir(root / COMMITS_FOLDER) if n.endswith(".jsonl")] == []


def test_an_update_that_kept_its_acl_sidecar_is_replayed_after_a_kill(tmp_path):
    # The log line of such an update says the sidecar is left as it is
    # (acl_file: false): replaying it must write the data file only, and
    # the journal's hash must be that of the files.
    root = tmp_path / "data"
    script = f"""
import os, signal
from kintofs.fsstore import FileSystemStore, listing
store = FileSystemStore({str(root)!r}, fsync=True)
with store.list((), "bucket").transaction() as w:
    w.put("b", {{"v": 1}}, {{"write": ["alice"]}})
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
listing.FileList._apply_ops = killed  # dies right after the commit point
with store.list((), "bucket").transaction() as w:
    w.put("b", {{"v": 2}}, {{"write": ["alice"]}})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (log,) = [n for n in os.listdir(root / COMMITS_FOLDER) if n.endswith(".jsonl")]
    with open(root / COMMITS_FOLDER / log) as f:
        first, update = [json.loads(text) for text in f]
    assert "acl_file" not in first["ops"][0] and update["ops"][0]["acl_file"] is False
    sidecar = root / "buckets" / "b" / "_bucket.acl"
    written = os.stat(sidecar).st_ino

    store = FileSystemStore(root, fsync=True)
    bucket = store.get((), "bucket", "b")
    assert bucket.data["v"] == 2 and bucket.acl == {"write": ["alice"]}
    assert os.stat(sidecar).st_ino == written
    store.close()
    assert verify(str(root)).findings == []


ATTACHED_FILE_SCRIPT = """
import io, os, signal, sys
from kintofs.fsstore import FileSystemStore, listing
from kintofs.fsstore.blobs import AttachedFiles
store = FileSystemStore(sys.argv[1], fsync=True)
with store.list((), "bucket").transaction() as w:
    w.put("b", {}, {})
with store.list((("bucket", "b"),), "collection").transaction() as w:
    w.put("c", {}, {})
records = store.list((("bucket", "b"), ("collection", "c")), "record")
files = AttachedFiles(records, keep_old_versions=sys.argv[3] == "keep")
def attach(content):
    with records.transaction() as w:
        staged = files.stage()
        staged.copy_from(io.BytesIO(content))
        files.put(w, "r", staged)
        w.put("r", {"content": content.decode()}, {})
attach(b"old")
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
listing.FileList._apply_ops = killed  # dies right after the commit point
if sys.argv[2] == "replace":
    attach(b"new")
else:
    with records.transaction() as w:
        files.remove(w, "r")
        w.delete("r")
"""


@pytest.mark.parametrize("keep", ["keep", "no-keep"])
@pytest.mark.parametrize("change", ["replace", "delete"])
def test_an_attached_file_changes_with_its_commit_across_a_crash(tmp_path, change, keep):
    root = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-c", ATTACHED_FILE_SCRIPT, str(root), change, keep],
        capture_output=True,
        text=True,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    folder = root / "buckets" / "b" / "collections" / "c" / "records"
    assert (folder / "r.attachment").read_bytes() == b"old", "killed before the renames"

    store = FileSystemStore(root, fsync=True)  # recovery
    record = store.get((("bucket", "b"), ("collection", "c")), "record", "r")
    names = sorted(os.listdir(folder)) + sorted(os.listdir(folder.parent))
    old_kept = f"r.{hashlib.sha256(b'old').hexdigest()}.attachment"
    if change == "replace":
        assert record.data["content"] == "new"
        assert (folder / "r.attachment").read_bytes() == b"new"
    else:
        assert record is None
        assert not (folder / "r.attachment").exists()
    assert (old_kept in names) == (keep == "keep")
    assert [name for name in names if name.startswith(".tmp-")] == []
    assert verify(str(root)).findings == []


@pytest.mark.daemon
def test_a_serving_daemon_completes_the_commit_of_a_process_that_died_beside_it(
    tmp_path, start_server
):
    daemon = start_server()
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    etag = api.get(RECORDS).headers["ETag"]
    script = f"""
import os, signal
from kintofs.fsstore import FileSystemStore, listing
store = FileSystemStore({str(daemon.data_dir)!r}, fsync=True)
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
listing.FileList._apply_ops = killed  # dies right after the commit point
records = store.list((("bucket", "b"), ("collection", "c")), "record")
with records.transaction() as w:
    w.put("r1", {{"title": "committed"}}, {{"write": ["nobody"]}})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    deadline = time.monotonic() + 15
    while api.get(f"{RECORDS}/r1").status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    record = api.get(f"{RECORDS}/r1")
    assert_status(record, 200)
    assert record.json()["data"]["title"] == "committed"
    since = api.get(f"{RECORDS}?_since={etag.strip(chr(34))}").json()["data"]
    assert [r["id"] for r in since] == ["r1"]

    def logs():
        names = os.listdir(os.path.join(daemon.data_dir, COMMITS_FOLDER))
        return [name for name in names if name.endswith(".jsonl")]

    while len(logs()) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # deleted once its writes are synced
    assert len(logs()) == 1, "the daemon's own"


def test_a_torn_commit_line_is_never_replayed(tmp_path):
    root = tmp_path / "data"
    store = FileSystemStore(root, fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    folder = root / COMMITS_FOLDER
    folder.mkdir(exist_ok=True)
    line = {
        "ops": [
            {
                "list": {"parent": [], "kind": "bucket"},
                "op": "put",
                "ts": 1,
                "id": "torn",
                "data": {"id": "torn"},
                "acl": {},
                "hash": "x",
            }
        ]
    }
    (folder / "dead.jsonl").write_text(json.dumps(line))  # no newline: never synced
    reopened = FileSystemStore(root, fsync=False)
    assert reopened.get((), "bucket", "torn") is None
    assert reopened.get((), "bucket", "b") is not None
    assert not (folder / "dead.jsonl").exists()


def test_a_live_process_s_log_is_left_alone(tmp_path):
    root = tmp_path / "data"
    first = FileSystemStore(root, fsync=False)
    with first.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    logs = [n for n in os.listdir(root / COMMITS_FOLDER) if n.endswith(".jsonl")]
    assert len(logs) == 1
    FileSystemStore(root, fsync=False)  # a second process opening the folder
    assert [n for n in os.listdir(root / COMMITS_FOLDER) if n.endswith(".jsonl")] == logs
    first.close()
    assert not (root / COMMITS_FOLDER).exists(), "a clean stop leaves no log"


def test_many_threads_share_the_commit_log_and_lose_nothing(tmp_path):
    root = tmp_path / "data"
    store = FileSystemStore(root, fsync=True)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    for name in ("c1", "c2", "c3", "c4"):
        with store.list((("bucket", "b"),), "collection").transaction() as writer:
            writer.put(name, {}, {})

    def write(collection, count):
        records = store.list((("bucket", "b"), ("collection", collection)), "record")
        for i in range(count):
            with records.transaction() as writer:
                writer.put(f"r{i}", {"i": i}, {})

    threads = [threading.Thread(target=write, args=(name, 50)) for name in ("c1", "c2", "c3", "c4")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    reopened = FileSystemStore(root, fsync=True)
    for name in ("c1", "c2", "c3", "c4"):
        records = reopened.list((("bucket", "b"), ("collection", name)), "record")
        assert sorted(records.objects()) == sorted(f"r{i}" for i in range(50))


# -- a fault at each step of a change ------------------------------------------------


@pytest.mark.daemon
def test_a_disk_fault_at_each_step_of_a_change_is_all_or_nothing(
    tmp_path, monkeypatch, start_server
):
    # "ENOSPC after N": the daemon's next N storage writes succeed, then every
    # one fails.  N = 0, 1, 2 ... walks the fault through each step of one
    # record write with its history entry, and of one group change: the
    # temp files of each object, the commit log, each journal.
    flag = tmp_path / "fault"
    monkeypatch.setenv("KFS_TEST_DISK_FAULT_FILE", str(flag))
    daemon = start_server(plugins="history")
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    outcomes = []
    for step in range(20):
        before = state(api, daemon)
        etag = before[1].strip('"')
        flag.write_text(f"ENOSPC after {step}")
        response = api.put(f"{RECORDS}/r{step}", json={"data": {"step": step}})
        group = api.put("/buckets/b/groups/g", json={"data": {"members": [f"user{step}"]}})
        flag.unlink()
        outcomes.append((response.status_code, group.status_code))
        assert response.status_code in (201, 507), response.text
        since = [r["id"] for r in api.get(RECORDS, params={"_since": etag}).json()["data"]]
        if response.status_code == 507:
            assert_error(response, 507, 201)
            assert state(api, daemon)[:2] == before[:2], "nothing of the refused write"
            assert since == []
            assert not [f for f in state(api, daemon)[3] if ".tmp-" in f], "no temp file left"
        else:
            assert api.get(f"{RECORDS}/r{step}").json()["data"]["step"] == step
            assert since == [f"r{step}"]
            entries = api.get("/buckets/b/history", params={"record_id": f"r{step}"}).json()
            assert [e["action"] for e in entries["data"]] == ["create"], "its history entry too"
        members = api.get("/buckets/b/groups/g").json().get("data", {}).get("members")
        if group.status_code in (200, 201):
            assert members == [f"user{step}"]
        else:
            assert group.status_code == 507
    refused = [step for step, (record, _group) in enumerate(outcomes) if record == 507]
    assert refused and refused == list(range(len(refused))), outcomes  # the early steps
    assert outcomes[-1] == (201, 200), "a fault after every step is done with"

    # What was served is what the files hold after a restart (the log completes them).
    served = state(api, daemon)[:2]
    daemon.stop()
    restarted = start_server(data_dir=daemon.data_dir, plugins="history")
    assert state(Api(restarted), restarted)[:2] == served
    checked = subprocess.run(
        [sys.executable, "-m", "kintofs", "check", "--data-dir", daemon.data_dir],
        capture_output=True,
        text=True,
    )
    assert "0 damaged" in checked.stdout, checked.stdout


@pytest.mark.daemon
def test_a_file_system_out_of_inodes_refuses_whole_batches(tmp_path, start_server):
    # A real tmpfs with room for few files (nr_inodes): batches of record
    # creations until one is refused, which must leave nothing behind.
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=160,mode=0700", "tmpfs", str(data)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        daemon = start_server(data_dir=data)
        api = Api(daemon)
        assert_status(api.put("/buckets/b"), 201)
        assert_status(api.put("/buckets/b/collections/c"), 201)
        for batch in range(20):
            before = state(api, daemon)
            requests = [
                {"method": "PUT", "path": f"{RECORDS}/b{batch}-{i}", "body": {"data": {"i": i}}}
                for i in range(10)
            ]
            response = api.post("/batch", json={"requests": requests})
            if response.status_code == 507:
                break
            assert_status(response, 200)
        else:
            pytest.fail("160 inodes never ran out")
        assert_error(response, 507, 201)
        assert state(api, daemon) == before, "nothing of the refused batch"
        etag = before[1].strip('"')
        assert api.get(RECORDS, params={"_since": etag}).json()["data"] == []
        # Room again (deleting the records frees their inodes): stored whole.
        assert_status(api.delete(RECORDS), 200)
        assert_status(api.post("/batch", json={"requests": requests}), 200)
        assert len(api.get(RECORDS).json()["data"]) == 10
        daemon.stop()
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_a_failed_fsync_fails_every_line_it_cut_and_none_after(tmp_path, monkeypatch):
    # A's fsync fails while B's line is written behind it: the cut removes
    # both, so both fail (B used to wait for a sync of a line no longer
    # there); C, written after the cut, is durable.
    log = CommitLog(str(tmp_path), fsync=True)
    real_fsync, b_written, calls = os.fsync, threading.Event(), []

    def fsync(fd):
        if log._segment is not None and fd == log._segment.fd:
            calls.append(fd)
            if len(calls) == 1:  # A's: fails once B's line is written behind it
                assert b_written.wait(10)
                raise OSError(errno.EIO, "injected")
        real_fsync(fd)

    outcomes = {}

    def commit(name):
        try:
            ticket = log.write(f'{{"ops":[],"{name}":1}}\n'.encode())
            log.wait_durable(ticket)
            log.done(ticket.segment)
            outcomes[name] = "durable"
        except OSError as error:
            outcomes[name] = error.errno

    monkeypatch.setattr(os, "fsync", fsync)
    first = threading.Thread(target=commit, args=("A",))
    first.start()
    wait_until(lambda: calls)
    second = threading.Thread(target=commit, args=("B",))
    original_append = commit_module._append_to

    def append_then_signal(path, content):
        original_append(path, content)
        b_written.set()

    monkeypatch.setattr(commit_module, "_append_to", append_then_signal)
    second.start()
    first.join(10)
    second.join(10)
    assert outcomes == {"A": errno.EIO, "B": errno.EIO}
    commit("C")
    assert outcomes["C"] == "durable"
    (segment,) = [name for name in os.listdir(log.folder) if name.endswith(".jsonl")]
    with open(os.path.join(log.folder, segment), "rb") as f:
        assert f.read() == b'{"ops":[],"C":1}\n'
    log.close()


def wait_until(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def test_an_update_that_keeps_the_permissions_leaves_the_acl_sidecar_alone(tmp_path):
    root = str(tmp_path / "data")
    store = store_with_collection(root)
    records = store.list((("bucket", "b"), ("collection", "c")), "record")
    alice, bob = {"write": ["alice"]}, {"write": ["bob"]}
    with records.transaction() as writer:
        writer.put("r", {"n": 1}, alice)
    sidecar = records.acl_path("r")
    written = os.stat(sidecar).st_ino
    with records.transaction() as writer:
        writer.put("r", {"n": 2}, alice)
    assert os.stat(sidecar).st_ino == written  # not replaced
    with records.transaction() as writer:
        writer.put("r", {"n": 3}, bob)
    with open(sidecar, encoding="utf-8") as f:
        assert json.load(f) == bob
    # Same permissions, other bytes (reformatted by hand, not yet adopted):
    # rewritten, so that the journal's hash is the files' own.
    with open(sidecar, "w", encoding="utf-8") as f:
        json.dump(bob, f, indent=4)
    with records.transaction() as writer:
        writer.put("r", {"n": 4}, bob)
    with open(sidecar, "rb") as f:
        assert f.read() == dump_json(bob)
    store.close()
    assert verify(root).findings == []
    reopened = FileSystemStore(root, fsync=False).list(
        (("bucket", "b"), ("collection", "c")), "record"
    )
    stored = reopened.get("r")
    assert (stored.data["n"], stored.acl) == (4, bob)

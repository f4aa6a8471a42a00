"""Operator tools over real processes: ``kintofs check [--repair]``,
``kintofs backup`` and ``kintofs restore``, next to a running daemon."""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import requests
from conftest import ALICE, Api, assert_status
from test_concurrency import SHARED_IDS, Acks, put, read_journal, run_workers, setup_collection

from kintofs.fsstore import FileSystemStore
from kintofs.fsstore.backup import backup, restore

RECORDS = "/buckets/blog/collections/posts/records"
GROUPS = "/buckets/blog/groups"


def kintofs_command(*args):
    return [sys.executable, "-m", "kintofs", *map(str, args), "--config", os.devnull]


def kintofs_env():
    return dict(
        {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")},
        KINTOFS_FSYNC="false",
    )


def kintofs(*args, timeout=120):
    return subprocess.run(
        kintofs_command(*args), capture_output=True, text=True, timeout=timeout, env=kintofs_env()
    )


def records_folder(data_dir):
    return os.path.join(data_dir, "buckets", "blog", "collections", "posts", "records")


def fill_blog(api, count=5):
    assert_status(api.put("/buckets/blog"), 201)
    assert_status(api.put("/buckets/blog/collections/posts"), 201)
    assert_status(api.put(f"{GROUPS}/editors", json={"data": {"members": ["bob"]}}), 201)
    return {
        f"r{i}": assert_status(api.put(f"{RECORDS}/r{i}", json={"data": {"n": i}}), 201).json()[
            "data"
        ]
        for i in range(1, count + 1)
    }


def hold_lock(folder):
    """Take a list's lock the documented way (an exclusive flock on its _lock)."""
    fd = os.open(os.path.join(folder, "_lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def wait_until_locked(path, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        finally:
            os.close(fd)
        time.sleep(0.02)
    raise AssertionError(f"nobody took {path}")


# -- check and repair --------------------------------------------------------


def test_check_finds_damage_and_repair_fixes_it_while_the_daemon_serves(start_server):
    daemon = start_server()
    api = Api(daemon)
    created = fill_blog(api)
    folder = records_folder(daemon.data_dir)
    with open(os.path.join(folder, "r1.json"), "w") as f:
        f.write('{"n": 1, "id": "r1", "last_mod')  # a torn file
    with open(os.path.join(folder, "r2.acl"), "w") as f:
        f.write("[not an acl")  # a damaged sidecar
    fd = hold_lock(folder)
    with open(os.path.join(folder, "_journal.jsonl"), "a") as f:
        f.write('{"ts": "yesterday", "op": "put"}\n')  # a damaged line
    os.close(fd)
    for leftover in (
        os.path.join(folder, ".tmp-k3j2h1"),
        os.path.join(daemon.data_dir, "buckets", ".tmp-old-1234"),
    ):
        open(leftover, "w").close()  # orphan temp files
    os.mkdir(os.path.join(daemon.data_dir, "buckets", "blog", "collections", ".trash-99"))
    groups_journal = os.path.join(daemon.data_dir, "buckets", "blog", "groups", "_journal.jsonl")
    with open(groups_journal, "a") as f:
        f.write('{"ts":17956')  # a torn last line

    found = kintofs("check", "--data-dir", daemon.data_dir)
    assert found.returncode == 1, found.stdout
    for expected in (
        "DAMAGE   unreadable-data: buckets/blog/collections/posts/records/r1.json",
        "DAMAGE   unreadable-acl: buckets/blog/collections/posts/records/r2.acl",
        "DAMAGE   bad-journal-line: buckets/blog/collections/posts/records/_journal",
        "LEFTOVER temp-file: buckets/blog/collections/posts/records/.tmp-k3j2h1",
        "LEFTOVER temp-file: buckets/.tmp-old-1234",
        "LEFTOVER trash: buckets/blog/collections/.trash-99",
        "LEFTOVER torn-journal-tail: buckets/blog/groups/_journal.jsonl",
        "3 damaged, 4 leftovers",
    ):
        assert expected in found.stdout, found.stdout

    repaired = kintofs("check", "--repair", "--data-dir", daemon.data_dir)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count("REPAIRED") == 7, repaired.stdout
    assert "0 damaged, 0 leftovers" in repaired.stdout.split("after repair:")[1]
    clean = kintofs("check", "--data-dir", daemon.data_dir)
    assert clean.returncode == 0 and "0 damaged, 0 leftovers" in clean.stdout, clean.stdout
    assert os.listdir(
        os.path.join(
            daemon.data_dir, "_quarantine", "buckets", "blog", "collections", "posts", "records"
        )
    )

    # The running daemon saw the repairs: r1 is deleted (a tombstone for
    # syncing clients), r2 lost its own permissions (a new revision: its
    # files changed), the rest is untouched.
    listed = assert_status(api.get(RECORDS), 200).json()["data"]
    untouched = {k: v for k, v in created.items() if k not in ("r1", "r2")}
    assert {r["id"]: r for r in listed if r["id"] != "r2"} == untouched
    r2 = api.get(f"{RECORDS}/r2").json()
    assert r2["permissions"] == {}
    assert r2["data"]["n"] == created["r2"]["n"]
    assert r2["data"]["last_modified"] > created["r5"]["last_modified"]
    since = api.get(f"{RECORDS}?_since={created['r5']['last_modified']}").json()["data"]
    assert sorted((r["id"], r.get("deleted")) for r in since) == [("r1", True), ("r2", None)]
    assert_status(api.get(f"{GROUPS}/editors"), 200)
    assert_status(api.put(f"{RECORDS}/r6", json={"data": {"n": 6}}), 201)
    read_journal(os.path.join(folder, "_journal.jsonl"))  # complete lines, strictly increasing

    # A fresh daemon finds nothing left to repair.
    daemon.stop()
    again = start_server(data_dir=daemon.data_dir)
    served = Api(again).get(RECORDS).json()["data"]
    assert sorted(r["id"] for r in served) == ["r2", "r3", "r4", "r5", "r6"]
    assert "journal repaired" not in again.logs()


def test_repair_rebuilds_a_lost_journal_from_the_files(start_server):
    daemon = start_server()
    api = Api(daemon)
    created = fill_blog(api, count=8)
    etag = api.get(RECORDS).headers["ETag"]
    daemon.stop()
    os.unlink(os.path.join(records_folder(daemon.data_dir), "_journal.jsonl"))

    found = kintofs("check", "--data-dir", daemon.data_dir)
    assert found.returncode == 1
    assert "DAMAGE   journal-missing: buckets/blog/collections/posts/records" in found.stdout
    assert kintofs("check", "--repair", "--data-dir", daemon.data_dir).returncode == 0

    entries = read_journal(os.path.join(records_folder(daemon.data_dir), "_journal.jsonl"))
    assert [(e["op"], e["id"], e["ts"]) for e in entries] == sorted(
        (("put", rid, data["last_modified"]) for rid, data in created.items()),
        key=lambda entry: entry[2],
    )
    served = start_server(data_dir=daemon.data_dir)
    response = Api(served).get(RECORDS)
    assert {r["id"]: r for r in response.json()["data"]} == created  # timestamps kept
    assert response.headers["ETag"] == etag


def test_a_lock_file_left_by_a_killed_process_blocks_nobody_but_a_live_holder_is_named(
    start_server,
):
    daemon = start_server()
    api = Api(daemon)
    fill_blog(api, count=1)
    folder = records_folder(daemon.data_dir)
    # -o: the lock belongs to the flock process alone, not to its sleeping child.
    holder = subprocess.Popen(["flock", "-o", os.path.join(folder, "_lock"), "sleep", "60"])
    try:
        wait_until_locked(os.path.join(folder, "_lock"))
        busy = kintofs("check", "--lock-wait", "0.5", "--data-dir", daemon.data_dir)
        assert busy.returncode == 1
        assert "DAMAGE   lock-busy: buckets/blog/collections/posts/records/_lock" in busy.stdout
        assert f"pid {holder.pid} (flock -o " in busy.stdout, busy.stdout
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The _lock file is still there; its lock died with its holder.
    assert os.path.exists(os.path.join(folder, "_lock"))
    started = time.monotonic()
    assert_status(api.put(f"{RECORDS}/r2", json={"data": {}}), 201)
    assert time.monotonic() - started < 2
    assert kintofs("check", "--lock-wait", "0.5", "--data-dir", daemon.data_dir).returncode == 0


def test_taking_a_lock_never_brings_back_a_deleted_folder(tmp_path):
    """A writer racing a container's deletion must not recreate its folder
    (filelock, used before, made the missing parents)."""
    from kintofs.fsstore import ParentNotFound
    from kintofs.fsstore.locks import locked

    gone = tmp_path / "collections" / "deleted" / "records"
    with pytest.raises(ParentNotFound):
        with locked(str(gone), timeout=1):
            pass
    assert not (tmp_path / "collections").exists()


# -- the daemon and the CLI writing one data directory at once ----------------


@pytest.mark.slow  # repairs under a write load: soak-style
def test_repairs_by_the_cli_while_a_daemon_writes_lose_nothing(start_server):
    """``check --repair`` rewrites journals under the same locks the daemon
    takes; whatever it does meanwhile, every acknowledged write survives and
    the journal stays strictly ordered."""
    daemon = start_server()
    setup_collection(daemon)
    folder = os.path.join(daemon.data_dir, "buckets", "race", "collections", "things", "records")
    acks = Acks()
    session = requests.Session()
    session.auth = ALICE
    for rid in SHARED_IDS:  # the records every writer updates and patches
        response = put(session, daemon, f"/buckets/race/collections/things/records/{rid}", {})
        acks.record(f"seed {rid}", response.status_code, response.json())
    writers = threading.Thread(target=run_workers, args=([daemon], 4, 150, acks))
    writers.start()
    rounds = 0
    while writers.is_alive() and rounds < 6:
        fd = hold_lock(folder)  # damage the journal the way a buggy script would
        with open(os.path.join(folder, "_journal.jsonl"), "a") as f:
            f.write("not json\n")
        os.close(fd)
        open(os.path.join(folder, ".tmp-planted"), "w").close()
        result = kintofs("check", "--repair", "--data-dir", daemon.data_dir)
        assert "REPAIRED journal rebuilt" in result.stdout, result.stdout
        rounds += 1
    writers.join(120)
    assert rounds >= 2, "the writers finished before the CLI could run alongside them"
    assert acks.failures == []

    entries = read_journal(os.path.join(folder, "_journal.jsonl"))  # strictly increasing
    latest = {}
    for entry in entries:
        if entry["op"] != "init":
            latest[entry["id"]] = entry
    expected = acks.expected_live()
    # Last writer wins, and the journal's last word on each id is that write.
    for rid, writes in acks.writes.items():
        ts, data = max(writes, key=lambda write: write[0])
        assert latest[rid]["ts"] == ts and latest[rid]["op"] == ("put" if data else "delete")
    served = Api(daemon).get("/buckets/race/collections/things/records").json()["data"]
    assert {r["id"]: r for r in served} == expected
    assert kintofs("check", "--data-dir", daemon.data_dir).returncode == 0
    assert "Traceback" not in daemon.logs()


# -- backup and restore ------------------------------------------------------


class BackgroundWriters:
    """Threads that keep writing (creates, updates, deletes) until stopped."""

    def __init__(self, daemon, collections, threads=4):
        self.daemon, self.collections = daemon, collections
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = {}  # uri -> every data version sent (None for a delete)
        self.acked_at = []  # monotonic times of acknowledgements
        self.slowest = 0.0
        self.failures = []
        self.threads = [threading.Thread(target=self.write, args=(n,)) for n in range(threads)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def write(self, n):
        session = requests.Session()
        session.auth = ALICE
        count = 0
        while not self.stop.is_set():
            count += 1
            collection = self.collections[count % len(self.collections)]
            uri = f"{collection}/records/w{n}-{count // 3}"
            data = None if count % 7 == 0 else {"writer": n, "count": count}
            with self.lock:
                self.sent.setdefault(uri, []).append(data)
            started = time.monotonic()
            if data is None:
                response = session.delete(self.daemon.url + uri, timeout=30)
                ok = response.status_code in (200, 404)
            else:
                response = session.put(self.daemon.url + uri, json={"data": data}, timeout=30)
                ok = response.status_code in (200, 201)
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.acked_at.append(time.monotonic())
                if not ok:
                    self.failures.append((uri, response.status_code, response.text[:200]))


def populate(api, collections, per_collection):
    """Records acknowledged before any backup begins: ``{uri: data}``."""
    assert_status(api.put("/buckets/blog"), 201)
    written = {}
    for collection in collections:
        assert_status(api.put(collection), 201)
        for start in range(0, per_collection, 25):
            subs = [
                {
                    "method": "PUT",
                    "path": f"{collection}/records/p{i}",
                    "body": {"data": {"title": f"post {i}", "tags": ["a", "b"]}},
                }
                for i in range(start, min(start + 25, per_collection))
            ]
            responses = assert_status(api.post("/batch", json={"requests": subs}), 200)
            for sub, response in zip(subs, responses.json()["responses"], strict=True):
                assert response["status"] == 201
                written[sub["path"]] = response["body"]["data"]
    return written


def served(daemon, collections):
    api = Api(daemon)
    found = {}
    for collection in collections:
        response = assert_status(api.get(f"{collection}/records"), 200)
        for record in response.json()["data"]:
            found[f"{collection}/records/{record['id']}"] = record
    return found


@pytest.mark.slow  # a backup under a write load: soak-style
def test_backup_under_write_load_restores_to_a_clean_directory(start_server, tmp_path):
    daemon = start_server()
    collections = [f"/buckets/blog/collections/c{i}" for i in range(3)]
    before = populate(Api(daemon), collections, per_collection=100)
    dest = tmp_path / "snapshot.tar.gz"

    with BackgroundWriters(daemon, collections) as writers:
        time.sleep(0.2)  # the writers are busy before the backup begins
        began = time.monotonic()
        result = kintofs("backup", "--data-dir", daemon.data_dir, dest)
        ended = time.monotonic()
        time.sleep(0.1)
    assert result.returncode == 0, result.stderr
    assert "longest lock held" in result.stdout
    assert writers.failures == []
    during = [t for t in writers.acked_at if began <= t <= ended]
    assert len(during) > 10, "no write was acknowledged while the backup ran"
    assert writers.slowest < 5, "a write waited for the backup for long"
    names = tarfile.open(dest).getnames()
    root_files = {
        n
        for n in os.listdir(daemon.data_dir)
        if os.path.isfile(os.path.join(daemon.data_dir, n)) and n != "_lock"
    }
    assert "_format.json" in root_files and root_files <= set(names)
    assert not [n for n in names if n.endswith("_lock") or "/." in n]

    restored_dir = tmp_path / "restored" / "data"
    restored_dir.parent.mkdir()
    result = kintofs("restore", "--data-dir", restored_dir, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    check = kintofs("check", "--data-dir", restored_dir)
    assert check.returncode == 0 and "0 damaged, 0 leftovers" in check.stdout, check.stdout
    assert oct(os.stat(restored_dir).st_mode & 0o777) == "0o700"

    restored = start_server(data_dir=restored_dir)
    found = served(restored, collections)
    for uri, data in before.items():  # every object acknowledged before the backup began
        assert found.get(uri) == data, uri
    for uri, data in found.items():  # and nothing that no one wrote
        if uri not in before:
            assert _content(data) in writers.sent[uri], uri
    assert len(found) > len(before), "no write of the background writers is in the backup"
    # The files agree with their journals: the only repairs are the new
    # revisions of lists last written more than the restore rule's 5 s before
    # the restore, which the daemon takes for restored (as they are).
    logs = restored.logs()
    put_back = set(re.findall(r"(\S+): the journal was put back by another program", logs))
    assert set(re.findall(r"(\S+): journal repaired", logs)) <= put_back


def _content(data):
    return {k: v for k, v in data.items() if k not in ("id", "last_modified")}


def test_restore_refuses_a_data_directory_in_use_unless_forced(start_server, tmp_path):
    """A folder backup this time: the same copy as the tarball, unpacked."""
    daemon = start_server()
    fill_blog(Api(daemon), count=2)
    assert kintofs("backup", "--data-dir", daemon.data_dir, tmp_path / "b").returncode == 0
    assert oct(os.stat(tmp_path / "b" / "_format.json").st_mode & 0o777) == "0o600"
    assert not [
        name
        for _, _, names in os.walk(tmp_path / "b")
        for name in names
        if name == "_lock" or name.startswith(".")
    ]
    assert_status(Api(daemon).put(f"{RECORDS}/after", json={"data": {}}), 201)
    daemon.stop()

    refused = kintofs("restore", "--data-dir", daemon.data_dir, tmp_path / "b")
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert os.path.exists(os.path.join(records_folder(daemon.data_dir), "after.json"))

    forced = kintofs("restore", "--force", "--data-dir", daemon.data_dir, tmp_path / "b")
    assert forced.returncode == 0, forced.stderr
    moved = [
        line.split(" moved to ")[1] for line in forced.stdout.splitlines() if " moved to " in line
    ]
    assert len(moved) == 1
    assert os.path.exists(os.path.join(records_folder(moved[0]), "after.json"))  # kept, not lost
    assert not os.path.exists(os.path.join(records_folder(daemon.data_dir), "after.json"))
    assert os.path.exists(os.path.join(records_folder(daemon.data_dir), "r1.json"))
    assert "0 damaged, 0 leftovers" in forced.stdout


def test_backup_and_restore_refuse_what_they_must_not_do(start_server, tmp_path):
    daemon = start_server()
    fill_blog(Api(daemon), count=1)
    inside = kintofs("backup", "--data-dir", daemon.data_dir, os.path.join(daemon.data_dir, "b"))
    assert inside.returncode == 1 and "inside the data directory" in inside.stderr
    (tmp_path / "taken").write_text("x")
    taken = kintofs("backup", "--data-dir", daemon.data_dir, tmp_path / "taken")
    assert taken.returncode == 1 and "already exists" in taken.stderr
    assert (tmp_path / "taken").read_text() == "x"

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name, content in (
            ("_format.json", json.dumps({"format": "kintofs", "version": 1})),
            ("../escaped.txt", "gotcha"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, _bytes(content))
    hostile = kintofs("restore", "--data-dir", tmp_path / "target", evil)
    assert hostile.returncode == 1 and "refusing archive member" in hostile.stderr
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "target").exists()

    not_kintofs = tmp_path / "random"
    not_kintofs.mkdir()
    (not_kintofs / "hello.txt").write_text("hi")
    foreign = kintofs("restore", "--data-dir", tmp_path / "target", not_kintofs)
    assert foreign.returncode == 1 and "not a kintofs backup" in foreign.stderr
    assert not (tmp_path / "target").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".target")]  # no staging left


def _bytes(text):
    import io

    return io.BytesIO(text.encode())


# -- staging folders left by killed backups and restores ----------------------


def staging_folders(parent, prefix):
    return sorted(name for name in os.listdir(parent) if name.startswith(prefix))


def wait_for(condition, timeout=30, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_a_backup_killed_mid_copy_is_cleaned_up_by_the_next_one(start_server, tmp_path):
    daemon = start_server()
    fill_blog(Api(daemon), count=3)
    dest = tmp_path / "snap"
    # Holding the records list's lock stops the backup in the middle of its
    # copy (it waits for that lock), where it is killed.
    records_lock = hold_lock(records_folder(daemon.data_dir))
    try:
        killed = subprocess.Popen(
            kintofs_command("backup", "--data-dir", daemon.data_dir, dest),
            env=kintofs_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        partial = []

        def copy_under_way():
            partial[:] = staging_folders(tmp_path, ".snap.partial-")
            collection = ("buckets", "blog", "collections", "posts", "_collection.json")
            return partial and os.path.exists(os.path.join(tmp_path, partial[0], *collection))

        wait_for(copy_under_way, what="the backup to copy the collections")
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(10) == -signal.SIGKILL
    finally:
        os.close(records_lock)
    left = tmp_path / partial[0]
    assert left.is_dir() and not dest.exists()
    assert (left / "_lock").exists() and (left / "_format.json").exists()

    again = kintofs("backup", "--data-dir", daemon.data_dir, dest)
    assert again.returncode == 0, again.stderr
    assert f"removed {left}: left by a backup that was killed" in again.stdout
    assert not left.exists() and staging_folders(tmp_path, ".snap.") == []
    assert not (dest / "_lock").exists()
    check = kintofs("check", "--data-dir", dest)
    assert check.returncode == 0 and "0 damaged, 0 leftovers" in check.stdout, check.stdout
    assert len(os.listdir(records_folder(dest))) == len(os.listdir(records_folder(daemon.data_dir)))


def small_data_dir(path):
    store = FileSystemStore(path, fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("blog", {}, {})
    return str(path)


@pytest.mark.parametrize("name", ["snap", "snap.tar.gz"])
def test_a_backup_removes_only_staging_folders_that_no_live_backup_holds(tmp_path, name):
    data_dir = small_data_dir(tmp_path / "data")
    backups = tmp_path / "backups"
    backups.mkdir()
    held, stale, lockless = (
        backups / f".{name}.partial-{token}" for token in ("0000aaaa", "1111bbbb", "2222cccc")
    )
    others = [backups / ".other.partial-3333dddd", backups / f".{name}.restoring-4444eeee"]
    for folder in (held, stale, lockless, *others):
        folder.mkdir()
        (folder / "_format.json").write_text("{}")  # some of a copy
    for folder in (stale, *others):
        (folder / "_lock").touch()  # its lock died with its process
    holder = hold_lock(held)  # a backup that is still running: the test process
    try:
        started = time.monotonic()
        result = kintofs("backup", "--data-dir", data_dir, backups / name)
        assert time.monotonic() - started < 20, "the backup waited for a busy lock"
        assert result.returncode == 0, result.stderr
        removed = [line for line in result.stdout.splitlines() if line.startswith("removed ")]
        assert removed == [
            f"removed {folder}: left by a backup that was killed before it finished"
            for folder in (stale, lockless)
        ]
        assert (held / "_format.json").exists()  # untouched, though the backup finished
        assert not stale.exists() and not lockless.exists()
        assert all((folder / "_format.json").exists() for folder in others)
        assert (backups / name).exists()
    finally:
        os.close(holder)


def test_a_restore_removes_what_a_killed_restore_left(tmp_path):
    backup_dir = tmp_path / "snap"
    backup(small_data_dir(tmp_path / "data"), backup_dir, fsync=False)
    target = tmp_path / "restored"
    stale, held = (tmp_path / f".restored.restoring-{t}" for t in ("0000aaaa", "1111bbbb"))
    for folder in (stale, held):
        folder.mkdir()
        (folder / "_lock").touch()
    holder = hold_lock(held)
    try:
        result = kintofs("restore", "--data-dir", target, backup_dir)
    finally:
        os.close(holder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed {stale}: left by a restore that was killed" in result.stdout
    assert not stale.exists() and held.exists()
    assert (target / "_format.json").exists() and (target / "_lock").exists()


def test_backup_and_restore_with_fsync_on(tmp_path):
    """The flushed path (the CLI tests run with fsync = false): same result, nothing left."""
    data_dir = small_data_dir(tmp_path / "data")
    said = []
    for name in ("snap", "snap.tar.gz"):
        backup(data_dir, tmp_path / name, fsync=True, say=said.append)
        restore(tmp_path / name, tmp_path / f"from-{name}", fsync=True, say=said.append)
        assert (tmp_path / f"from-{name}" / "buckets" / "blog" / "_bucket.json").exists()
    assert (tmp_path / "snap" / "buckets" / "blog" / "_bucket.json").exists()
    assert tarfile.open(tmp_path / "snap.tar.gz").getnames()
    assert said == [] and not [n for n in os.listdir(tmp_path) if n.startswith(".")]

"""Editors' saves and restores of older copies, while the daemon serves.

Each test drives a real tool (sed, vim, mv, cp, rsync, tar, git) on the files
of a real daemon with its watcher on, while a kinto-http client syncs the
records the way an app does (``_since`` its last change).  Then: the GET shows
the new content with a new ETag, the poller saw exactly one new revision and
no tombstone, the list ETag only moved forward, and the record's creator
(bob, who owns nothing else) may still write it: its ACL sidecar was kept.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import kinto_http
import pytest
from conftest import ALICE, BOB, Api, assert_status
from test_live_files import RECORDS, wait_for

from kintofs.fsstore.journal import APPEND_SLACK_MS
from kintofs.fsstore.watch import DELETE_GRACE_SECONDS

# Longer than a file stays missing before it counts as deleted: what a check
# that waits for a real deletion by hand allows.
DELETION_SECONDS = DELETE_GRACE_SECONDS + 5

# A pause between an editor's steps longer than the watcher's settling time.
EDITOR_PAUSE_SECONDS = 1


def run(*command, cwd=None, env=None):
    """Run a real tool; a failure shows its output."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


class Collection:
    """Collection ``c`` of bucket ``b``: alice owns both, bob only creates records."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.owner = Api(daemon, ALICE)
        self.creator = Api(daemon, BOB)
        self.records = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")

    def make(self):
        assert_status(self.owner.put("/buckets/b"), 201)
        anyone = {"record:create": ["system.Authenticated"]}
        collection = self.owner.put("/buckets/b/collections/c", json={"permissions": anyone})
        assert_status(collection, 201)
        assert_status(self.owner.get(RECORDS), 200)  # the first read makes the records folder
        return self

    def path(self, name):
        return os.path.join(self.records, name)

    def create(self, record_id, title):
        response = self.creator.put(f"{RECORDS}/{record_id}", json={"data": {"title": title}})
        return assert_status(response, 201).json()["data"]

    def etag(self):
        """The list's ETag: its timestamp."""
        return int(assert_status(self.owner.get(RECORDS), 200).headers["ETag"].strip('"'))

    def served(self, record_id):
        """``(data, ETag)`` of the record, or None while it is not served."""
        response = self.owner.get(f"{RECORDS}/{record_id}")
        if response.status_code != 200:
            return None
        return response.json()["data"], int(response.headers["ETag"].strip('"'))

    def wait_for_title(self, record_id, title):
        """The record's ``(data, ETag)`` once it shows ``title``."""
        return wait_for(lambda: (s := self.served(record_id)) and s[0]["title"] == title and s)

    def wait_until_gone(self, record_id):
        wait_for(lambda: self.served(record_id) is None, timeout=DELETION_SECONDS)

    def journal_after(self, ts):
        """``(op, id)`` of the journal's lines stamped after ``ts``."""
        with open(self.path("_journal.jsonl"), encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        return sorted((line["op"], line.get("id")) for line in lines if line["ts"] > ts)

    def copy_of_records(self, tmp_path):
        """An older copy of the records folder, made the plain way (``cp -a``)."""
        copy = str(tmp_path / "older-records")
        run("cp", "-a", self.records, copy)
        return copy

    def assert_creator_may_write(self, record_id):
        response = self.creator.put(f"{RECORDS}/{record_id}", json={"data": {"title": "bob's"}})
        assert_status(response, 200)


class Poller:
    """A kinto-http client syncing the records like an app: ``_since`` the last
    change it saw, every few milliseconds, keeping every revision it was shown."""

    def __init__(self, daemon, since):
        self.client = kinto_http.Client(
            server_url=daemon.url, auth=ALICE, bucket="b", collection="c", timeout=30
        )
        self.since = since
        self.revisions = set()  # (id, last_modified, deleted)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join(30)
        self.sync()  # the last changes, after the test's own checks

    def _run(self):
        while not self._done.wait(0.05):
            self.sync()

    def sync(self):
        for record in self.client.get_records(_since=str(self.since)):
            self.revisions.add((record["id"], record["last_modified"], bool(record.get("deleted"))))
            self.since = max(self.since, record["last_modified"])

    def of(self, record_id):
        return sorted((ts, deleted) for rid, ts, deleted in self.revisions if rid == record_id)


def assert_one_new_revision(collection, poller, record_id, before, title):
    """``record_id`` shows ``title`` in one new revision after ``before``, no tombstone."""
    data, etag = collection.served(record_id)
    assert data["title"] == title
    assert etag == data["last_modified"] > before
    assert poller.of(record_id) == [(data["last_modified"], False)]


@pytest.fixture
def collection(start_server):
    return Collection(start_server()).make()


# -- editors' saves ------------------------------------------------------------


def test_sed_in_place_is_one_revision(collection):
    collection.create("r1", "old")
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        run("sed", "-i", "s/old/sed/", collection.path("r1.json"))  # a new file renamed over
        collection.wait_for_title("r1", "sed")
    assert_one_new_revision(collection, poller, "r1", before, "sed")
    assert collection.journal_after(before) == [("put", "r1")]
    collection.assert_creator_may_write("r1")


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
def test_vim_save_is_one_revision(collection):
    collection.create("r1", "old")
    before = collection.etag()
    # backupcopy=no: vim renames the file to r1.json~, writes a new r1.json, then
    # removes the backup.
    script = ["set nobackup writebackup backupcopy=no", "%s/old/vim/", "wq"]
    with Poller(collection.daemon, before) as poller:
        commands = [arg for line in script for arg in ("-c", line)]
        vim = ["vim", "-Es", "-u", "NONE", "-i", "NONE", "-N", "-n"]
        run(*vim, *commands, "r1.json", cwd=collection.records)
        collection.wait_for_title("r1", "vim")
    assert_one_new_revision(collection, poller, "r1", before, "vim")
    assert not os.path.exists(collection.path("r1.json~"))
    collection.assert_creator_may_write("r1")


def test_truncate_then_write_is_one_revision(collection):
    created = collection.create("r1", "old")
    before = collection.etag()
    new = collection.path("new.txt")  # not a record's name: the watcher ignores it
    with open(new, "w", encoding="utf-8") as f:
        json.dump(dict(created, title="rewritten"), f)
    with Poller(collection.daemon, before) as poller:
        run("truncate", "-s", "0", collection.path("r1.json"))
        time.sleep(EDITOR_PAUSE_SECONDS)  # the watcher sees an empty file meanwhile
        run("cp", new, collection.path("r1.json"))  # written in place
        collection.wait_for_title("r1", "rewritten")
    assert_one_new_revision(collection, poller, "r1", before, "rewritten")
    collection.assert_creator_may_write("r1")


def move_away_then_write(collection, pause, content):
    """vim's backup on a slow disk: the file moved aside, ``pause``, a new file.

    A record deleted by hand at the same moment tells when the grace of r1's
    disappearance is over: once it is gone, r1 would be too, if it counted
    as deleted.
    """
    data_file = collection.path("r1.json")
    os.rename(data_file, data_file + "~")
    os.unlink(collection.path("marker.json"))
    time.sleep(pause)
    with open(data_file, "w", encoding="utf-8") as f:
        f.write(content)
    os.unlink(data_file + "~")
    collection.wait_until_gone("marker")


def test_a_file_moved_away_and_written_seconds_later_keeps_its_acl(collection):
    created = collection.create("r1", "old")
    collection.create("marker", "deleted by hand")
    with open(collection.path("r1.acl"), encoding="utf-8") as f:
        acl = f.read()
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        move_away_then_write(collection, 3, json.dumps(dict(created, title="new")))
        collection.wait_for_title("r1", "new")
    assert_one_new_revision(collection, poller, "r1", before, "new")
    assert collection.journal_after(before) == [("delete", "marker"), ("put", "r1")]
    with open(collection.path("r1.acl"), encoding="utf-8") as f:
        assert f.read() == acl
    collection.assert_creator_may_write("r1")


def test_a_file_moved_away_and_written_back_unchanged_is_no_revision(collection):
    collection.create("r1", "old")
    collection.create("marker", "deleted by hand")
    served = collection.served("r1")
    with open(collection.path("r1.json"), encoding="utf-8") as f:
        content = f.read()
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        move_away_then_write(collection, 2, content)
    assert collection.served("r1") == served
    assert poller.of("r1") == []
    assert collection.journal_after(before) == [("delete", "marker")]
    collection.assert_creator_may_write("r1")


# -- copies and restores --------------------------------------------------------


def test_cp_a_of_an_older_record_file_is_a_new_revision(collection, tmp_path):
    collection.create("r1", "old")
    older = collection.copy_of_records(tmp_path)
    assert_status(collection.creator.patch(f"{RECORDS}/r1", json={"data": {"title": "newer"}}), 200)
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        # Old bytes, old mtime, old last_modified: only the inode's ctime is new.
        run("cp", "-a", os.path.join(older, "r1.json"), collection.path("r1.json"))
        collection.wait_for_title("r1", "old")
    assert_one_new_revision(collection, poller, "r1", before, "old")
    assert collection.etag() > before
    collection.assert_creator_may_write("r1")


def make_history(collection, tmp_path, save_older_copy):
    """r1 and r2, ``save_older_copy()``, then r1 edited, r2 deleted, r3 created.

    Sizes differ between the versions of r1: ``rsync -a`` skips a file whose
    size and mtime (to the second) are unchanged.
    """
    collection.create("r1", "old")
    collection.create("r2", "deleted since")
    older = save_older_copy()
    edit = {"data": {"title": "edited since then"}}
    assert_status(collection.creator.patch(f"{RECORDS}/r1", json=edit), 200)
    assert_status(collection.creator.delete(f"{RECORDS}/r2"), 200)
    collection.create("r3", "created since")
    return older


def assert_restored(collection, poller, before):
    """r1 and r2 are as in the older copy, each one new revision; r3 untouched."""
    assert_one_new_revision(collection, poller, "r1", before, "old")
    assert_one_new_revision(collection, poller, "r2", before, "deleted since")
    assert poller.of("r3") == []
    assert collection.served("r3")[0]["title"] == "created since"
    assert collection.etag() > before
    collection.assert_creator_may_write("r1")
    collection.assert_creator_may_write("r2")


def test_cp_a_of_an_older_collection_folder(collection, tmp_path):
    older = make_history(collection, tmp_path, lambda: collection.copy_of_records(tmp_path))
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        run("cp", "-a", older + "/.", collection.records)  # the journal too, in place
        collection.wait_for_title("r1", "old")
        collection.wait_for_title("r2", "deleted since")
    assert_restored(collection, poller, before)


def test_rsync_of_an_older_collection_folder(collection, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (.ci/run installs it)")
    older = make_history(collection, tmp_path, lambda: collection.copy_of_records(tmp_path))
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        run("rsync", "-a", older + "/", collection.records + "/")  # renames, mtimes kept
        collection.wait_for_title("r1", "old")
        collection.wait_for_title("r2", "deleted since")
    assert_restored(collection, poller, before)


def kintofs_backup(daemon, dest):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    command = ["backup", dest, "--data-dir", daemon.data_dir, "--config", os.devnull]
    run(sys.executable, "-m", "kintofs", *command, env=dict(env, KINTOFS_FSYNC="false"))


def test_tar_x_of_a_backup(collection, tmp_path):
    archive = str(tmp_path / "backup.tar.gz")
    make_history(collection, tmp_path, lambda: kintofs_backup(collection.daemon, archive))
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        run("tar", "-xzf", archive, "-C", collection.daemon.data_dir)  # every list's journal too
        collection.wait_for_title("r1", "old")
        collection.wait_for_title("r2", "deleted since")
    assert_restored(collection, poller, before)


def git(data_dir, *args):
    identity = ["-c", "user.name=kintofs tests", "-c", "user.email=tests@kintofs.invalid"]
    return run("git", "-C", data_dir, *identity, *args)


def commit_data_dir(data_dir):
    git(data_dir, "init", "-q")
    git(data_dir, "add", "-A")
    git(data_dir, "commit", "-q", "-m", "data as it was")


def test_git_checkout_of_a_committed_data_dir(collection, tmp_path):
    data_dir = collection.daemon.data_dir
    make_history(collection, tmp_path, lambda: commit_data_dir(data_dir))
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        git(data_dir, "checkout", "--", ".")  # journals, data, ACLs as committed
        collection.wait_for_title("r1", "old")
        collection.wait_for_title("r2", "deleted since")
    assert_restored(collection, poller, before)


# -- restores while the daemon is stopped ---------------------------------------------


def restore_while_stopped(collection, start_server, restore):
    """Stop, ``restore()`` an older copy, start: the restart serves it as new revisions."""
    before = collection.etag()
    poller = Poller(collection.daemon, before)
    collection.daemon.stop()
    # A restore is told from kintofs's own writes by the journal's ctime, later
    # than any time written in it by more than the time an append may take.
    time.sleep(APPEND_SLACK_MS / 1000 + 0.5)
    restore()
    again = Collection(start_server(collection.daemon.data_dir))
    poller.client = Poller(again.daemon, before).client
    poller.sync()
    for record_id, title in (("r1", "old"), ("r2", "deleted since")):
        data, etag = again.served(record_id)
        assert data["title"] == title
        assert poller.of(record_id) == [(data["last_modified"], False)]
        assert etag == data["last_modified"] > before
    assert again.served("r3")[0]["title"] == "created since"  # what the restore left
    assert again.etag() > before
    again.assert_creator_may_write("r1")
    again.assert_creator_may_write("r2")
    return again


def test_git_checkout_of_a_committed_data_dir_while_stopped(collection, tmp_path, start_server):
    data_dir = collection.daemon.data_dir
    make_history(collection, tmp_path, lambda: commit_data_dir(data_dir))
    restore_while_stopped(collection, start_server, lambda: git(data_dir, "checkout", "--", "."))


def test_tar_x_of_a_backup_while_stopped(collection, tmp_path, start_server):
    archive = str(tmp_path / "backup.tar.gz")
    make_history(collection, tmp_path, lambda: kintofs_backup(collection.daemon, archive))
    data_dir = collection.daemon.data_dir
    again = restore_while_stopped(
        collection, start_server, lambda: run("tar", "-xzf", archive, "-C", data_dir)
    )
    # Restarted once more, nothing is restored again: the revisions are kintofs's own.
    etag = again.etag()
    again.daemon.stop()
    assert Collection(start_server(data_dir)).etag() == etag


def restart_after_a_killed_append(collection, start_server, after_the_kill=lambda: None):
    """A journal whose last line was cut short, the list idle for longer than
    the restore rule's slack before (a kill mid-append): the restart serves
    every record as it was, since no program but kintofs wrote the journal."""
    served = {rid: collection.create(rid, "before the kill") for rid in ("r1", "r2")}
    before = collection.etag()
    collection.daemon.stop()
    time.sleep(APPEND_SLACK_MS / 1000 + 0.5)
    with open(collection.path("_journal.jsonl"), "ab") as journal:
        journal.write(b'{"ts": 1, "op": "put", "id": "r3", "ha')  # a kill mid-write
    after_the_kill()
    again = Collection(start_server(collection.daemon.data_dir))
    assert {rid: again.served(rid)[0] for rid in served} == served
    assert again.etag() == before


def test_a_torn_journal_line_is_a_crash_not_a_restore(collection, start_server):
    restart_after_a_killed_append(collection, start_server)


def test_a_torn_journal_line_cut_by_check_repair_is_no_restore(collection, start_server):
    def repair():
        command = ["check", "--repair", "--data-dir", collection.daemon.data_dir]
        assert "cut the torn last line" in run(sys.executable, "-m", "kintofs", *command)
        clean = run(sys.executable, "-m", "kintofs", *command[:1], *command[2:])
        assert "0 damaged, 0 leftovers" in clean

    restart_after_a_killed_append(collection, start_server, repair)


def test_git_checkout_of_a_journal_alone_takes_nothing_back(collection, start_server):
    data_dir = collection.daemon.data_dir
    collection.create("r1", "old")
    commit_data_dir(data_dir)
    assert_status(collection.creator.patch(f"{RECORDS}/r1", json={"data": {"title": "new"}}), 200)
    collection.create("r2", "created since")
    served = {rid: collection.served(rid) for rid in ("r1", "r2")}
    before = collection.etag()
    with Poller(collection.daemon, before) as poller:
        journal = os.path.relpath(collection.path("_journal.jsonl"), data_dir)
        git(data_dir, "checkout", "--", journal)
        assert collection.etag() == before  # its next read loads the older journal
    assert {rid: collection.served(rid) for rid in ("r1", "r2")} == served
    assert poller.revisions == set()
    assert collection.owner.get(RECORDS, params={"_since": str(before)}).json()["data"] == []
    # What was served is on disk again: a daemon started afresh serves the same.
    collection.daemon.stop()
    again = Collection(start_server(data_dir))
    assert again.etag() == before
    assert {rid: again.served(rid) for rid in ("r1", "r2")} == served

"""Files edited by hand become normal, revisioned changes (the watcher)."""

import json
import os
import time

import pytest
from conftest import ALICE, BOB, Api, assert_status, store_with_collection

from kintofs.fsstore.watch import DELETE_GRACE_SECONDS, FileWatcher

RECORDS = "/buckets/b/collections/c/records"


def wait_for(check, timeout=10, what="the daemon to notice the change"):
    """Poll ``check()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def write_by_hand(path, document):
    with open(path, "w", encoding="utf-8") as f:  # not atomic, like an editor
        json.dump(document, f)


@pytest.fixture
def live(start_server):
    daemon = start_server()
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    assert_status(api.get(RECORDS), 200)  # the first read makes the records folder
    records = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")
    # watchdog watches a new folder a moment after it appears: an edit made
    # before that is only seen at the next load.  A probe edit proves it watched.
    write_by_hand(os.path.join(records, "probe.json"), {"probe": True})
    wait_for(lambda: api.get(RECORDS + "/probe").status_code == 200)
    return api, records


def test_an_edited_record_gets_a_new_revision(live):
    api, records = live
    before = assert_status(api.put(RECORDS + "/r1", json={"data": {"title": "old"}}), 201).json()[
        "data"
    ]
    list_etag = api.get(RECORDS).headers["ETag"].strip('"')

    write_by_hand(os.path.join(records, "r1.json"), dict(before, title="edited by hand"))

    after = wait_for(
        lambda: (d := api.get(RECORDS + "/r1").json()["data"])["title"] == "edited by hand" and d
    )
    assert after["last_modified"] > before["last_modified"]
    changes = api.get(RECORDS, params={"_since": list_etag}).json()["data"]
    assert [(r["id"], r["title"]) for r in changes] == [("r1", "edited by hand")]
    with open(os.path.join(records, "r1.json"), encoding="utf-8") as f:
        assert json.load(f)["last_modified"] == after["last_modified"]
    with open(os.path.join(records, "_journal.jsonl"), encoding="utf-8") as f:
        last = json.loads(f.readlines()[-1])
    assert (last["ts"], last["op"], last["id"]) == (after["last_modified"], "put", "r1")


def test_a_file_added_by_hand_becomes_a_record(live):
    api, records = live
    write_by_hand(os.path.join(records, "new1.json"), {"title": "dropped in"})
    record = wait_for(
        lambda: (
            api.get(RECORDS + "/new1").status_code == 200
            and api.get(RECORDS + "/new1").json()["data"]
        )
    )
    assert record["title"] == "dropped in" and record["id"] == "new1"
    assert isinstance(record["last_modified"], int)


def test_a_file_moved_in_from_outside_the_data_directory_becomes_a_record(live):
    # watchdog reports a rename whose "from" it did not watch as a creation.
    api, records = live
    outside = os.path.join(os.path.dirname(api.daemon.data_dir), "from-elsewhere.json")
    write_by_hand(outside, {"title": "moved in"})
    os.rename(outside, os.path.join(records, "moved1.json"))
    record = wait_for(
        lambda: (r := api.get(RECORDS + "/moved1")).status_code == 200 and r.json()["data"]
    )
    assert record["title"] == "moved in"


def test_a_file_deleted_by_hand_leaves_a_tombstone(live):
    api, records = live
    created = assert_status(api.put(RECORDS + "/gone", json={"data": {}}), 201).json()["data"]
    os.unlink(os.path.join(records, "gone.json"))
    # Served until the grace for an editor's save is over.
    wait_for(lambda: api.get(RECORDS + "/gone").status_code == 404, DELETE_GRACE_SECONDS + 5)
    changes = api.get(RECORDS, params={"_since": created["last_modified"]}).json()["data"]
    assert len(changes) == 1 and changes[0]["id"] == "gone" and changes[0]["deleted"] is True
    assert not os.path.exists(os.path.join(records, "gone.acl"))


def test_invalid_json_is_ignored_until_it_is_fixed(live):
    api, records = live
    before = assert_status(api.put(RECORDS + "/r2", json={"data": {"n": 1}}), 201).json()["data"]
    path = os.path.join(records, "r2.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"n": ')  # half-way through an edit
    time.sleep(0.8)
    assert api.get(RECORDS + "/r2").json()["data"] == before
    write_by_hand(path, {"n": 2})
    after = wait_for(lambda: (d := api.get(RECORDS + "/r2").json()["data"])["n"] == 2 and d)
    assert after["last_modified"] > before["last_modified"]


def test_our_own_writes_are_not_adopted_twice(live):
    api, records = live
    for n in range(5):
        assert_status(api.put(RECORDS + f"/o{n}", json={"data": {"n": n}}), 201)
    time.sleep(1)  # let the watcher see every event of those writes
    with open(os.path.join(records, "_journal.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    ours = [line["id"] for line in lines if line["op"] == "put" and line["id"] != "probe"]
    assert ours == [f"o{n}" for n in range(5)]


def test_an_atomic_save_named_like_another_process_temp_file_is_adopted(live):
    # The watcher skips the renames of this daemon's own temp files, known by
    # the process id and token in their names; another process's are an edit
    # like any other.
    api, records = live
    before = assert_status(api.put(RECORDS + "/r3", json={"data": {"n": 1}}), 201).json()["data"]
    temp = os.path.join(records, ".tmp-1-0")
    write_by_hand(temp, dict(before, n=2))
    os.replace(temp, os.path.join(records, "r3.json"))
    after = wait_for(lambda: (d := api.get(RECORDS + "/r3").json()["data"])["n"] == 2 and d)
    assert after["last_modified"] > before["last_modified"]


def test_the_watcher_hears_nothing_of_our_own_writes(tmp_path):
    # Each put closes and renames temp files and closes a journal and the
    # commit log: none of it may reach the handler (each event would cost
    # more CPU than the write).  (A delete's removals are heard: nothing in
    # them says whose they are.)  An edit by hand after them proves that
    # every event before it was delivered.
    store = store_with_collection(str(tmp_path / "data"))
    records = store.list((("bucket", "b"), ("collection", "c")), "record")
    with records.transaction() as writer:  # makes the records folder and the commit log
        writer.put("r0", {"n": 0}, {"write": ["alice"]})
    heard = []

    class Listening(FileWatcher):
        def on_any_event(self, event):
            heard.append(os.path.basename(event.src_path))
            super().on_any_event(event)

    watcher = Listening(store).start()
    try:
        for n in range(1, 11):
            with records.transaction() as writer:
                writer.put(f"r{n}", {"n": n}, {"write": ["alice"]})
        with records.transaction() as writer:
            writer.put("r1", {"n": "updated"}, {"write": ["alice"]})
        write_by_hand(os.path.join(records.folder, "probe.json"), {"by": "hand"})
        wait_for(lambda: "probe.json" in heard, what="the watcher to hear the edit")
        assert set(heard) == {"probe.json"}
        wait_for(lambda: records.get("probe"), what="the edit to be adopted")
    finally:
        watcher.stop()


def test_a_group_edited_by_hand_changes_memberships(live):
    api, _ = live
    bob_id = Api(api.daemon, BOB).get("/").json()["user"]["id"]
    assert_status(api.put("/buckets/b/groups/g", json={"data": {"members": []}}), 201)
    assert_status(
        api.patch(
            "/buckets/b/collections/c", json={"permissions": {"read": ["/buckets/b/groups/g"]}}
        ),
        200,
    )
    bob = Api(api.daemon, BOB)
    assert bob.get(RECORDS).status_code == 403

    group_file = os.path.join(api.daemon.data_dir, "buckets", "b", "groups", "g.json")
    with open(group_file, encoding="utf-8") as f:
        group = json.load(f)
    write_by_hand(group_file, dict(group, members=[bob_id]))

    wait_for(lambda: bob.get(RECORDS).status_code == 200)
    assert "/buckets/b/groups/g" in bob.get("/").json()["user"]["principals"]


def test_the_watcher_can_be_turned_off(start_server):
    daemon = start_server(watch_files="false")
    api = Api(daemon, ALICE)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    before = assert_status(api.put(RECORDS + "/r1", json={"data": {"v": 1}}), 201).json()["data"]
    records = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")
    write_by_hand(os.path.join(records, "r1.json"), dict(before, v=2))
    time.sleep(1)
    assert api.get(RECORDS + "/r1").json()["data"] == before

"""An object file that does not read is a heartbeat warning, not a failure.

The daemon serves on the last good version of a file it cannot read (an
editor half-way through, bad bytes) and ``kintofs check`` reports it; the
heartbeat names it too, under ``unreadable_files``, while ``storage`` stays
true and the answer stays 200 (README, "Operating kintofs").
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import Api, assert_status
from test_live_files import wait_for

from kintofs.fsstore.store import UNREADABLE_LISTED

RECORDS = "/buckets/b/collections/c/records"
RECORDS_FOLDER = os.path.join("buckets", "b", "collections", "c", "records")


def heartbeat(api):
    response = assert_status(api.as_user(None).get("/__heartbeat__"), 200)
    body = response.json()
    assert body["storage"] is True
    return body


def write_by_hand(path, text):
    with open(path, "w", encoding="utf-8") as f:  # in place, like an editor
        f.write(text)


def make_collection(api):
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)


def test_a_file_edited_into_bad_json_is_named_until_it_is_fixed(start_server):
    daemon = start_server()  # with the watcher (watch_files), as deployed
    api = Api(daemon)
    make_collection(api)
    good = assert_status(api.put(RECORDS + "/r1", json={"data": {"n": 1}}), 201).json()["data"]
    assert "unreadable_files" not in heartbeat(api)

    path = os.path.join(daemon.data_dir, RECORDS_FOLDER, "r1.json")
    write_by_hand(path, '{"n": ')  # half-way through an edit
    assert_status(api.get(RECORDS), 200)
    warning = wait_for(lambda: heartbeat(api).get("unreadable_files"))
    assert warning == {"count": 1, "paths": [f"{RECORDS_FOLDER}/r1.json"]}

    # Meanwhile the last good version is served, alone and in the list.
    assert api.get(RECORDS + "/r1").json()["data"] == good
    assert api.get(RECORDS).json()["data"] == [good]
    assert heartbeat(api)["unreadable_files"] == warning  # a heartbeat changes nothing

    write_by_hand(path, json.dumps({"n": 2}))
    fixed = wait_for(lambda: (d := api.get(RECORDS + "/r1").json()["data"])["n"] == 2 and d)
    assert fixed["last_modified"] > good["last_modified"]
    assert "unreadable_files" not in heartbeat(api)


def test_a_file_deleted_while_unreadable_leaves_the_warning(start_server):
    daemon = start_server()
    api = Api(daemon)
    make_collection(api)
    assert_status(api.put(RECORDS + "/r1", json={"data": {"n": 1}}), 201)
    path = os.path.join(daemon.data_dir, RECORDS_FOLDER, "r1.json")
    write_by_hand(path, "not json")
    wait_for(lambda: heartbeat(api).get("unreadable_files"))
    os.unlink(path)
    wait_for(lambda: "unreadable_files" not in heartbeat(api), timeout=20)  # after the grace


@pytest.fixture
def written(start_app, tmp_path):
    """A collection with records ``r00``... written by one server (no watcher),
    and what a second one on the same data reads (its first load)."""
    data_dir = tmp_path / "data"
    writer = Api(start_app(data_dir))
    make_collection(writer)
    for n in range(UNREADABLE_LISTED + 5):
        assert_status(writer.put(f"{RECORDS}/r{n:02}", json={"data": {"n": n}}), 201)
    return data_dir, data_dir / RECORDS_FOLDER, lambda: Api(start_app(data_dir))


def test_a_load_names_what_it_could_not_read_and_a_write_clears_it(written):
    _data_dir, records, second_server = written
    (records / "r03.json").write_bytes(b"\xff\xfe not json")
    (records / "r07.acl").write_text("{", encoding="utf-8")  # the ACL sidecar, this time
    api = second_server()
    ids = [r["id"] for r in assert_status(api.get(RECORDS), 200).json()["data"]]
    assert "r03" not in ids and "r07" not in ids and len(ids) == UNREADABLE_LISTED + 3
    assert heartbeat(api)["unreadable_files"] == {
        "count": 2,
        "paths": [f"{RECORDS_FOLDER}/r03.json", f"{RECORDS_FOLDER}/r07.acl"],
    }

    assert_status(api.put(RECORDS + "/r03", json={"data": {"n": "again"}}), 201)
    assert heartbeat(api)["unreadable_files"] == {
        "count": 1,
        "paths": [f"{RECORDS_FOLDER}/r07.acl"],
    }


def test_the_list_is_bounded_and_the_count_is_not(written):
    _data_dir, records, second_server = written
    for path in records.glob("r*.json"):
        path.write_text("", encoding="utf-8")  # truncated, as by a crash of an editor
    api = second_server()
    assert assert_status(api.get(RECORDS), 200).json()["data"] == []
    warning = heartbeat(api)["unreadable_files"]
    assert warning["count"] == UNREADABLE_LISTED + 5
    assert warning["paths"] == [f"{RECORDS_FOLDER}/r{n:02}.json" for n in range(UNREADABLE_LISTED)]


def test_a_repair_that_quarantines_the_file_clears_it(written):
    data_dir, records, second_server = written
    (records / "r01.json").write_text("[1, 2", encoding="utf-8")
    api = second_server()
    assert_status(api.get(RECORDS), 200)
    assert heartbeat(api)["unreadable_files"]["count"] == 1

    subprocess.run(
        [sys.executable, "-m", "kintofs", "check", "--repair", "--data-dir", str(data_dir)],
        check=False,  # exit code 1: it found something (and repaired it)
        capture_output=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")},
    )
    assert not (records / "r01.json").exists()
    assert_status(api.get(RECORDS), 200)  # the list sees the repair
    assert "unreadable_files" not in heartbeat(api)

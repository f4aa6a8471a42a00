"""Files written into a folder that appeared an instant before are seen too.

The watcher learns of a new folder from its creation event and only then
watches it: a file written inside in between (``mkdir -p .../records &&
write r1.json``, ``cp -a`` or ``tar -x`` of a whole collection, a folder moved
in from elsewhere) sends no event of its own.  Each test makes a new
collection (or a new bucket holding one, or the records folder of a
collection whose list is in memory) with records in one quick burst, many
times over so that the race shows, while the lists above it are in memory
(so that no load from disk finds the files instead), then polls ``_since``
over HTTP until every record is there, with the permissions written in the
burst (a new bucket's ACL sidecar, written last, must not be adopted as
missing).
"""

import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import ALICE, Api, assert_status, basicauth_id

BURSTS = 20
RECORDS_PER_BURST = 5
SECONDS_TO_SEE_A_BURST = 10


def write_file(path, document):
    with open(path, "w", encoding="utf-8") as f:  # not atomic, like a person's script
        json.dump(document, f)


def make_collection_tree(collection_folder, collection_id, record_ids):
    """``mkdir -p <collection>/records``, then ``_collection.json`` and the
    records' files, as fast as Python goes."""
    records = os.path.join(collection_folder, "records")
    os.makedirs(records, exist_ok=True)
    write_file(os.path.join(collection_folder, "_collection.json"), {"id": collection_id})
    for record_id in sorted(record_ids):
        write_file(os.path.join(records, f"{record_id}.json"), {"title": record_id})


def make_bucket_tree(bucket_folder, bucket_id, collection_id, record_ids):
    """``mkdir -p <bucket>/collections/<collection>/records``, then a bucket
    alice may write, holding that collection with records."""
    collection = os.path.join(bucket_folder, "collections", collection_id)
    os.makedirs(os.path.join(collection, "records"))
    write_file(os.path.join(bucket_folder, "_bucket.json"), {"id": bucket_id})
    write_file(os.path.join(bucket_folder, "_bucket.acl"), {"write": [basicauth_id(ALICE)]})
    make_collection_tree(collection, collection_id, record_ids)


def record_ids_of(burst):
    return {f"r{burst}x{n}" for n in range(RECORDS_PER_BURST)}


def wait_for_records(api, path, expected):
    """Poll ``_since`` on ``path`` until it shows ``expected`` (ids, no tombstone)."""
    deadline = time.monotonic() + SECONDS_TO_SEE_A_BURST
    seen = None
    while time.monotonic() < deadline:
        response = api.get(path, params={"_since": "0"})
        if response.status_code == 200:
            data = response.json()["data"]
            seen = {r["id"] for r in data if not r.get("deleted")}
            if seen == expected:
                return
        else:
            seen = response.status_code
        time.sleep(0.05)
    raise AssertionError(f"{path}: after {SECONDS_TO_SEE_A_BURST} s, saw {seen!r}")


@pytest.fixture
def watched(start_server):
    daemon = start_server()
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    # The lists the bursts add to are in memory: only the watcher can tell them.
    assert_status(api.get("/buckets"), 200)
    assert_status(api.get("/buckets/b/collections"), 200)
    return api, os.path.join(daemon.data_dir, "buckets")


def test_a_new_collection_folder_written_in_one_burst(watched):
    api, buckets = watched
    for burst in range(BURSTS):
        cid = f"c{burst}"
        expected = record_ids_of(burst)
        make_collection_tree(os.path.join(buckets, "b", "collections", cid), cid, expected)
        wait_for_records(api, f"/buckets/b/collections/{cid}/records", expected)


def test_a_new_bucket_folder_written_in_one_burst(watched):
    api, buckets = watched
    for burst in range(BURSTS):
        bid = f"nb{burst}"
        expected = record_ids_of(burst)
        make_bucket_tree(os.path.join(buckets, bid), bid, "c", expected)
        wait_for_records(api, f"/buckets/{bid}/collections/c/records", expected)


def test_the_records_folder_of_a_collection_made_by_hand(watched):
    """A collection made over HTTP has no records folder until its records
    are listed; a GET of one record reads the list as empty, and keeps it so
    (no journal to tell otherwise).  Then a person makes the folder and
    writes records in it: only the watcher can tell the list."""
    api, buckets = watched
    for burst in range(BURSTS):
        cid = f"e{burst}"
        expected = record_ids_of(burst)
        records_path = f"/buckets/b/collections/{cid}/records"
        assert_status(api.put(f"/buckets/b/collections/{cid}"), 201)
        assert_status(api.get(f"{records_path}/{min(expected)}"), 404)  # the list, read empty
        records = os.path.join(buckets, "b", "collections", cid, "records")
        assert not os.path.exists(records)
        os.mkdir(records)
        for record_id in sorted(expected):
            write_file(os.path.join(records, f"{record_id}.json"), {"title": record_id})
        wait_for_records(api, records_path, expected)


@pytest.mark.parametrize("tool", ["cp -a", "tar -x", "mv"])
def test_a_collection_folder_copied_in(watched, tmp_path, tool):
    """``cp -a`` / ``tar -x`` of a prepared collection, or a ``mv`` of one from
    elsewhere on the disk (which makes the whole tree appear at once)."""
    if tool == "tar -x" and shutil.which("tar") is None:
        pytest.skip("tar is not installed")
    api, buckets = watched
    collections = os.path.join(buckets, "b", "collections")
    for burst in range(BURSTS // 2):
        cid = f"{tool.split()[0]}{burst}"
        expected = record_ids_of(burst)
        source = tmp_path / f"prepared-{burst}" / cid
        make_collection_tree(str(source), cid, expected)
        if tool == "cp -a":
            subprocess.run(["cp", "-a", str(source), collections], check=True)
        elif tool == "tar -x":
            archive = tmp_path / f"prepared-{burst}.tar"
            subprocess.run(["tar", "-cf", str(archive), "-C", str(source.parent), cid], check=True)
            subprocess.run(["tar", "-xf", str(archive), "-C", collections], check=True)
        else:
            os.rename(source, os.path.join(collections, cid))  # tmp_path: same disk as data
        wait_for_records(api, f"/buckets/b/collections/{cid}/records", expected)

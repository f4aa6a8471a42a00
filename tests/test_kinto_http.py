"""The real ``kinto-http`` client from PyPI against a real kintofs daemon.

Every object the client writes is also read back from the data directory:
it must be a plain JSON file holding exactly what the API returns.
"""

import json
import os

import kinto_http
import pytest
from conftest import ALICE, BOB, basicauth_id
from kinto_http.exceptions import KintoBatchException, KintoException

ALICE_ID = basicauth_id(ALICE)

# kinto-http makes its own requests sessions: every test talks to the daemon.
pytestmark = pytest.mark.daemon


# -- helpers ---------------------------------------------------------------


def make_client(server, auth=ALICE, **kwargs):
    return kinto_http.Client(server_url=server.url, auth=auth, timeout=30, **kwargs)


@pytest.fixture
def blog(client, server):
    """Bucket ``blog`` with collection ``articles``; the client defaults to them."""
    client.create_bucket(id="blog")
    client.create_collection(id="articles", bucket="blog")
    return make_client(server, bucket="blog", collection="articles")


@pytest.fixture
def client(api, server):
    """A client for alice on a freshly flushed server."""
    return make_client(server)


def path_of(server, *parts):
    return os.path.join(server.data_dir, *parts)


def bucket_file(server, bid):
    return path_of(server, "buckets", bid, "_bucket.json")


def collection_file(server, bid, cid):
    return path_of(server, "buckets", bid, "collections", cid, "_collection.json")


def group_file(server, bid, gid):
    return path_of(server, "buckets", bid, "groups", f"{gid}.json")


def record_file(server, bid, cid, rid):
    return path_of(server, "buckets", bid, "collections", cid, "records", f"{rid}.json")


def read_file(path):
    """What ``cat`` shows: UTF-8 text that parses as one JSON object."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    document = json.loads(text)
    assert isinstance(document, dict), path
    return text, document


def assert_on_disk(path, data):
    """The file at ``path`` holds exactly ``data`` (the API's ``data``)."""
    assert os.path.isfile(path), f"{path} missing"
    _, document = read_file(path)
    assert document == data


def no_temp_files(root):
    return [
        os.path.join(folder, name)
        for folder, _, files in os.walk(root)
        for name in files
        if name.startswith(".tmp-")
    ]


# -- server info -----------------------------------------------------------


def test_server_info_names_the_protocol_and_the_user(client, server):
    info = client.server_info()
    assert info["http_api_version"].startswith("1.")
    assert info["url"].rstrip("/") == server.url
    assert info["settings"]["batch_max_requests"] > 0
    assert isinstance(info["capabilities"], dict)
    assert info["user"]["id"] == ALICE_ID


def test_server_info_without_credentials_has_no_user(api, server):
    info = make_client(server, auth=None).server_info()
    assert "user" not in info
    assert info["http_api_version"].startswith("1.")


# -- buckets, collections, groups -----------------------------------------


def test_bucket_is_a_json_file_with_what_the_api_returns(client, server):
    created = client.create_bucket(id="blog", data={"title": "Mon blog", "tags": ["été"]})
    assert created["data"]["id"] == "blog"
    assert created["data"]["title"] == "Mon blog"
    assert ALICE_ID in created["permissions"]["write"]

    fetched = client.get_bucket(id="blog")
    assert fetched["data"] == created["data"]
    assert_on_disk(bucket_file(server, "blog"), fetched["data"])
    text, _ = read_file(bucket_file(server, "blog"))
    assert "été" in text, "stored as readable UTF-8 so grep finds it"

    assert [b["id"] for b in client.get_buckets()] == ["blog"]


def test_collection_and_group_files(client, server):
    client.create_bucket(id="blog")
    collection = client.create_collection(
        id="articles", bucket="blog", data={"cache_expires": 30, "note": "x"}
    )
    assert collection["data"]["cache_expires"] == 30
    group = client.create_group(id="editors", bucket="blog", data={"members": [ALICE_ID, "bob"]})
    assert group["data"]["members"] == [ALICE_ID, "bob"]

    assert_on_disk(
        collection_file(server, "blog", "articles"),
        client.get_collection(id="articles", bucket="blog")["data"],
    )
    assert_on_disk(
        group_file(server, "blog", "editors"), client.get_group(id="editors", bucket="blog")["data"]
    )

    client.create_collection(id="comments", bucket="blog")
    assert sorted(c["id"] for c in client.get_collections(bucket="blog")) == [
        "articles",
        "comments",
    ]
    assert [g["id"] for g in client.get_groups(bucket="blog")] == ["editors"]


def test_update_and_patch_bucket_and_collection(client, server):
    client.create_bucket(id="blog", data={"a": 1, "b": 2})
    updated = client.update_bucket(id="blog", data={"a": 10})
    assert updated["data"]["a"] == 10 and "b" not in updated["data"]
    patched = client.patch_bucket(id="blog", data={"c": 3})
    assert patched["data"]["a"] == 10 and patched["data"]["c"] == 3
    assert patched["data"]["last_modified"] > updated["data"]["last_modified"]
    assert_on_disk(bucket_file(server, "blog"), client.get_bucket(id="blog")["data"])

    client.create_collection(id="articles", bucket="blog", data={"x": 1})
    patched = client.patch_collection(id="articles", bucket="blog", data={"y": 2})
    assert {patched["data"]["x"], patched["data"]["y"]} == {1, 2}
    assert_on_disk(collection_file(server, "blog", "articles"), patched["data"])


def test_delete_collection_and_bucket_remove_their_files(client, server):
    client.create_bucket(id="blog")
    client.create_collection(id="articles", bucket="blog")
    client.create_group(id="editors", bucket="blog", data={"members": []})
    client.create_record(bucket="blog", collection="articles", id="r1", data={"t": 1})
    assert os.path.isfile(record_file(server, "blog", "articles", "r1"))

    deleted = client.delete_collection(id="articles", bucket="blog")
    assert deleted["id"] == "articles" and deleted["deleted"] is True
    assert not os.path.exists(path_of(server, "buckets", "blog", "collections", "articles"))
    with pytest.raises(KintoException) as caught:
        client.get_collection(id="articles", bucket="blog")
    assert caught.value.response.status_code == 404

    deleted = client.delete_bucket(id="blog")
    assert deleted["id"] == "blog" and deleted["deleted"] is True
    assert not os.path.exists(path_of(server, "buckets", "blog"))
    assert client.get_buckets() == []
    with pytest.raises(KintoException) as caught:
        client.get_bucket(id="blog")
    assert caught.value.response.status_code == 403  # protocol 9.5: existence hidden
    assert no_temp_files(server.data_dir) == []


def test_another_user_cannot_read_alices_bucket(client, server):
    client.create_bucket(id="blog")
    bob = make_client(server, auth=BOB)
    with pytest.raises(KintoException) as caught:
        bob.get_bucket(id="blog")
    assert caught.value.response.status_code == 403
    assert bob.get_buckets() == []


# -- records ---------------------------------------------------------------


def test_record_lifecycle(blog, server):
    created = blog.create_record(
        id="r1",
        data={"title": "hello", "tags": ["a"], "n": 1},
        permissions={"read": ["system.Authenticated"]},
    )
    assert created["data"]["id"] == "r1" and created["data"]["title"] == "hello"
    assert isinstance(created["data"]["last_modified"], int)
    assert created["permissions"] == {"read": ["system.Authenticated"], "write": [ALICE_ID]}
    path = record_file(server, "blog", "articles", "r1")
    assert_on_disk(path, created["data"])
    # The ACL sidecar is JSON too, with the permissions the API shows the owner.
    assert_on_disk(path[: -len(".json")] + ".acl", created["permissions"])
    bob = make_client(server, auth=BOB, bucket="blog", collection="articles")
    assert bob.get_record(id="r1")["data"] == created["data"]
    with pytest.raises(KintoException) as caught:
        bob.patch_record(id="r1", data={"title": "bob was here"})
    assert caught.value.response.status_code == 403

    # update_record replaces the whole data.
    updated = blog.update_record(id="r1", data={"title": "replaced"})
    assert updated["data"]["title"] == "replaced"
    assert "tags" not in updated["data"] and "n" not in updated["data"]
    assert updated["data"]["last_modified"] > created["data"]["last_modified"]
    assert_on_disk(path, updated["data"])

    # patch_record merges.
    patched = blog.patch_record(id="r1", data={"n": 2})
    assert patched["data"]["title"] == "replaced" and patched["data"]["n"] == 2
    assert patched["data"]["last_modified"] > updated["data"]["last_modified"]
    fetched = blog.get_record(id="r1")
    assert fetched["data"] == patched["data"]
    assert_on_disk(path, fetched["data"])

    deleted = blog.delete_record(id="r1")
    assert deleted == {"id": "r1", "deleted": True, "last_modified": deleted["last_modified"]}
    assert deleted["last_modified"] > patched["data"]["last_modified"]
    assert not os.path.exists(path)
    assert not os.path.exists(path[: -len(".json")] + ".acl")
    with pytest.raises(KintoException) as caught:
        blog.get_record(id="r1")
    assert caught.value.response.status_code == 404


def test_generated_record_id_and_list(blog, server):
    a = blog.create_record(data={"title": "a"})
    b = blog.create_record(data={"title": "b"})
    assert a["data"]["id"] != b["data"]["id"]
    records = blog.get_records()
    # Default sort: newest first.
    assert [r["id"] for r in records] == [b["data"]["id"], a["data"]["id"]]
    for record in records:
        assert_on_disk(record_file(server, "blog", "articles", record["id"]), record)
    assert blog.get_records(title="a") == [a["data"]]


def test_delete_records_empties_the_collection(blog, server):
    for i in range(3):
        blog.create_record(id=f"r{i}", data={"i": i})
    deleted = blog.delete_records()
    assert sorted(d["id"] for d in deleted) == ["r0", "r1", "r2"]
    assert all(d["deleted"] is True for d in deleted)
    assert blog.get_records() == []
    folder = path_of(server, "buckets", "blog", "collections", "articles", "records")
    assert [n for n in os.listdir(folder) if n.endswith(".json")] == []


def test_records_of_many_collections_stay_apart(client, server):
    client.create_bucket(id="b1")
    for cid in ("c1", "c2"):
        client.create_collection(id=cid, bucket="b1")
        client.create_record(bucket="b1", collection=cid, id="same", data={"in": cid})
    for cid in ("c1", "c2"):
        [record] = client.get_records(bucket="b1", collection=cid)
        assert record["in"] == cid
        assert_on_disk(record_file(server, "b1", cid, "same"), record)


# -- batch -----------------------------------------------------------------


def test_batch_creates_everything_in_one_request(client, server):
    with client.batch() as batch:
        batch.create_bucket(id="shop")
        batch.create_collection(id="items", bucket="shop")
        batch.create_group(id="staff", bucket="shop", data={"members": [ALICE_ID]})
        for i in range(5):
            batch.create_record(
                bucket="shop", collection="items", id=f"item{i}", data={"price": i * 10}
            )
    results = batch.results()
    assert len(results) == 8
    assert results[0]["data"]["id"] == "shop"
    assert [r["data"]["id"] for r in results[3:]] == [f"item{i}" for i in range(5)]

    records = client.get_records(bucket="shop", collection="items")
    assert {r["id"]: r["price"] for r in records} == {f"item{i}": i * 10 for i in range(5)}
    for result in results[3:]:
        assert_on_disk(record_file(server, "shop", "items", result["data"]["id"]), result["data"])
    assert_on_disk(group_file(server, "shop", "staff"), results[2]["data"])
    assert_on_disk(bucket_file(server, "shop"), results[0]["data"])


def test_batch_reports_a_failed_subrequest(blog, server):
    blog.create_record(id="taken", data={"v": 1})
    with pytest.raises(KintoBatchException) as caught:
        with blog.batch() as batch:
            batch.create_record(id="fresh", data={"v": 2})
            batch.create_record(id="taken", data={"v": 3})  # safe create: If-None-Match
    [error] = caught.value.exceptions
    assert error.response.status_code == 412
    # The other sub-request still happened; the existing record is untouched.
    assert blog.get_record(id="fresh")["data"]["v"] == 2
    assert blog.get_record(id="taken")["data"]["v"] == 1


def test_batch_updates_and_deletes(blog, server):
    for i in range(4):
        blog.create_record(id=f"r{i}", data={"v": i})
    with blog.batch() as batch:
        batch.update_record(id="r0", data={"v": 100})
        batch.patch_record(id="r1", data={"extra": True})
        batch.delete_record(id="r2")
    assert blog.get_record(id="r0")["data"]["v"] == 100
    r1 = blog.get_record(id="r1")["data"]
    assert r1["v"] == 1 and r1["extra"] is True
    assert sorted(r["id"] for r in blog.get_records()) == ["r0", "r1", "r3"]
    assert not os.path.exists(record_file(server, "blog", "articles", "r2"))
    assert_on_disk(record_file(server, "blog", "articles", "r1"), r1)


# -- polling ---------------------------------------------------------------


def test_since_returns_changes_and_tombstones(blog, server):
    blog.create_record(id="old", data={"v": 0})
    blog.create_record(id="gone", data={"v": 0})
    since = blog.get_records_timestamp()
    assert since.isdigit()
    assert int(since) == max(r["last_modified"] for r in blog.get_records())

    new = blog.create_record(id="new", data={"v": 1})["data"]
    tomb = blog.delete_record(id="gone")
    changes = blog.get_records(_since=since)
    assert sorted(changes, key=lambda r: r["id"]) == [tomb, new]

    # A fresh client sees the list timestamp move to the latest change.
    fresh = make_client(server, bucket="blog", collection="articles")
    assert int(fresh.get_records_timestamp()) == tomb["last_modified"]
    assert fresh.get_records(_since=str(tomb["last_modified"])) == []


def test_timestamp_of_a_never_written_collection_is_stable(blog, server):
    first = make_client(server, bucket="blog", collection="articles").get_records_timestamp()
    second = make_client(server, bucket="blog", collection="articles").get_records_timestamp()
    assert first == second and first.isdigit()


# -- if_not_exists and safe writes -----------------------------------------


def test_if_not_exists_returns_the_existing_objects(client, server):
    first = client.create_bucket(id="blog", data={"v": 1})
    again = client.create_bucket(id="blog", data={"v": 2}, if_not_exists=True)
    assert again["data"] == first["data"]

    client.create_collection(id="c", bucket="blog", data={"v": 1})
    again = client.create_collection(id="c", bucket="blog", data={"v": 2}, if_not_exists=True)
    assert again["data"]["v"] == 1

    client.create_group(id="g", bucket="blog", data={"members": ["x"]})
    again = client.create_group(id="g", bucket="blog", data={"members": ["y"]}, if_not_exists=True)
    assert again["data"]["members"] == ["x"]

    record = client.create_record(bucket="blog", collection="c", id="r", data={"v": 1})
    again = client.create_record(
        bucket="blog", collection="c", id="r", data={"v": 2}, if_not_exists=True
    )
    assert again["data"] == record["data"]
    assert_on_disk(record_file(server, "blog", "c", "r"), record["data"])

    # Without if_not_exists the safe create is refused.
    with pytest.raises(KintoException) as caught:
        client.create_record(bucket="blog", collection="c", id="r", data={"v": 3})
    assert caught.value.response.status_code == 412


def test_safe_update_with_a_stale_timestamp_fails_with_412(blog, server):
    original = blog.create_record(id="r1", data={"title": "v1"})["data"]
    current = blog.update_record(data=dict(original, title="v2"), safe=True)["data"]
    assert current["title"] == "v2"

    # `original` still carries the old last_modified: If-Match is stale.
    with pytest.raises(KintoException) as caught:
        blog.update_record(data=dict(original, title="lost update"), safe=True)
    response = caught.value.response
    assert response.status_code == 412
    body = response.json()
    assert body["errno"] == 114
    assert body["details"]["existing"] == current

    with pytest.raises(KintoException) as caught:
        blog.patch_record(original=original, data={"title": "lost patch"}, safe=True)
    assert caught.value.response.status_code == 412
    with pytest.raises(KintoException) as caught:
        blog.delete_record(id="r1", if_match=original["last_modified"])
    assert caught.value.response.status_code == 412

    assert blog.get_record(id="r1")["data"] == current
    assert_on_disk(record_file(server, "blog", "articles", "r1"), current)

    # With the current timestamp the same write goes through.
    newer = blog.update_record(data=dict(current, title="v3"), safe=True)["data"]
    assert newer["title"] == "v3" and newer["last_modified"] > current["last_modified"]

    # safe=False ignores the stale timestamp: last writer wins.
    forced = blog.update_record(data=dict(original, title="forced"), safe=False)["data"]
    assert forced["title"] == "forced"
    assert_on_disk(record_file(server, "blog", "articles", "r1"), forced)


def test_delete_if_exists_ignores_missing_objects(blog):
    assert blog.delete_record(id="never-was", if_exists=True) is None
    with pytest.raises(KintoException) as caught:
        blog.delete_record(id="never-was")
    assert caught.value.response.status_code == 404


def test_no_temp_files_after_a_session(blog, server):
    for i in range(10):
        blog.create_record(id=f"r{i}", data={"i": i})
        blog.patch_record(id=f"r{i}", data={"j": i})
    blog.delete_records()
    assert no_temp_files(server.data_dir) == []

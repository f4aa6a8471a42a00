"""CRUD of buckets, groups, collections and records over HTTP (in process, see conftest).

One generic resource serves the four kinds, so most tests run once per kind
(protocol sections 2, 6, 7 and 9.4).  The rest pin what differs: PUT replace
semantics, the three PATCH flavours, timestamps, tombstones and cascades,
including what is left on disk.
"""

import json
import os
import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate

import pytest
from conftest import ALICE, BOB, assert_error, assert_status, basicauth_id

ALICE_ID = basicauth_id(ALICE)
BOB_ID = basicauth_id(BOB)

NAME_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7}$")
UUID4_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# -- helpers: short HTTP conversations ----------------------------------------


def etag(response):
    value = response.headers["ETag"]
    assert re.fullmatch(r'"\d+"', value), f"ETag not a quoted integer: {value!r}"
    return int(value[1:-1])


def body_of(response, status):
    assert_status(response, status)
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def put(api, path, data=None, permissions=None, status=(200, 201), **kwargs):
    body = {}
    if data is not None:
        body["data"] = data
    if permissions is not None:
        body["permissions"] = permissions
    response = api.put(path, json=body, **kwargs)
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (path, response.status_code, response.text)
    return response.json()


def patch(api, path, body, content_type="application/json", status=200):
    response = api.patch(path, data=json.dumps(body), headers={"Content-Type": content_type})
    return body_of(response, status)


def listing(api, path, **params):
    response = api.get(path, params=params)
    return body_of(response, 200)["data"], etag(response)


def ids_of(objects):
    return [obj["id"] for obj in objects]


def tombstone(object_id, ts):
    return {"id": object_id, "last_modified": ts, "deleted": True}


def files_under(root):
    found = set()
    for folder, _dirs, files in os.walk(root):
        found.update(os.path.relpath(os.path.join(folder, name), root) for name in files)
    return found


def make_tree(api, *paths):
    """PUT each path (empty data) in order: ``make_tree(api, "/buckets/b", ...)``."""
    for path in paths:
        put(api, path, {})


# -- the four kinds -----------------------------------------------------------


@dataclass
class Kind:
    name: str
    plural: str
    parents: tuple
    generated_id: re.Pattern
    defaults: dict = field(default_factory=dict)  # fields the server adds
    gone_status: int = 404  # GET after DELETE (a bucket's ACL goes with it)

    def path(self, object_id):
        return f"{self.plural}/{object_id}"

    def user_fields(self, data):
        """``data`` without what the server adds (id, last_modified, defaults)."""
        return {
            k: v
            for k, v in data.items()
            if k not in ("id", "last_modified") and self.defaults.get(k, object()) != v
        }


KINDS = {
    "bucket": Kind("bucket", "/buckets", (), NAME_ID, gone_status=403),
    "group": Kind("group", "/buckets/b/groups", ("/buckets/b",), NAME_ID, {"members": []}),
    "collection": Kind("collection", "/buckets/b/collections", ("/buckets/b",), NAME_ID),
    "record": Kind(
        "record",
        "/buckets/b/collections/c/records",
        ("/buckets/b", "/buckets/b/collections/c"),
        UUID4_ID,
    ),
}


@pytest.fixture(params=list(KINDS))
def kind(request, api):
    make_tree(api, *KINDS[request.param].parents)
    return KINDS[request.param]


@pytest.fixture
def records(api):
    """The records plural path of a fresh /buckets/b/collections/c."""
    make_tree(api, "/buckets/b", "/buckets/b/collections/c")
    return "/buckets/b/collections/c/records"


# -- every kind, every method -------------------------------------------------


def test_put_creates_then_replaces(api, kind):
    created = api.put(kind.path("x1"), json={"data": {"title": "one"}})
    body = body_of(created, 201)
    assert set(body) == {"data", "permissions"}
    assert kind.user_fields(body["data"]) == {"title": "one"}
    assert body["data"]["id"] == "x1"
    assert body["permissions"] == {"write": [ALICE_ID]}
    assert etag(created) == body["data"]["last_modified"]

    replaced = api.put(kind.path("x1"), json={"data": {"other": 2}})
    body2 = body_of(replaced, 200)
    assert kind.user_fields(body2["data"]) == {"other": 2}
    assert body2["data"]["last_modified"] > body["data"]["last_modified"]
    assert etag(replaced) == body2["data"]["last_modified"]


def test_get_and_head_object(api, kind):
    stored = put(api, kind.path("x1"), {"title": "one"})
    response = api.get(kind.path("x1"))
    assert body_of(response, 200) == stored
    assert etag(response) == stored["data"]["last_modified"]

    head = assert_status(api.head(kind.path("x1")), 200)
    assert head.content == b""
    assert etag(head) == stored["data"]["last_modified"]
    assert head.headers["Last-Modified"] == response.headers["Last-Modified"]


def test_get_missing_object(api, kind):
    """404 errno 110; a missing bucket is hidden behind a 403 (nobody holds rights on it)."""
    body = assert_error(
        api.get(kind.path("nope")), kind.gone_status, 110 if kind.gone_status == 404 else 121
    )
    if kind.gone_status == 404:
        assert body["details"] == {"id": "nope", "resource_name": kind.name}
        assert "message" not in body


def test_post_without_id_generates_one(api, kind):
    response = api.post(kind.plural, json={"data": {"title": "gen"}})
    body = body_of(response, 201)
    assert kind.generated_id.match(body["data"]["id"]), body["data"]["id"]
    assert kind.user_fields(body["data"]) == {"title": "gen"}
    assert body["permissions"] == {"write": [ALICE_ID]}
    assert etag(response) == body["data"]["last_modified"]
    assert body_of(api.get(kind.path(body["data"]["id"])), 200)["data"] == body["data"]


def test_post_with_empty_body_creates(api, kind):
    body = body_of(api.post(kind.plural), 201)
    assert kind.generated_id.match(body["data"]["id"])


def test_post_with_new_id_creates_and_existing_id_returns_it_unchanged(api, kind):
    created = body_of(api.post(kind.plural, json={"data": {"id": "p1", "x": 1}}), 201)
    assert created["data"]["id"] == "p1"

    again = api.post(kind.plural, json={"data": {"id": "p1", "x": 999}})
    assert body_of(again, 200) == created
    assert etag(again) == created["data"]["last_modified"]
    assert body_of(api.get(kind.path("p1")), 200)["data"]["x"] == 1


def test_list_and_head_count(api, kind):
    before = {obj["id"] for obj in listing(api, kind.plural)[0]}
    written = [put(api, kind.path(f"l{i}"), {"i": i})["data"] for i in range(3)]

    response = api.get(kind.plural)
    body = body_of(response, 200)
    assert set(body) == {"data"}, "a list has no permissions key"
    fresh = [obj for obj in body["data"] if obj["id"] not in before]
    assert fresh == written[::-1], "default sort is -last_modified"
    assert etag(response) == written[-1]["last_modified"]

    head = assert_status(api.head(kind.plural), 200)
    assert head.content == b""
    assert head.headers["Total-Records"] == head.headers["Total-Objects"] == str(len(body["data"]))
    assert etag(head) == etag(response)

    filtered = assert_status(api.head(kind.plural, params={"i": 1}), 200)
    assert filtered.headers["Total-Records"] == "1"


def test_patch_merges_top_level_fields(api, kind):
    put(api, kind.path("x1"), {"keep": 1, "nested": {"a": 1}, "gone": "x"})
    old = body_of(api.get(kind.path("x1")), 200)["data"]
    response = api.patch(kind.path("x1"), json={"data": {"nested": {"b": 2}, "gone": None}})
    body = body_of(response, 200)
    assert kind.user_fields(body["data"]) == {"keep": 1, "nested": {"b": 2}, "gone": None}
    assert body["permissions"] == {"write": [ALICE_ID]}
    assert body["data"]["last_modified"] > old["last_modified"]
    assert etag(response) == body["data"]["last_modified"]
    assert body_of(api.get(kind.path("x1")), 200) == body


def test_patch_missing_object(api, kind):
    response = api.patch(kind.path("nope"), json={"data": {"a": 1}})
    if kind.gone_status == 404:
        assert assert_error(response, 404, 110)["details"] == {
            "id": "nope",
            "resource_name": kind.name,
        }
    else:
        assert_error(response, 403, 121)


def test_delete_object_leaves_a_tombstone(api, kind):
    stored = put(api, kind.path("x1"), {"a": 1})["data"]
    response = api.delete(kind.path("x1"))
    body = body_of(response, 200)
    assert set(body) == {"data"}
    assert body["data"] == tombstone("x1", etag(response))
    assert body["data"]["last_modified"] > stored["last_modified"]
    assert_status(api.get(kind.path("x1")), kind.gone_status)
    assert_status(api.delete(kind.path("x1")), kind.gone_status)


def test_plural_delete_returns_tombstones_and_since_shows_them(api, kind):
    for i in range(3):
        put(api, kind.path(f"d{i}"), {"i": i})
    _, list_ts = listing(api, kind.plural)

    response = api.delete(kind.plural, params={"i": 1})
    deleted = body_of(response, 200)["data"]
    assert deleted == [tombstone("d1", etag(response))]
    assert etag(response) > list_ts

    remaining, _ = listing(api, kind.plural)
    assert "d1" not in ids_of(remaining) and {"d0", "d2"} <= set(ids_of(remaining))
    if kind.name != "bucket":  # nobody can read a bucket's tombstone (its ACL is gone)
        since, _ = listing(api, kind.plural, _since=list_ts)
        assert since == deleted


def test_plural_delete_of_nothing_keeps_list_timestamp(api, kind):
    put(api, kind.path("x1"), {"a": 1})
    _, list_ts = listing(api, kind.plural)
    response = api.delete(kind.plural, params={"a": 42})
    assert body_of(response, 200) == {"data": []}
    assert etag(response) == list_ts


# -- PUT replace semantics ----------------------------------------------------


def test_put_replaces_every_field(api, records):
    put(api, f"{records}/r1", {"a": 1, "b": {"c": 2}})
    data = put(api, f"{records}/r1", {"a": 3})["data"]
    assert KINDS["record"].user_fields(data) == {"a": 3}


def test_put_without_data_keeps_data_and_bumps_timestamp(api, records):
    first = put(api, f"{records}/r1", {"a": 1})["data"]
    response = api.put(f"{records}/r1")  # no body at all
    data = body_of(response, 200)["data"]
    assert data["a"] == 1 and data["last_modified"] > first["last_modified"]

    response = api.put(f"{records}/r1", json={"permissions": {"read": [BOB_ID]}})
    body = body_of(response, 200)
    assert body["data"]["a"] == 1
    assert body["permissions"] == {"read": [BOB_ID], "write": [ALICE_ID]}


def test_put_permissions_replace_every_ace_and_keep_the_editor(api, records):
    body = put(api, f"{records}/r1", {}, {"read": [BOB_ID], "write": [BOB_ID]})
    assert sorted(body["permissions"]["write"]) == sorted([ALICE_ID, BOB_ID])

    body = put(api, f"{records}/r1", {}, {"write": []})
    assert body["permissions"] == {"write": [ALICE_ID]}, "unmentioned ACEs are emptied"
    assert body_of(api.get(f"{records}/r1"), 200)["permissions"] == {"write": [ALICE_ID]}


def test_put_with_empty_body_creates(api, records):
    response = api.put(f"{records}/r1", data=b"", headers={"Content-Type": "application/json"})
    assert body_of(response, 201)["data"]["id"] == "r1"


# -- PATCH flavours -----------------------------------------------------------


def test_patch_bumps_timestamp_even_without_change(api, records):
    first = put(api, f"{records}/r1", {"a": 1})["data"]
    second = patch(api, f"{records}/r1", {"data": {"a": 1}})["data"]
    assert second["last_modified"] > first["last_modified"]
    assert second["a"] == 1


def test_patch_permissions_replace_only_named_aces(api, records):
    put(api, f"{records}/r1", {"a": 1}, {"read": [BOB_ID]})
    body = patch(api, f"{records}/r1", {"permissions": {"write": [BOB_ID]}})
    assert body["permissions"]["read"] == [BOB_ID], "an ACE not named is untouched"
    assert sorted(body["permissions"]["write"]) == sorted([ALICE_ID, BOB_ID])
    assert body["data"]["a"] == 1

    body = patch(api, f"{records}/r1", {"permissions": {"read": None}})
    assert body["permissions"]["read"] == [BOB_ID], "a null ACE is a no-op"


def test_merge_patch_merges_recursively_and_null_removes(api, records):
    put(api, f"{records}/r1", {"n": {"a": 1, "b": {"c": 1, "d": 2}}, "t": "x"})
    body = patch(
        api,
        f"{records}/r1",
        {"data": {"n": {"b": {"c": None}, "e": 3}, "t": None}},
        content_type="application/merge-patch+json",
    )
    assert KINDS["record"].user_fields(body["data"]) == {"n": {"a": 1, "b": {"d": 2}, "e": 3}}


def test_merge_patch_permissions_null_removes_ace(api, records):
    put(api, f"{records}/r1", {}, {"read": [BOB_ID]})
    body = patch(
        api,
        f"{records}/r1",
        {"permissions": {"read": None}},
        content_type="application/merge-patch+json",
    )
    assert body["permissions"] == {"write": [ALICE_ID]}


def test_json_patch_edits_data_and_permissions(api, records):
    put(api, f"{records}/r1", {"a": 1, "b": 2})
    ops = [
        {"op": "add", "path": "/data/c", "value": [1]},
        {"op": "replace", "path": "/data/a", "value": 10},
        {"op": "remove", "path": "/data/b"},
        {"op": "test", "path": "/data/a", "value": 10},
        {"op": "add", "path": "/permissions/read/system.Everyone"},
    ]
    body = patch(api, f"{records}/r1", ops, content_type="application/json-patch+json")
    assert KINDS["record"].user_fields(body["data"]) == {"a": 10, "c": [1]}
    assert body["permissions"] == {"read": ["system.Everyone"], "write": [ALICE_ID]}

    body = patch(
        api,
        f"{records}/r1",
        [{"op": "remove", "path": "/permissions/read/system.Everyone"}],
        content_type="application/json-patch+json",
    )
    assert "read" not in body["permissions"]


def test_json_patch_failing_operation_is_400_and_changes_nothing(api, records):
    before = put(api, f"{records}/r1", {"a": 1})["data"]
    body = patch(
        api,
        f"{records}/r1",
        [
            {"op": "replace", "path": "/data/a", "value": 2},
            {"op": "test", "path": "/data/a", "value": 99},
        ],
        content_type="application/json-patch+json",
        status=400,
    )
    assert body["errno"] == 107
    assert body["details"][0]["description"].startswith("JSON Patch operation failed")
    assert body_of(api.get(f"{records}/r1"), 200)["data"] == before


# -- permissions in responses -------------------------------------------------


def test_permissions_shown_only_to_explicit_writers(api, records):
    bob = api.as_user(BOB)
    put(api, "/buckets/b/collections/c", {}, {"record:create": [BOB_ID], "read": [BOB_ID]})
    put(api, f"{records}/alices", {"mine": True})

    bobs = body_of(bob.post(records, json={"data": {"id": "bobs"}}), 201)
    assert bobs["permissions"] == {"write": [BOB_ID]}, "the creator gets write"
    assert body_of(bob.get(f"{records}/alices"), 200)["permissions"] == {}
    # Alice writes the bucket, yet is not an explicit writer of Bob's record.
    assert body_of(api.get(f"{records}/bobs"), 200)["permissions"] == {}

    # Modifying an object adds the editor to its write ACE.
    body = body_of(api.patch(f"{records}/bobs", json={"data": {"x": 1}}), 200)
    assert sorted(body["permissions"]["write"]) == sorted([ALICE_ID, BOB_ID])


def test_other_users_cannot_read_or_write(api, records):
    put(api, f"{records}/r1", {"secret": 1})
    bob = api.as_user(BOB)
    assert_error(bob.get(f"{records}/r1"), 403, 121)
    assert_error(bob.put(f"{records}/r1", json={"data": {}}), 403, 121)
    assert_error(api.as_user(None).get(f"{records}/r1"), 401, 104)
    assert body_of(api.get(f"{records}/r1"), 200)["data"]["secret"] == 1


# -- ETag and Last-Modified ---------------------------------------------------


def test_etag_and_last_modified_follow_the_object(api, records):
    data = put(api, f"{records}/r1", {"a": 1})["data"]
    response = api.get(f"{records}/r1")
    ts = data["last_modified"]
    assert response.headers["ETag"] == f'"{ts}"'
    assert response.headers["Last-Modified"] == formatdate(ts // 1000, usegmt=True)

    for method, kwargs in (
        ("PATCH", {"json": {"data": {"a": 2}}}),
        ("PUT", {"json": {"data": {"a": 3}}}),
        ("DELETE", {}),
    ):
        response = api.request(method, f"{records}/r1", **kwargs)
        assert_status(response, 200)
        new_ts = response.json()["data"]["last_modified"]
        assert new_ts > ts and etag(response) == new_ts
        assert response.headers["Last-Modified"] == formatdate(new_ts // 1000, usegmt=True)
        ts = new_ts


def test_list_etag_is_the_list_timestamp_not_the_parent(api, records):
    collection = body_of(api.get("/buckets/b/collections/c"), 200)["data"]
    bucket = body_of(api.get("/buckets/b"), 200)["data"]
    _, collections_ts = listing(api, "/buckets/b/collections")
    data = put(api, f"{records}/r1", {})["data"]

    _, records_ts = listing(api, records)
    assert records_ts == data["last_modified"]
    assert body_of(api.get("/buckets/b/collections/c"), 200)["data"] == collection
    assert body_of(api.get("/buckets/b"), 200)["data"] == bucket
    assert listing(api, "/buckets/b/collections")[1] == collections_ts


# -- timestamps ---------------------------------------------------------------


def test_never_written_list_timestamp_is_stable(api, records):
    _, first = listing(api, records)
    time.sleep(0.005)
    _, second = listing(api, records)
    head = assert_status(api.head(records), 200)
    assert first == second == etag(head)
    assert abs(first - time.time() * 1000) < 60_000


def test_list_timestamp_stable_across_reads_after_writes(api, records):
    put(api, f"{records}/r1", {})
    put(api, f"{records}/r2", {})
    stamps = {listing(api, records)[1] for _ in range(3)}
    assert len(stamps) == 1


def batch_puts(api, paths):
    requests = [
        {"method": "PUT", "path": path, "body": {"data": {"i": i}}} for i, path in enumerate(paths)
    ]
    response = api.post("/batch", json={"requests": requests})
    responses = body_of(response, 200)["responses"]
    assert [r["status"] for r in responses] == [201] * len(paths), responses
    return [r["body"]["data"]["last_modified"] for r in responses]


def test_writes_in_the_same_millisecond_get_increasing_timestamps(api, records):
    stamps = batch_puts(api, [f"{records}/s{i}" for i in range(25)])
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), stamps
    _, list_ts = listing(api, records)
    assert list_ts == stamps[-1]

    # A plural DELETE stamps every tombstone within one request.
    deleted = body_of(api.delete(records), 200)["data"]
    tombstone_stamps = [t["last_modified"] for t in deleted]
    assert len(set(tombstone_stamps)) == 25
    assert min(tombstone_stamps) > list_ts


def test_list_timestamp_moves_ahead_of_the_clock(api, records):
    """new = max(now, list_ts + 1): after a future timestamp, writes continue at +1."""
    future = int(time.time() * 1000) + 10**9
    assert put(api, f"{records}/r1", {"last_modified": future})["data"]["last_modified"] == future
    assert put(api, f"{records}/r2", {})["data"]["last_modified"] == future + 1
    assert (
        put(api, f"{records}/r3", {"last_modified": future + 1})["data"]["last_modified"]
        == future + 2
    )
    response = api.delete(f"{records}/r2")
    assert etag(response) == future + 3


# -- tombstones and _since ----------------------------------------------------


def test_since_returns_tombstones_only_when_filtering_on_last_modified(api, records):
    for i in range(3):
        put(api, f"{records}/r{i}", {"i": i})
    _, before_delete = listing(api, records)
    deleted = body_of(api.delete(f"{records}/r0"), 200)["data"]

    plain, list_ts = listing(api, records)
    assert ids_of(plain) == ["r2", "r1"]
    assert list_ts == deleted["last_modified"]

    since_zero, _ = listing(api, records, _since=0)
    assert since_zero[0] == deleted == tombstone("r0", list_ts)
    assert ids_of(since_zero) == ["r0", "r2", "r1"]

    assert listing(api, records, _since=f'"{before_delete}"')[0] == [deleted]
    assert listing(api, records, _since=list_ts)[0] == []
    head = assert_status(api.head(records, params={"_since": 0}), 200)
    assert head.headers["Total-Records"] == "2", "HEAD never counts tombstones"


def test_recreating_an_object_removes_its_tombstone(api, records):
    put(api, f"{records}/r1", {})
    api.delete(f"{records}/r1")
    recreated = body_of(api.put(f"{records}/r1", json={"data": {"again": True}}), 201)["data"]
    since, _ = listing(api, records, _since=0)
    assert since == [recreated]


# -- cascades and the files on disk -------------------------------------------


def test_objects_are_json_files_on_disk(api, records):
    data_dir = api.daemon.data_dir
    data = put(api, f"{records}/r1", {"title": "on disk"})["data"]
    path = os.path.join(data_dir, "buckets", "b", "collections", "c", "records", "r1.json")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == data
    api.delete(f"{records}/r1")
    assert not os.path.exists(path)


def build_bucket(api):
    """Bucket b: group g, collection c (records r1, r2, tombstone r0), tombstone of c2."""
    make_tree(
        api,
        "/buckets/b",
        "/buckets/b/groups/g",
        "/buckets/b/collections/c",
        "/buckets/b/collections/c2",
        "/buckets/b/collections/c/records/r0",
    )
    put(api, "/buckets/b/collections/c/records/r1", {"a": 1})
    put(api, "/buckets/b/collections/c/records/r2", {"a": 2})
    assert_status(api.delete("/buckets/b/collections/c/records/r0"), 200)
    assert_status(api.delete("/buckets/b/collections/c2"), 200)
    return listing(api, "/buckets/b/collections/c/records")[1]


def test_deleting_a_bucket_cascades_and_purges(api):
    records_ts = build_bucket(api)
    folder = os.path.join(api.daemon.data_dir, "buckets", "b")
    assert os.path.isdir(folder)

    response = api.delete("/buckets/b")
    assert body_of(response, 200) == {"data": tombstone("b", etag(response))}
    assert not os.path.exists(folder)
    assert not [
        f
        for f in files_under(api.daemon.data_dir)
        if f.startswith(os.path.join("buckets", "b", ""))
    ]

    assert_error(api.get("/buckets/b"), 403, 121)
    assert_error(api.get("/buckets/b/collections/c/records"), 403, 121)

    make_tree(api, "/buckets/b")
    assert listing(api, "/buckets/b/collections", _since=0)[0] == []
    assert listing(api, "/buckets/b/groups", _since=0)[0] == []
    assert_error(api.get("/buckets/b/groups/g"), 404, 110)
    assert_error(api.get("/buckets/b/collections/c"), 404, 110)

    make_tree(api, "/buckets/b/collections/c")
    fresh, fresh_ts = listing(api, "/buckets/b/collections/c/records", _since=0)
    assert fresh == []
    assert fresh_ts > records_ts
    assert_error(api.get("/buckets/b/collections/c/records/r1"), 404, 110)


def test_record_write_into_a_deleted_bucket_is_404_collection(api):
    build_bucket(api)
    api.delete("/buckets/b")
    body = assert_error(api.put("/buckets/b/collections/c/records/r9", json={"data": {}}), 404, 111)
    assert body["details"] == {"id": "c", "resource_name": "collection"}


@pytest.mark.parametrize(
    "method, path",
    [
        ("PUT", "/buckets/nob/collections/c1"),
        ("POST", "/buckets/nob/collections"),
        ("PUT", "/buckets/nob/groups/g1"),
        ("PATCH", "/buckets/nob/groups/g1"),
        ("DELETE", "/buckets/nob/collections/c1"),
        ("GET", "/buckets/nob/collections/c1"),
    ],
)
def test_missing_bucket_is_hidden_behind_authorization(api, method, path):
    """No rights on a bucket that does not exist: 403, not a 404 that leaks existence."""
    assert_error(api.request(method, path, json={"data": {}}), 403, 121)
    assert_error(api.as_user(None).request(method, path, json={"data": {}}), 401, 104)


def test_record_in_missing_collection_is_404_even_anonymous(api, records):
    for method in ("PUT", "PATCH", "DELETE", "GET"):
        response = api.as_user(None).request(
            method, "/buckets/b/collections/nope/records/r1", json={"data": {}}
        )
        if method == "GET":
            assert_error(response, 401, 104)
        else:
            body = assert_error(response, 404, 111)
            assert body["details"] == {"id": "nope", "resource_name": "collection"}
    body = assert_error(api.get("/buckets/b/collections/nope/records"), 404, 111)
    assert body["details"] == {"id": "nope", "resource_name": "collection"}


def test_deleting_a_collection_cascades_and_a_recreated_one_starts_fresh(api):
    records_ts = build_bucket(api)
    folder = os.path.join(api.daemon.data_dir, "buckets", "b", "collections", "c")
    assert os.path.isfile(os.path.join(folder, "records", "r1.json"))

    response = api.delete("/buckets/b/collections/c")
    assert body_of(response, 200)["data"] == tombstone("c", etag(response))
    assert not os.path.exists(folder)
    assert_error(api.get("/buckets/b/collections/c/records"), 404, 111)
    since, _ = listing(api, "/buckets/b/collections", _since=0)
    assert tombstone("c", etag(response)) in since, "the collection's own tombstone stays"

    # The rest of the bucket is untouched.
    assert_status(api.get("/buckets/b/groups/g"), 200)

    make_tree(api, "/buckets/b/collections/c")
    fresh, fresh_ts = listing(api, "/buckets/b/collections/c/records", _since=0)
    assert fresh == [], "no record nor tombstone survives a re-creation"
    assert fresh_ts > records_ts
    assert_error(api.get("/buckets/b/collections/c/records/r1"), 404, 110)
    assert listing(api, "/buckets/b/collections/c/records")[1] == fresh_ts


def test_plural_delete_of_collections_cascades(api):
    build_bucket(api)
    deleted = body_of(api.delete("/buckets/b/collections"), 200)["data"]
    assert ids_of(deleted) == ["c"]
    assert not os.path.exists(os.path.join(api.daemon.data_dir, "buckets", "b", "collections", "c"))
    make_tree(api, "/buckets/b/collections/c")
    assert listing(api, "/buckets/b/collections/c/records", _since=0)[0] == []


def test_plural_delete_of_buckets_only_touches_the_callers(api):
    bob = api.as_user(BOB)
    make_tree(api, "/buckets/a1", "/buckets/a2")
    make_tree(bob, "/buckets/bob1")
    deleted = body_of(api.delete("/buckets"), 200)["data"]
    assert sorted(ids_of(deleted)) == ["a1", "a2"]
    assert ids_of(listing(bob, "/buckets")[0]) == ["bob1"]
    assert listing(api, "/buckets")[0] == []
    assert not os.path.exists(os.path.join(api.daemon.data_dir, "buckets", "a1"))
    assert os.path.isdir(os.path.join(api.daemon.data_dir, "buckets", "bob1"))

"""The history plugin over HTTP (protocol section 17; in process, see conftest).

Expected entries, filters, statuses and visibility were taken from a real
Kinto 26.5.0 with ``kinto.plugins.history``.  Entries live in
``<data>/buckets/<bid>/history/<uuid>.json``: the tests read them back with
plain ``json``.
"""

import glob
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import kinto_http
import pytest
from conftest import ALICE, BOB, Api, assert_error, assert_status, basicauth_id, flush, make_server

ALICE_ID = basicauth_id(ALICE)
BOB_ID = basicauth_id(BOB)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("history") / "data", plugins="flush history")
    yield server
    server.stop()


@pytest.fixture
def api(tracking):
    return flush(tracking)


def history(api, query="", bucket="b", status=200):
    response = assert_status(api.get(f"/buckets/{bucket}/history{query}"), status)
    return response.json()["data"] if status == 200 else response.json()


def write(api, method, path, body=None, status=(200, 201), **kwargs):
    response = api.request(method, path, json=body, **kwargs)
    assert response.status_code in status, (method, path, response.status_code, response.text)
    return response.json()


def strip_entry(entry):
    """An entry without the values that change on every run (checked apart)."""
    assert UUID4.match(entry["id"]), entry
    assert DATE.match(entry["date"]), entry
    assert isinstance(entry["last_modified"], int)
    return {k: v for k, v in entry.items() if k not in ("id", "date", "last_modified")}


# -- the entries, exactly --------------------------------------------------------


def test_capability(api):
    assert api.get("/").json()["capabilities"]["history"] == {
        "description": "Track changes on data.",
        "url": "http://kinto.readthedocs.io/en/latest/api/1.x/history.html",
    }


def test_one_exact_entry_per_action_and_kind(api):
    bucket = write(api, "PUT", "/buckets/b")
    bucket2 = write(api, "PATCH", "/buckets/b", {"data": {"title": "B"}})
    group = write(api, "PUT", "/buckets/b/groups/g", {"data": {"members": ["x"]}})
    collection = write(api, "PUT", "/buckets/b/collections/c", {"permissions": {"read": [BOB_ID]}})
    record = write(api, "POST", "/buckets/b/collections/c/records", {"data": {"a": 1}})
    rid = record["data"]["id"]
    record2 = write(api, "PUT", f"/buckets/b/collections/c/records/{rid}", {"data": {"a": 2}})
    record3 = write(api, "PATCH", f"/buckets/b/collections/c/records/{rid}", {"data": {"b": 3}})
    deleted_record = write(api, "DELETE", f"/buckets/b/collections/c/records/{rid}")
    collection2 = write(api, "PATCH", "/buckets/b/collections/c", {"data": {"x": 1}})
    deleted_group = write(api, "DELETE", "/buckets/b/groups/g")
    deleted_collection = write(api, "DELETE", "/buckets/b/collections/c")

    def entry(action, kind, uri, target, ids):
        return {
            "target": {"data": target["data"], "permissions": target.get("permissions", {})},
            "action": action,
            "uri": uri,
            "user_id": ALICE_ID,
            "resource_name": kind,
            **ids,
        }

    record_uri = f"/buckets/b/collections/c/records/{rid}"
    expected = [
        entry("create", "bucket", "/buckets/b", bucket, {"bucket_id": "b"}),
        entry("update", "bucket", "/buckets/b", bucket2, {"bucket_id": "b"}),
        entry("create", "group", "/buckets/b/groups/g", group, {"group_id": "g"}),
        entry(
            "create", "collection", "/buckets/b/collections/c", collection, {"collection_id": "c"}
        ),
        entry("create", "record", record_uri, record, {"collection_id": "c", "record_id": rid}),
        entry("update", "record", record_uri, record2, {"collection_id": "c", "record_id": rid}),
        entry("update", "record", record_uri, record3, {"collection_id": "c", "record_id": rid}),
        entry(
            "delete", "record", record_uri, deleted_record, {"collection_id": "c", "record_id": rid}
        ),
        entry(
            "update", "collection", "/buckets/b/collections/c", collection2, {"collection_id": "c"}
        ),
        entry("delete", "group", "/buckets/b/groups/g", deleted_group, {"group_id": "g"}),
        entry(
            "delete",
            "collection",
            "/buckets/b/collections/c",
            deleted_collection,
            {"collection_id": "c"},
        ),
    ]
    entries = history(api)
    assert [strip_entry(e) for e in reversed(entries)] == expected
    # Newest first, each stamped in the history list after its target.
    stamps = [e["last_modified"] for e in entries]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == len(stamps)
    assert all(e["last_modified"] >= e["target"]["data"]["last_modified"] for e in entries)
    # Kinto's key order, and a tombstone as the target of a delete.
    assert list(entries[0]) == [
        "date",
        "target",
        "action",
        "uri",
        "user_id",
        "resource_name",
        "collection_id",
        "id",
        "last_modified",
    ]
    tombstone = {
        "id": "c",
        "deleted": True,
        "last_modified": deleted_collection["data"]["last_modified"],
    }
    assert entries[0]["target"] == {"data": tombstone, "permissions": {}}


def test_date_is_the_time_of_the_change(api):
    before = datetime.now().astimezone()
    write(api, "PUT", "/buckets/b")
    (entry,) = history(api)
    when = datetime.fromisoformat(entry["date"])
    assert abs((when - before).total_seconds()) < 5


def test_plural_delete_records_one_entry_per_object(api):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c")
    for rid, value in (("r1", 1), ("r2", 3), ("r3", 3)):
        write(api, "PUT", f"/buckets/b/collections/c/records/{rid}", {"data": {"a": value}})
    deleted = write(api, "DELETE", "/buckets/b/collections/c/records?a=3")["data"]
    entries = history(api, "?action=delete")
    assert sorted(e["record_id"] for e in entries) == ["r2", "r3"]
    assert sorted(e["target"]["data"]["last_modified"] for e in entries) == sorted(
        d["last_modified"] for d in deleted
    )
    write(api, "PUT", "/buckets/b/groups/g1", {"data": {"members": []}})
    write(api, "PUT", "/buckets/b/groups/g2", {"data": {"members": []}})
    write(api, "DELETE", "/buckets/b/groups")
    assert sorted(e["group_id"] for e in history(api, "?action=delete&resource_name=group")) == [
        "g1",
        "g2",
    ]


def test_cascade_records_the_deleted_collection_not_its_records(api):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c")
    write(api, "PUT", "/buckets/b/collections/c/records/r1", {"data": {}})
    write(api, "DELETE", "/buckets/b/collections/c")
    entries = history(api)
    assert [(e["action"], e["uri"]) for e in entries] == [
        ("delete", "/buckets/b/collections/c"),
        ("create", "/buckets/b/collections/c/records/r1"),
        ("create", "/buckets/b/collections/c"),
        ("create", "/buckets/b"),
    ]


def test_deleting_the_bucket_deletes_its_history(api, tracking):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c")
    write(api, "PUT", "/buckets/other")
    assert os.path.isdir(os.path.join(tracking.data_dir, "buckets", "b", "history"))
    write(api, "DELETE", "/buckets/b")
    assert not os.path.exists(os.path.join(tracking.data_dir, "buckets", "b"))
    write(api, "PUT", "/buckets/b")
    assert [(e["action"], e["uri"]) for e in history(api)] == [("create", "/buckets/b")]
    write(api, "DELETE", "/buckets")  # plural: every bucket, each with its history
    write(api, "PUT", "/buckets/other")
    assert [(e["action"], e["uri"]) for e in history(api, bucket="other")] == [
        ("create", "/buckets/other")
    ]


def test_batch_writes_record_an_entry_each(api):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c")
    write(
        api,
        "POST",
        "/batch",
        {
            "defaults": {"method": "PUT"},
            "requests": [
                {"path": f"/buckets/b/collections/c/records/r{i}", "body": {"data": {"i": i}}}
                for i in range(3)
            ],
        },
        status=(200,),
    )
    entries = history(api, "?resource_name=record&_sort=record_id")
    assert [(e["record_id"], e["target"]["data"]["i"]) for e in entries] == [
        ("r0", 0),
        ("r1", 1),
        ("r2", 2),
    ]


def test_concurrent_writes_each_get_one_entry(api):
    write(api, "PUT", "/buckets/b")
    for cid in ("c1", "c2"):
        write(api, "PUT", f"/buckets/b/collections/{cid}")

    def burst(worker):
        session = api.as_user(ALICE)
        for i in range(10):
            write(
                session,
                "PUT",
                f"/buckets/b/collections/c{worker % 2 + 1}/records/w{worker}-{i}",
                {"data": {"i": i}},
            )

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(burst, range(6)))
    entries = history(api, "?resource_name=record")
    assert sorted(e["record_id"] for e in entries) == sorted(
        f"w{worker}-{i}" for worker in range(6) for i in range(10)
    )
    stamps = [e["last_modified"] for e in entries]
    assert len(set(stamps)) == 60 and stamps == sorted(stamps, reverse=True)


def test_anonymous_changes_have_a_null_user_id(api):
    write(api, "PUT", "/buckets/b", {"permissions": {"write": ["system.Everyone"]}})
    write(api.as_user(None), "PUT", "/buckets/b/collections/c")
    (entry,) = history(api, "?resource_name=collection")
    assert entry["user_id"] is None
    assert entry["target"]["permissions"] == {"write": ["system.Everyone"]}


def test_history_files_are_plain_json(api, tracking):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c", {"permissions": {"read": [BOB_ID]}})
    write(api, "PUT", "/buckets/b/collections/c/records/r1", {"data": {"title": "été"}})
    entries = {e["id"]: e for e in history(api)}
    folder = os.path.join(tracking.data_dir, "buckets", "b", "history")
    on_disk = {}
    for path in glob.glob(os.path.join(folder, "*.json")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        document = json.loads(text)
        on_disk[os.path.basename(path)[: -len(".json")]] = document
        if document["resource_name"] == "record":
            assert "été" in text  # readable with grep, not \\u-escaped
    assert on_disk == entries
    # Each entry's read grant sits beside it: bucket and collection readers.
    record_entry = next(e for e in entries.values() if e["resource_name"] == "record")
    with open(os.path.join(folder, f"{record_entry['id']}.acl"), encoding="utf-8") as f:
        assert json.load(f) == {"read": sorted([ALICE_ID, BOB_ID])}
    with open(os.path.join(folder, "_journal.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert {line["id"] for line in lines if line["op"] == "put"} == set(entries)


# -- the list endpoint ------------------------------------------------------------


@pytest.fixture
def blog(api):
    return make_blog(api)


def make_blog(api):
    """Bucket b: collection c (bob may read it) with r1 (updated, deleted);
    collection c2 with public r2, r3 and "123" (bulk-deleted); group g (deleted)."""
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c", {"permissions": {"read": [BOB_ID]}})
    write(api, "PUT", "/buckets/b/collections/c2")
    write(api, "PUT", "/buckets/b/groups/g", {"data": {"members": ["x"]}})
    write(api, "PUT", "/buckets/b/collections/c/records/r1", {"data": {"a": 1}})
    write(api, "PATCH", "/buckets/b/collections/c/records/r1", {"data": {"a": 2}})
    write(
        api,
        "PUT",
        "/buckets/b/collections/c2/records/r2",
        {"data": {"a": 1}, "permissions": {"read": ["system.Everyone"]}},
    )
    write(api, "PUT", "/buckets/b/collections/c2/records/r3", {"data": {"a": 3}})
    write(api, "PUT", "/buckets/b/collections/c2/records/123", {"data": {"a": 3}})
    write(api, "DELETE", "/buckets/b/collections/c/records/r1")
    write(api, "DELETE", "/buckets/b/collections/c2/records?a=3")
    write(api, "DELETE", "/buckets/b/groups/g")
    return api


def uris(entries):
    return [e["uri"] for e in entries]


def test_filters(blog):
    assert len(history(blog)) == 13
    assert uris(history(blog, "?resource_name=group")) == ["/buckets/b/groups/g"] * 2
    assert [e["action"] for e in history(blog, "?collection_id=c")] == [
        "delete",
        "update",
        "create",
        "create",
    ]
    created = history(blog, "?action=create&resource_name=record&collection_id=c2&_sort=uri")
    assert uris(created) == [
        "/buckets/b/collections/c2/records/123",
        "/buckets/b/collections/c2/records/r2",
        "/buckets/b/collections/c2/records/r3",
    ]
    assert uris(history(blog, "?target.data.a=3")) == [
        "/buckets/b/collections/c2/records/123",
        "/buckets/b/collections/c2/records/r3",
    ]
    assert history(blog, f"?exclude_user_id={ALICE_ID}") == []
    assert len(history(blog, f"?user_id={ALICE_ID}")) == 13
    assert uris(history(blog, "?like_uri=*groups*")) == ["/buckets/b/groups/g"] * 2


def test_integer_looking_id_filters_compare_as_strings(blog):
    assert uris(history(blog, "?record_id=123")) == ["/buckets/b/collections/c2/records/123"] * 2
    # Only plain values are converted: in_ keeps 123 a number, as Kinto does.
    assert (
        uris(history(blog, "?in_record_id=123,r3")) == ["/buckets/b/collections/c2/records/r3"] * 2
    )


def test_sort_pagination_and_projection(blog):
    first = blog.get("/buckets/b/history?_sort=-target.data.last_modified&_limit=5&_fields=uri")
    assert_status(first, 200)
    page = first.json()["data"]
    assert [sorted(e) for e in page] == [["id", "last_modified", "uri"]] * 5
    collected = list(page)
    next_page = first.headers.get("Next-Page")
    while next_page:
        response = assert_status(blog.get(next_page), 200)
        collected += response.json()["data"]
        next_page = response.headers.get("Next-Page")
    full = history(blog, "?_sort=-target.data.last_modified")
    assert [e["id"] for e in collected] == [e["id"] for e in full]
    assert len(collected) == 13


def test_since_and_before(blog):
    entries = history(blog)
    middle = entries[6]["last_modified"]
    newer = history(blog, f"?_since={middle}")
    older = history(blog, f"?_before={middle}")
    assert [e["id"] for e in newer] == [e["id"] for e in entries[:6]]
    assert [e["id"] for e in older] == [e["id"] for e in entries[7:]]


def test_kinto_http_js_list_records_at(blog):
    """The two requests kinto-http.js sends for listRecords({at: ts})."""
    created = history(blog, "?action=create&resource_name=collection&collection_id=c2&_limit=1")
    assert uris(created) == ["/buckets/b/collections/c2"]
    (r3_created,) = history(blog, "?record_id=r3&action=create")
    at = r3_created["target"]["data"]["last_modified"]
    entries = history(
        blog,
        "?resource_name=record&collection_id=c2"
        f"&max_target.data.last_modified={at}&_sort=-target.data.last_modified",
    )
    assert [(e["action"], e["record_id"]) for e in entries] == [("create", "r3"), ("create", "r2")]


@pytest.mark.parametrize(
    "query, name, description, location",
    [
        ("?foo=1", "foo", "Unknown filter field 'foo'", "querystring"),
        ("?foo.bar=3", "foo.bar", "Unknown filter field 'foo.bar'", "querystring"),
        ("?gt_data.x=1", "gt_data.x", "Unknown filter field 'gt_data.x'", "querystring"),
        ("?_sort=foo", None, "Unknown sort field 'foo'", "querystring"),
        ("?_fields=foo,bar", "Invalid _fields parameter", "Fields bar,foo do not exist", "body"),
    ],
)
def test_unknown_fields_are_a_400(blog, query, name, description, location):
    body = assert_error(blog.get(f"/buckets/b/history{query}"), 400, 107)
    assert body["details"] == [{"location": location, "name": name, "description": description}]


def test_head_has_no_counts(blog):
    get = assert_status(blog.get("/buckets/b/history"), 200)
    head = assert_status(blog.head("/buckets/b/history"), 200)
    assert head.text == ""
    assert "Total-Objects" not in head.headers and "Total-Records" not in head.headers
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Content-Length"] == str(len(get.content))
    assert get.headers["Cache-Control"] == "no-cache, no-store"


def test_etag_follows_the_history_list(blog):
    before = blog.get("/buckets/b/history")
    etag = before.headers["ETag"]
    assert int(etag.strip('"')) == before.json()["data"][0]["last_modified"]
    assert_status(blog.get("/buckets/b/history", headers={"If-None-Match": etag}), 304)
    write(blog, "PUT", "/buckets/b/collections/c3")
    after = blog.get("/buckets/b/history", headers={"If-None-Match": etag})
    assert_status(after, 200)
    assert after.headers["ETag"] != etag


def test_methods_and_object_urls(blog):
    for method in ("POST", "PUT", "PATCH"):
        response = blog.request(method, "/buckets/b/history", json={})
        assert_error(response, 405, 115, "Method not allowed on this endpoint.")
    assert_error(
        blog.get("/buckets/b/history/abc"),
        404,
        111,
        "The resource you are looking for could not be found.",
    )


# -- visibility (17.3) --------------------------------------------------------------


def test_a_reader_of_one_collection_sees_only_its_entries(blog):
    bob = blog.as_user(BOB)
    seen = history(bob)
    assert [(e["action"], e["uri"]) for e in seen] == [
        ("delete", "/buckets/b/collections/c/records/r1"),
        ("create", "/buckets/b/collections/c2/records/r2"),  # public record
        ("update", "/buckets/b/collections/c/records/r1"),
        ("create", "/buckets/b/collections/c/records/r1"),
        ("create", "/buckets/b/collections/c"),
    ]
    # Filters apply within what one may see.
    assert uris(history(bob, "?resource_name=collection")) == ["/buckets/b/collections/c"]


def test_anonymous_sees_entries_of_public_objects(blog):
    anonymous = blog.as_user(None)
    assert uris(history(anonymous)) == ["/buckets/b/collections/c2/records/r2"]


def test_visibility_is_fixed_when_the_entry_is_written(blog):
    # Granting bob the bucket later shows him everything (bucket readers see all) ...
    write(blog, "PATCH", "/buckets/b", {"permissions": {"read": [BOB_ID]}})
    assert len(history(blog.as_user(BOB))) == 14
    # ... but revoking his collection grant does not hide what he could see.
    write(blog, "PATCH", "/buckets/b", {"permissions": {"read": []}})
    write(blog, "PATCH", "/buckets/b/collections/c", {"permissions": {"read": []}})
    assert "/buckets/b/collections/c" in uris(history(blog.as_user(BOB)))


def test_no_grant_at_all_is_forbidden(api):
    write(api, "PUT", "/buckets/b")
    assert_error(api.as_user(BOB).get("/buckets/b/history"), 403, 121)
    assert_error(api.as_user(BOB).get("/buckets/nothing/history"), 403, 121)
    assert_error(api.as_user(None).get("/buckets/nothing/history"), 401, 104)
    assert_error(api.get("/buckets/a.b/history"), 403, 121)


# -- purge ------------------------------------------------------------------------------


def test_purge_needs_bucket_write(blog):
    assert_error(blog.as_user(BOB).delete("/buckets/b/history"), 403, 121)


def test_purge_returns_tombstones_and_leaves_them_for_pollers(blog, tracking):
    ts = int(blog.get("/buckets/b/history").headers["ETag"].strip('"'))
    groups = {e["id"] for e in history(blog, "?resource_name=group")}
    deleted = write(blog, "DELETE", "/buckets/b/history?resource_name=group")["data"]
    assert {d["id"] for d in deleted} == groups
    assert all(d["deleted"] is True and d["last_modified"] > ts for d in deleted)
    assert history(blog, "?resource_name=group") == []
    changes = history(blog, f"?_since={ts}")
    assert {c["id"] for c in changes} == groups and all(c["deleted"] for c in changes)
    folder = os.path.join(tracking.data_dir, "buckets", "b", "history")
    assert not any(os.path.exists(os.path.join(folder, f"{gid}.json")) for gid in groups)
    write(blog, "DELETE", "/buckets/b/history")
    assert history(blog) == []


def test_purging_history_records_nothing(blog):
    write(blog, "DELETE", "/buckets/b/history")
    write(blog, "PUT", "/buckets/b/collections/c9")
    assert uris(history(blog)) == ["/buckets/b/collections/c9"]


def test_kinto_http_client_reads_and_purges_history(start_server):
    # kinto-http makes its own requests sessions: a daemon with the same settings.
    blog = make_blog(Api(start_server(plugins="flush history")))
    client = kinto_http.Client(server_url=blog.daemon.url, auth=ALICE, bucket="b")
    entries = client.get_history()
    assert len(entries) == 13
    assert client.get_history(resource_name="group") == history(blog, "?resource_name=group")
    client.purge_history()
    assert client.get_history() == []


# -- snapshot -------------------------------------------------------------------------------


def test_snapshot_rebuilds_a_collection_at_a_timestamp(api):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c", {"permissions": {"read": [BOB_ID]}})
    r1 = write(api, "PUT", "/buckets/b/collections/c/records/r1", {"data": {"v": 1}})["data"]
    r2 = write(api, "PUT", "/buckets/b/collections/c/records/r2", {"data": {"v": 1}})["data"]
    at = r2["last_modified"]
    write(api, "PATCH", "/buckets/b/collections/c/records/r1", {"data": {"v": 2}})
    write(api, "DELETE", "/buckets/b/collections/c/records/r2")
    write(api, "PUT", "/buckets/b/collections/c/records/r3", {"data": {"v": 3}})
    snapshot = assert_status(api.get(f"/buckets/b/snapshot/collections/c@{at}"), 200).json()
    assert snapshot == {"data": [r2, r1]}
    before_any = api.get(f"/buckets/b/snapshot/collections/c@{r1['last_modified'] - 1}")
    assert before_any.json() == {"data": []}
    now = api.get("/buckets/b/snapshot/collections/c@9999999999999").json()["data"]
    assert now == api.get("/buckets/b/collections/c/records").json()["data"]
    # A collection reader may rebuild it too.
    assert api.as_user(BOB).get(f"/buckets/b/snapshot/collections/c@{at}").json() == snapshot


@pytest.mark.parametrize(
    "path, status, errno, details",
    [
        (
            "/buckets/b/snapshot/collections/c@abc",
            400,
            107,
            [{"location": "path", "name": "timestamp", "description": "Invalid timestamp 'abc'"}],
        ),
        (
            "/buckets/b/snapshot/collections/c@-1",
            400,
            107,
            [{"location": "path", "name": "timestamp", "description": "Invalid timestamp '-1'"}],
        ),
        (
            "/buckets/b/snapshot/collections/a.b@abc",
            400,
            107,
            [{"location": "path", "name": "timestamp", "description": "Invalid timestamp 'abc'"}],
        ),
        (
            "/buckets/b/snapshot/collections/a.b@1",
            404,
            111,
            {"id": "a.b", "resource_name": "collection"},
        ),
        (
            "/buckets/a.b/snapshot/collections/c@1",
            404,
            111,
            {"id": "a.b", "resource_name": "bucket"},
        ),
        (
            "/buckets/b/snapshot/collections/c@1@2",
            404,
            111,
            {"id": "c@1", "resource_name": "collection"},
        ),
        ("/buckets/b/snapshot/collections/c", 404, 111, None),
    ],
)
def test_snapshot_errors(api, path, status, errno, details):
    write(api, "PUT", "/buckets/b")
    body = assert_error(api.get(path), status, errno)
    assert body.get("details") == details


def test_snapshot_permissions(api):
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c")
    assert_error(api.as_user(BOB).get("/buckets/b/snapshot/collections/c@1"), 403, 121)
    assert_error(api.as_user(None).get("/buckets/b/snapshot/collections/c@1"), 401, 104)
    assert api.get("/buckets/b/snapshot/collections/missing@1").json() == {"data": []}


# -- settings -----------------------------------------------------------------------------


def test_exclusions(start_app):
    daemon = start_app(
        plugins="history",
        history_exclude_resources="/buckets/quiet /buckets/b/collections/skip",
        history_exclude_user_ids=BOB_ID,
    )
    api = Api(daemon)
    assert api.get("/").json()["capabilities"]["history"]["excluded_resources"] == [
        {"bucket": "quiet"},
        {"bucket": "b", "collection": "skip"},
    ]
    write(api, "PUT", "/buckets/quiet")
    write(api, "PUT", "/buckets/quiet/collections/c")
    write(api, "PUT", "/buckets/b", {"permissions": {"write": [BOB_ID]}})
    write(api, "PUT", "/buckets/b/collections/skip")
    write(api, "PUT", "/buckets/b/collections/skip/records/r", {"data": {}})
    write(api, "PUT", "/buckets/b/collections/kept")
    write(api.as_user(BOB), "PUT", "/buckets/b/collections/kept/records/by-bob", {"data": {}})
    assert history(api, bucket="quiet") == []
    assert uris(history(api)) == ["/buckets/b/collections/kept", "/buckets/b"]


def test_auto_trim(start_app):
    daemon = start_app(
        plugins="history", history_auto_trim_max_count=3, history_auto_trim_threshold=2
    )
    api = Api(daemon)
    assert api.get("/").json()["capabilities"]["history"]["auto_trim_max_count"] == 3
    write(api, "PUT", "/buckets/b")
    write(api, "PUT", "/buckets/b/collections/c")
    for i in range(5):
        write(api, "PUT", f"/buckets/b/collections/c/records/r{i}", {"data": {}})
    # 5 record entries: not more than 3 + 2 yet.
    assert len(history(api, "?resource_name=record")) == 5
    write(api, "PUT", "/buckets/b/collections/c/records/r5", {"data": {}})
    assert [e["record_id"] for e in history(api, "?resource_name=record")] == ["r5", "r4", "r3"]
    # Other kinds are counted apart.
    assert len(history(api, "?resource_name=collection")) == 1
    assert len(history(api, "?resource_name=bucket")) == 1


def test_bad_excluded_uri_stops_the_daemon(start_server):  # a process that exits
    with pytest.raises(RuntimeError, match="history_exclude_resources"):
        start_server(plugins="history", history_exclude_resources="/buckets/b/nonsense/x")


@pytest.mark.parametrize(
    "path, allowed",
    [
        ("/buckets/b/history", "GET,HEAD,DELETE,OPTIONS"),
        ("/buckets/b/snapshot/collections/c@1", "GET,HEAD,OPTIONS"),
    ],
)
def test_cors_preflight_names_the_methods_of_each_endpoint(api, path, allowed):
    for method in allowed.split(","):
        if method == "OPTIONS":
            continue
        response = api.request(
            "OPTIONS",
            path,
            auth=None,
            headers={"Origin": "http://example.com", "Access-Control-Request-Method": method},
        )
        assert_status(response, 200)
        assert response.headers["Access-Control-Allow-Methods"] == allowed
    refused = api.request(
        "OPTIONS",
        path,
        auth=None,
        headers={"Origin": "http://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert_error(refused, 400, 107)


def test_default_bucket_implicit_creations_are_recorded(start_app):
    # "history" first in the setting: the default bucket must still win its routes.
    api = Api(start_app(plugins="history default_bucket"))
    bucket_id = api.get("/").json()["user"]["bucket"]
    write(api, "PUT", "/buckets/default/collections/tasks/records/r1", {"data": {"t": 1}})
    entries = history(api, bucket="default")
    assert [(e["action"], e["resource_name"], e["uri"]) for e in entries] == [
        ("create", "record", f"/buckets/{bucket_id}/collections/tasks/records/r1"),
        ("create", "collection", f"/buckets/{bucket_id}/collections/tasks"),
        ("create", "bucket", f"/buckets/{bucket_id}"),
    ]
    assert entries[-1]["bucket_id"] == bucket_id
    assert history(api, bucket=bucket_id) == entries

"""The changes plugin: ``GET /v1/buckets/monitor/collections/changes/records``.

What Kinto's plugin does (kinto-changes, now remote-settings' ``changes``):
one entry per collection, ``{"id", "last_modified", "bucket",
"collection", "host"}``, ``id`` being the UUID of the MD5 of ``http_host``
and the collection URI (the values below are remote-settings' own test
vectors), ``last_modified`` the collection's records timestamp; the
``changes`` capability; ``GET``/``HEAD`` only.  What kintofs adds on
purpose: a caller only sees the entries of the collections whose records
it may read, and the ``ETag`` is the newest of those.  In process (see
conftest), plus the real kinto-http client against a daemon.
"""

import hashlib
import uuid

import kinto_http
import pytest
from conftest import ALICE, BOB, Api, assert_error, assert_status, basicauth_id, flush, make_server

from kintofs import __version__
from kintofs.plugins.changes import entry_id

ALICE_ID = basicauth_id(ALICE)
BOB_ID = basicauth_id(BOB)
MONITOR = "/buckets/monitor/collections/changes/records"


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("changes") / "data", plugins="flush changes")
    yield server
    server.stop()


@pytest.fixture
def api(monitoring):
    return flush(monitoring)


def write(api, method, path, body=None, status=(200, 201)):
    response = api.request(method, path, json=body)
    assert response.status_code in status, (method, path, response.status_code, response.text)
    return response.json()


def make_collections(api, *names, bucket="b", permissions=None):
    write(api, "PUT", f"/buckets/{bucket}", {"permissions": permissions or {}})
    for name in names:
        write(api, "PUT", f"/buckets/{bucket}/collections/{name}")


def add_record(api, bucket, collection, data=None):
    path = f"/buckets/{bucket}/collections/{collection}/records"
    return write(api, "POST", path, {"data": data or {}})["data"]


def entries(api, query="", **kwargs):
    return assert_status(api.get(MONITOR + query, **kwargs), 200).json()["data"]


def by_collection(found):
    return {(entry["bucket"], entry["collection"]): entry for entry in found}


def records_etag(api, bucket, collection):
    response = api.get(f"/buckets/{bucket}/collections/{collection}/records")
    return int(assert_status(response, 200).headers["ETag"].strip('"'))


# -- the entries -------------------------------------------------------------


def test_entry_ids_are_kintos():
    assert entry_id("", "a", "b") == "9527d115-6191-fa49-a530-8fbfc4997755"
    assert entry_id("https://localhost:443", "a", "b") == "fa48a96d-1600-f561-8645-3395acb08a5a"


def test_one_entry_per_collection(api):
    make_collections(api, "c1", "c2")
    make_collections(api, "c1", bucket="other")
    add_record(api, "b", "c1")
    found = entries(api)
    assert {(e["bucket"], e["collection"]) for e in found} == {
        ("b", "c1"),
        ("b", "c2"),
        ("other", "c1"),
    }
    entry = by_collection(found)[("b", "c1")]
    assert entry == {
        "id": entry_id("", "b", "c1"),
        "last_modified": records_etag(api, "b", "c1"),
        "bucket": "b",
        "collection": "c1",
        "host": "",
    }
    # Newest first, as any list.
    stamps = [e["last_modified"] for e in found]
    assert stamps == sorted(stamps, reverse=True)


def test_host_and_ids_come_from_http_host(start_app):
    api = Api(start_app(plugins="changes", http_host="kinto.example.com"))
    make_collections(api, "c")
    [entry] = entries(api)
    digest = hashlib.md5(b"kinto.example.com/buckets/b/collections/c").hexdigest()
    assert entry["host"] == "kinto.example.com"
    assert entry["id"] == str(uuid.UUID(digest))


def test_an_entry_moves_when_a_record_is_written(api):
    make_collections(api, "c1", "c2")
    before = by_collection(entries(api))
    record = add_record(api, "b", "c1")
    after = by_collection(entries(api))
    assert after[("b", "c1")]["id"] == before[("b", "c1")]["id"]
    assert after[("b", "c1")]["last_modified"] == record["last_modified"]
    assert after[("b", "c2")] == before[("b", "c2")]
    # A deletion moves it too.
    path = f"/buckets/b/collections/c1/records/{record['id']}"
    deleted = write(api, "DELETE", path)["data"]
    assert by_collection(entries(api))[("b", "c1")]["last_modified"] == deleted["last_modified"]


def test_since_polling(api):
    make_collections(api, "c1", "c2", "c3")
    first = assert_status(api.get(MONITOR), 200)
    etag = first.headers["ETag"]
    assert int(etag.strip('"')) == max(e["last_modified"] for e in first.json()["data"])
    assert entries(api, f"?_since={etag}") == []

    add_record(api, "b", "c2")
    polled = assert_status(api.get(MONITOR, params={"_since": etag}), 200)
    assert [e["collection"] for e in polled.json()["data"]] == ["c2"]
    new_etag = polled.headers["ETag"]
    assert int(new_etag.strip('"')) > int(etag.strip('"'))
    assert entries(api, f"?_since={new_etag}") == []
    # _before, the other bound.
    assert {e["collection"] for e in entries(api, f"?_before={new_etag}")} == {"c1", "c3"}


def test_etag_and_304(api):
    make_collections(api, "c")
    first = assert_status(api.get(MONITOR), 200)
    etag = first.headers["ETag"]
    assert first.headers["Last-Modified"]
    assert first.headers["Cache-Control"] == "no-cache, no-store"
    cached = api.get(MONITOR, headers={"If-None-Match": etag})
    assert_status(cached, 304)
    assert cached.headers["ETag"] == etag
    assert cached.content == b""
    add_record(api, "b", "c")
    assert_status(api.get(MONITOR, headers={"If-None-Match": etag}), 200)
    # If-Match, as on any list.
    assert_error(api.get(MONITOR, headers={"If-Match": etag}), 412, 114)
    assert_error(api.get(MONITOR, headers={"If-None-Match": "*"}), 412, 114)


def test_a_deleted_collection_has_no_entry(api):
    make_collections(api, "c1", "c2")
    write(api, "DELETE", "/buckets/b/collections/c1")
    assert [e["collection"] for e in entries(api)] == ["c2"]
    write(api, "DELETE", "/buckets/b")
    assert entries(api) == []


def test_no_monitor_bucket_is_needed_nor_used(api):
    assert entries(api) == []
    # A real bucket "monitor" changes nothing: the route is the plugin's.
    make_collections(api, "changes", bucket="monitor")
    # Its records are still reached one by one, by the generic routes.
    write(api, "PUT", "/buckets/monitor/collections/changes/records/r", {"data": {"x": 1}})
    assert [e["bucket"] for e in entries(api)] == ["monitor"]
    assert "x" not in entries(api)[0]
    record = api.get("/buckets/monitor/collections/changes/records/r")
    assert assert_status(record, 200).json()["data"]["x"] == 1


# -- what each caller sees -----------------------------------------------------


def test_a_caller_sees_only_the_collections_it_may_read(api):
    bob = api.as_user(BOB)
    anonymous = api.as_user(None)
    make_collections(api, "c1", "c2")
    add_record(api, "b", "c1")
    assert entries(bob) == []
    assert entries(anonymous) == []

    write(api, "PATCH", "/buckets/b/collections/c1", {"permissions": {"read": [BOB_ID]}})
    assert [e["collection"] for e in entries(bob)] == ["c1"]
    add_record(api, "b", "c2")
    # Bob's ETag is that of what he sees, not of c2, written later.
    response = assert_status(bob.get(MONITOR), 200)
    assert int(response.headers["ETag"].strip('"')) == records_etag(api, "b", "c1")
    assert int(response.headers["ETag"].strip('"')) < records_etag(api, "b", "c2")

    # Read on the bucket shows all its collections; then write on it does too.
    write(api, "PATCH", "/buckets/b", {"permissions": {"read": ["system.Everyone"]}})
    assert {e["collection"] for e in entries(bob)} == {"c1", "c2"}
    assert {e["collection"] for e in entries(anonymous)} == {"c1", "c2"}
    write(api, "PUT", "/buckets/b", {"permissions": {"write": [BOB_ID]}})
    assert {e["collection"] for e in entries(anonymous)} == set()
    assert {e["collection"] for e in entries(bob)} == {"c1", "c2"}


def test_a_group_grant_shows_the_collection(api):
    bob = api.as_user(BOB)
    make_collections(api, "c")
    write(api, "PUT", "/buckets/b/groups/readers", {"data": {"members": [BOB_ID]}})
    assert entries(bob) == []
    write(
        api,
        "PATCH",
        "/buckets/b/collections/c",
        {"permissions": {"read": ["/buckets/b/groups/readers"]}},
    )
    assert [e["collection"] for e in entries(bob)] == ["c"]


def test_reading_some_records_is_not_enough(api):
    # Bob lists the one record he may read, but the collection's timestamp
    # also moves with records he may not see: no entry for him.
    bob = api.as_user(BOB)
    make_collections(api, "c")
    path = "/buckets/b/collections/c/records/mine"
    write(api, "PUT", path, {"permissions": {"read": [BOB_ID]}})
    add_record(api, "b", "c")
    listed = assert_status(bob.get("/buckets/b/collections/c/records"), 200).json()["data"]
    assert [record["id"] for record in listed] == ["mine"]
    assert entries(bob) == []


def test_record_read_principals_show_every_collection(start_app):
    server = start_app(plugins="changes", record_read_principals=BOB_ID)
    make_collections(Api(server), "c1", "c2")
    assert {e["collection"] for e in entries(Api(server, BOB))} == {"c1", "c2"}


# -- a list like any other ---------------------------------------------------


def test_pagination(api):
    names = [f"c{i}" for i in range(5)]
    make_collections(api, *names)
    for name in names:
        add_record(api, "b", name)
    everything = entries(api)
    first = assert_status(api.get(MONITOR, params={"_limit": 2}), 200)
    pages, next_page = [first.json()["data"]], first.headers.get("Next-Page")
    while next_page:
        response = assert_status(api.get(next_page), 200)
        assert response.headers["ETag"] == first.headers["ETag"]
        pages.append(response.json()["data"])
        next_page = response.headers.get("Next-Page")
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [e for page in pages for e in page] == everything

    # Another order, paginated too.
    sorted_pages, url = [], MONITOR + "?_sort=collection&_limit=3"
    while url:
        response = assert_status(api.get(url), 200)
        sorted_pages += response.json()["data"]
        url = response.headers.get("Next-Page")
    assert [e["collection"] for e in sorted_pages] == names


def test_pagination_through_equal_timestamps(api):
    # Records imported with one forced timestamp give their collections equal
    # entries; pages must still hold each entry once.
    make_collections(api, "x", "y", "z")
    for name in "xyz":
        path = f"/buckets/b/collections/{name}/records/r"
        write(api, "PUT", path, {"data": {"last_modified": 1600000000000}})
    assert {e["last_modified"] for e in entries(api)} == {1600000000000}
    seen, url = [], MONITOR + "?_limit=1"
    while url:
        response = assert_status(api.get(url), 200)
        seen += [e["collection"] for e in response.json()["data"]]
        url = response.headers.get("Next-Page")
    assert seen == ["z", "y", "x"]


def test_filters_sort_and_fields(api):
    make_collections(api, "c1", "c2")
    make_collections(api, "c1", bucket="other")
    assert {e["collection"] for e in entries(api, "?bucket=b")} == {"c1", "c2"}
    assert [e["bucket"] for e in entries(api, "?collection=c1&_sort=bucket")] == ["b", "other"]
    assert [e["bucket"] for e in entries(api, "?in_bucket=other,nope")] == ["other"]
    projected = entries(api, "?_fields=bucket&collection=c2")
    assert projected == [
        {
            "id": entry_id("", "b", "c2"),
            "last_modified": projected[0]["last_modified"],
            "bucket": "b",
        }
    ]
    # The entry's fields are all there is, as on Kinto's strict resource.
    body = assert_error(api.get(MONITOR + "?title=x"), 400, 107)
    assert body["message"] == "Unknown filter field 'title'"
    assert_error(api.get(MONITOR + "?_sort=title"), 400, 107)
    assert_error(api.get(MONITOR + "?_since=abc"), 400, 107)


def test_head_has_the_etag_and_no_counts(api):
    make_collections(api, "c")
    get = assert_status(api.get(MONITOR), 200)
    head = assert_status(api.head(MONITOR), 200)
    assert head.content == b""
    assert head.headers["ETag"] == get.headers["ETag"]
    # Kinto's endpoint serves HEAD with its GET view: no Total-Records.
    assert "Total-Records" not in head.headers and "Total-Objects" not in head.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_are_not_allowed(api, method):
    make_collections(api, "c")
    for who in (api, api.as_user(None)):
        response = who.request(method, MONITOR, json={"data": {}})
        assert_error(response, 405, 115, "Method not allowed on this endpoint.")
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert len(entries(api)) == 1


def test_cors_preflight(api):
    response = api.request(
        "OPTIONS",
        MONITOR,
        auth=None,
        headers={"Origin": "http://example.com", "Access-Control-Request-Method": "GET"},
    )
    assert_status(response, 200)
    assert response.headers["Access-Control-Allow-Methods"] == "GET,HEAD,OPTIONS"


def test_in_a_batch(api):
    make_collections(api, "c")
    response = api.post("/batch", json={"requests": [{"method": "GET", "path": MONITOR}]})
    [answer] = assert_status(response, 200).json()["responses"]
    assert answer["status"] == 200
    assert [e["collection"] for e in answer["body"]["data"]] == ["c"]


# -- the capability and the settings -------------------------------------------------


def test_capability(api):
    assert api.get("/").json()["capabilities"]["changes"] == {
        "description": "Track modifications of records in Kinto and store the collection "
        "timestamps into a specific bucket and collection.",
        "url": "http://kinto.readthedocs.io/en/latest/tutorials/synchronisation.html"
        "#polling-for-remote-changes",
        "version": __version__,
        "collections": [],
    }


def test_changes_resources_narrow_the_list(start_app):
    resources = ["/buckets/b", "/buckets/other/collections/c1"]
    api = Api(start_app(plugins="changes", changes_resources=" ".join(resources)))
    make_collections(api, "c1", "c2")
    make_collections(api, "c1", "c2", bucket="other")
    make_collections(api, "c1", bucket="third")
    assert {(e["bucket"], e["collection"]) for e in entries(api)} == {
        ("b", "c1"),
        ("b", "c2"),
        ("other", "c1"),
    }
    assert api.get("/").json()["capabilities"]["changes"]["collections"] == resources


@pytest.mark.parametrize(
    "uri", ["/buckets/b/groups/g", "/buckets/b/collections/c/records/r", "b", "/buckets/b.x"]
)
def test_a_bad_resource_uri_is_refused_at_start(start_app, uri):
    with pytest.raises(ValueError, match="changes_resources"):
        start_app(plugins="changes", changes_resources=uri)


def test_without_the_plugin_the_url_is_a_plain_records_list(start_app):
    api = Api(start_app())
    assert_error(api.get(MONITOR), 403, 121)
    assert "changes" not in api.get("/").json()["capabilities"]


# -- kinto-http ---------------------------------------------------------------


@pytest.mark.daemon
def test_kinto_http_polls_the_monitor_list(start_server):
    # kinto-http has no method of its own for this list (get_changeset is the
    # /changeset endpoint): clients read it as the records of monitor/changes.
    server = start_server(plugins="changes")
    alice = kinto_http.Client(server_url=server.url, auth=ALICE, timeout=30)
    alice.create_bucket(id="b")
    for name in ("c1", "c2", "c3"):
        alice.create_collection(id=name, bucket="b")
    found = alice.get_records(bucket="monitor", collection="changes", _limit=1, pages=float("inf"))
    assert sorted(e["collection"] for e in found) == ["c1", "c2", "c3"]
    etag = alice.get_records_timestamp(bucket="monitor", collection="changes")

    alice.create_record(data={"title": "new"}, bucket="b", collection="c2")
    moved = alice.get_records(bucket="monitor", collection="changes", _since=etag)
    assert [e["collection"] for e in moved] == ["c2"]

    bob = kinto_http.Client(server_url=server.url, auth=BOB, timeout=30)
    assert bob.get_records(bucket="monitor", collection="changes") == []
    alice.patch_collection(id="c3", bucket="b", permissions={"read": [BOB_ID]})
    assert [e["collection"] for e in bob.get_records(bucket="monitor", collection="changes")] == [
        "c3"
    ]

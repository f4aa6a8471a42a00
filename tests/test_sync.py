"""What a syncing client relies on: changes with tombstones, concurrency control
(412/304), PATCH variants, stable pagination under writes, and the real
kinto-http client syncing two replicas (protocol doc, sections 6.6, 7, 8.3).

The HTTP expectations were checked against real Kinto: run this file with
KINTOFS_REFERENCE_URL (see conftest).
"""

import json
import random
import threading
import time

import kinto_http
import pytest
from conftest import ALICE, BOB, REFERENCE_URL, assert_error, assert_status
from kinto_http.exceptions import KintoException

RECORDS = "/buckets/b/collections/c/records"
PRECONDITION_FAILED = {
    "code": 412,
    "errno": 114,
    "error": "Precondition Failed",
    "message": "Resource was modified meanwhile",
}
kintofs_only = pytest.mark.skipif(bool(REFERENCE_URL), reason="needs a kintofs daemon")


# -- helpers -------------------------------------------------------------------


@pytest.fixture
def records(api):
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    return RECORDS


def put(api, oid, data, **kwargs):
    return assert_status(api.put(f"{RECORDS}/{oid}", json={"data": data}, **kwargs), 201).json()


def etag_of(response):
    return int(response.headers["ETag"].strip('"'))


def quoted(ts):
    return f'"{ts}"'


def list_etag(api):
    return etag_of(assert_status(api.get(RECORDS), 200))


def since(api, ts, *params):
    response = assert_status(api.get(RECORDS, params=[("_since", str(ts)), *params]), 200)
    return response.json()["data"]


def tombstone(oid, ts):
    return {"id": oid, "last_modified": ts, "deleted": True}


def assert_412(response, existing=None, etag=None):
    """Kinto's 412 body: `details.existing` only when the target object exists."""
    assert_status(response, 412)
    body = response.json()
    expected = dict(PRECONDITION_FAILED)
    if existing is not None:
        expected["details"] = {"existing": existing}
    assert body == expected
    if etag is not None:
        assert etag_of(response) == etag


# -- changes and tombstones ----------------------------------------------------


def test_since_returns_changes_and_tombstones_newest_first(api, records):
    r1 = put(api, "r1", {"n": 1})["data"]
    r2 = put(api, "r2", {"n": 2})["data"]
    r3 = put(api, "r3", {"n": 3})["data"]
    deleted = assert_status(api.delete(f"{RECORDS}/r2"), 200).json()["data"]
    updated = assert_status(api.patch(f"{RECORDS}/r1", json={"data": {"n": 10}}), 200).json()
    changes = since(api, r1["last_modified"])
    assert changes == [updated["data"], deleted, r3]
    assert deleted == tombstone("r2", deleted["last_modified"])
    assert since(api, r3["last_modified"]) == [updated["data"], deleted]
    assert since(api, list_etag(api)) == []
    assert since(api, quoted(deleted["last_modified"])) == [updated["data"]]
    assert [obj["id"] for obj in since(api, 0, ("_sort", "last_modified"))] == ["r3", "r2", "r1"]
    assert since(api, r2["last_modified"], ("n", "3")) == [r3], (
        "other filters apply to tombstones too"
    )
    assert since(api, r2["last_modified"], ("has_n", "false")) == [deleted]
    assert since(api, 0, ("deleted", "true")) == [deleted]


def test_before_and_to_include_tombstones_and_to_sends_an_alert(api, records):
    put(api, "r1", {})
    gone = assert_status(api.delete(f"{RECORDS}/r1"), 200).json()["data"]
    r2 = put(api, "r2", {})["data"]
    for param in ("_before", "_to", "lt_last_modified"):
        response = assert_status(api.get(RECORDS, params={param: r2["last_modified"]}), 200)
        assert response.json()["data"] == [gone]
        assert ("Alert" in response.headers) == (param == "_to")
    alert = json.loads(api.get(RECORDS, params={"_to": r2["last_modified"]}).headers["Alert"])
    assert alert == {
        "code": "soft-eol",
        "message": "_to is now deprecated, you should use _before instead",
        "url": "https://kinto.readthedocs.io/en/2.4.0/api/resource.html"
        "#list-of-available-url-parameters",
    }
    plain = assert_status(api.get(RECORDS), 200).json()["data"]
    assert plain == [r2], "no tombstones without a filter on last_modified"


def test_since_projection_drops_deleted_unless_asked(api, records):
    put(api, "r1", {"title": "x"})
    gone = assert_status(api.delete(f"{RECORDS}/r1"), 200).json()["data"]
    assert since(api, 0, ("_fields", "title")) == [
        {"id": "r1", "last_modified": gone["last_modified"]}
    ]
    assert since(api, 0, ("_fields", "deleted")) == [gone]


def test_since_with_a_client_forced_past_timestamp(api, records):
    put(api, "r1", {})
    list_ts = list_etag(api)
    past = put(api, "past", {"last_modified": 1000})["data"]
    assert past["last_modified"] == 1000
    assert list_etag(api) == list_ts, "a past timestamp leaves the list timestamp"
    assert since(api, list_ts) == [], "so a poller at the list timestamp misses it"
    assert since(api, 999) == [since(api, 0)[0], past] or since(api, 999)[-1] == past
    assert [obj["id"] for obj in since(api, 0)] == ["r1", "past"]
    gone = assert_status(api.delete(f"{RECORDS}/past"), 200).json()["data"]
    assert since(api, list_ts) == [gone]
    again = put(api, "past", {"last_modified": 500})["data"]
    assert [obj["id"] for obj in since(api, 0)] == ["r1", "past"]
    assert since(api, 0)[-1] == again
    assert since(api, 499, ("_sort", "last_modified")) == [again, since(api, 0)[0]]


def test_since_sees_every_write_of_a_busy_list(api, records):
    """Many creations, updates and deletions: the changes since any point are
    exactly the objects and tombstones whose timestamp is after it."""
    rng = random.Random(4)
    stamps, state = [], {}
    for step in range(120):
        oid = f"r{rng.randrange(30)}"
        if oid in state and not state[oid].get("deleted") and rng.random() < 0.3:
            state[oid] = assert_status(api.delete(f"{RECORDS}/{oid}"), 200).json()["data"]
        else:
            response = api.put(f"{RECORDS}/{oid}", json={"data": {"step": step}})
            state[oid] = response.json()["data"]
        stamps.append(state[oid]["last_modified"])
    for cut in (0, stamps[10], stamps[60], stamps[-2], stamps[-1]):
        expected = sorted(
            (obj for obj in state.values() if obj["last_modified"] > cut),
            key=lambda obj: -obj["last_modified"],
        )
        assert since(api, cut) == expected


# -- preconditions on objects --------------------------------------------------


def test_object_get_304_and_412(api, records):
    data = put(api, "r1", {"n": 1})["data"]
    ts = data["last_modified"]
    url = f"{RECORDS}/r1"
    not_modified = assert_status(api.get(url, headers={"If-None-Match": quoted(ts)}), 304)
    assert etag_of(not_modified) == ts and not_modified.content == b""
    assert_status(api.head(url, headers={"If-None-Match": quoted(ts)}), 304)
    assert_status(api.get(url, headers={"If-None-Match": quoted(ts - 1)}), 200)
    assert_412(api.get(url, headers={"If-None-Match": "*"}), existing=data, etag=ts)
    assert_status(api.get(url, headers={"If-Match": quoted(ts)}), 200)
    assert_status(api.get(url, headers={"If-Match": "*"}), 200)
    assert_412(api.get(url, headers={"If-Match": quoted(ts - 1)}), existing=data, etag=ts)
    assert_error(api.get(f"{RECORDS}/nope", headers={"If-Match": quoted(ts)}), 404, 110)


def test_put_preconditions(api, records):
    data = put(api, "r1", {"n": 1})["data"]
    ts = data["last_modified"]
    url = f"{RECORDS}/r1"
    assert_412(
        api.put(url, json={"data": {"n": 2}}, headers={"If-Match": quoted(ts - 1)}),
        existing=data,
        etag=ts,
    )
    assert_412(
        api.put(url, json={"data": {"n": 2}}, headers={"If-None-Match": "*"}),
        existing=data,
        etag=ts,
    )
    assert api.get(url).json()["data"] == data, "a refused write changes nothing"
    replaced = assert_status(
        api.put(url, json={"data": {"n": 2}}, headers={"If-Match": quoted(ts)}), 200
    ).json()["data"]
    assert_status(api.put(url, json={"data": {"n": 3}}, headers={"If-Match": "*"}), 200)
    ignored = api.put(
        url, json={"data": {"n": 4}}, headers={"If-None-Match": quoted(replaced["last_modified"])}
    )
    assert_status(ignored, 200)


def test_put_preconditions_on_a_missing_object(api, records):
    put(api, "r1", {})
    list_ts = list_etag(api)
    url = f"{RECORDS}/new"
    assert_412(api.put(url, json={"data": {}}, headers={"If-Match": quoted(list_ts)}), etag=list_ts)
    assert_412(api.put(url, json={"data": {}}, headers={"If-Match": "*"}), etag=list_ts)
    assert_error(api.get(url), 404, 110)
    assert_status(api.put(url, json={"data": {}}, headers={"If-None-Match": "*"}), 201)


def test_patch_and_delete_preconditions(api, records):
    data = put(api, "r1", {"n": 1})["data"]
    ts = data["last_modified"]
    url = f"{RECORDS}/r1"
    assert_412(
        api.patch(url, json={"data": {"n": 2}}, headers={"If-Match": quoted(ts + 1)}),
        existing=data,
        etag=ts,
    )
    assert_412(api.delete(url, headers={"If-Match": quoted(ts + 1)}), existing=data, etag=ts)
    assert_412(api.delete(url, headers={"If-None-Match": "*"}), existing=data, etag=ts)
    assert_error(
        api.patch(f"{RECORDS}/nope", json={"data": {}}, headers={"If-Match": quoted(ts)}), 404, 110
    )
    assert_error(api.delete(f"{RECORDS}/nope", headers={"If-Match": quoted(ts)}), 404, 110)
    patched = assert_status(
        api.patch(url, json={"data": {"n": 2}}, headers={"If-Match": quoted(ts)}), 200
    ).json()["data"]
    assert_status(api.delete(url, headers={"If-Match": quoted(patched["last_modified"])}), 200)


@pytest.mark.parametrize("value", ["abc", "123", 'W/"123"', '"1", "2"', '"-1"'])
def test_malformed_precondition_is_400(api, records, value):
    for header in ("If-Match", "If-None-Match"):
        body = assert_error(api.get(RECORDS, headers={header: value}), 400, 107)
        assert body["details"] == [
            {
                "location": "header",
                "name": header,
                "description": "The value should be integer between double quotes.",
            }
        ]


# -- preconditions on lists ----------------------------------------------------


def test_list_get_and_head_304_and_412(api, records):
    put(api, "r1", {})
    list_ts = list_etag(api)
    for method in ("GET", "HEAD"):
        response = api.request(method, RECORDS, headers={"If-None-Match": quoted(list_ts)})
        assert_status(response, 304)
        assert etag_of(response) == list_ts
    assert_status(api.get(RECORDS, headers={"If-None-Match": quoted(list_ts - 1)}), 200)
    assert_412(api.get(RECORDS, headers={"If-None-Match": "*"}), etag=list_ts)
    assert_412(api.get(RECORDS, headers={"If-Match": quoted(list_ts - 1)}), etag=list_ts)
    assert_status(api.get(RECORDS, headers={"If-Match": quoted(list_ts)}), 200)
    filtered = api.get(RECORDS, params={"id": "none"}, headers={"If-None-Match": quoted(list_ts)})
    assert_status(filtered, 304), "the list ETag ignores filters"


def test_list_delete_412_deletes_nothing(api, records):
    put(api, "r1", {})
    list_ts = list_etag(api)
    assert_412(api.delete(RECORDS, headers={"If-Match": quoted(list_ts - 1)}), etag=list_ts)
    assert_412(api.delete(RECORDS, headers={"If-None-Match": "*"}), etag=list_ts)
    assert len(assert_status(api.get(RECORDS), 200).json()["data"]) == 1
    deleted = assert_status(api.delete(RECORDS, headers={"If-Match": quoted(list_ts)}), 200)
    assert [d["id"] for d in deleted.json()["data"]] == ["r1"]


def test_post_preconditions_concern_the_posted_id(api, records):
    data = put(api, "r1", {"n": 1})["data"]
    ts = data["last_modified"]
    list_ts = list_etag(api)

    def post(body, **headers):
        return api.post(RECORDS, json={"data": body}, headers=headers)

    same = assert_status(post({"id": "r1", "n": 2}), 200).json()
    assert same["data"] == data, "an existing id returns the object unchanged"
    assert_412(post({"id": "r1"}, **{"If-None-Match": "*"}), existing=data, etag=ts)
    assert_412(post({"id": "r1"}, **{"If-Match": quoted(ts - 1)}), existing=data, etag=ts)
    assert_status(post({"id": "r1"}, **{"If-Match": quoted(ts)}), 200)
    assert_412(post({"id": "r2"}, **{"If-Match": quoted(list_ts)}), etag=list_ts)
    assert_412(post({}, **{"If-Match": "*"}), etag=list_ts)
    assert_status(post({"id": "r2"}, **{"If-None-Match": "*"}), 201)


# -- PATCH variants ------------------------------------------------------------


@pytest.fixture
def article(api, records):
    put(api, "a", {"title": "T", "meta": {"x": 1, "y": {"z": 2}}, "tags": ["a"]})
    return f"{RECORDS}/a"


def patch(api, url, body, content_type="application/json", **headers):
    response = api.patch(
        url, data=json.dumps(body), headers={"Content-Type": content_type, **headers}
    )
    return assert_status(response, 200).json()


def stored_data(api, url):
    data = assert_status(api.get(url), 200).json()["data"]
    return {k: v for k, v in data.items() if k not in ("id", "last_modified")}


def test_plain_patch_replaces_top_level_fields(api, article):
    patch(api, article, {"data": {"meta": {"w": 0}, "title": None}})
    assert stored_data(api, article) == {"title": None, "meta": {"w": 0}, "tags": ["a"]}


def test_merge_patch_merges_deep_and_null_removes(api, article):
    patch(
        api,
        article,
        {"data": {"meta": {"y": {"z": None, "q": 3}}, "tags": None}},
        "application/merge-patch+json",
    )
    assert stored_data(api, article) == {"title": "T", "meta": {"x": 1, "y": {"q": 3}}}


def test_merge_patch_of_permissions(api, article):
    bob = "system.Authenticated"
    body = patch(api, article, {"permissions": {"read": [bob]}}, "application/merge-patch+json")
    assert body["permissions"]["read"] == [bob]
    body = patch(api, article, {"permissions": {"read": None}}, "application/merge-patch+json")
    assert "read" not in body["permissions"]
    assert body["permissions"]["write"], "the editor stays a writer"


def test_json_patch_on_data_and_permissions(api, article):
    operations = [
        {"op": "test", "path": "/data/title", "value": "T"},
        {"op": "replace", "path": "/data/title", "value": "U"},
        {"op": "add", "path": "/data/tags/-", "value": "b"},
        {"op": "remove", "path": "/data/meta/y"},
        {"op": "copy", "from": "/data/title", "path": "/data/copy"},
        {"op": "move", "from": "/data/meta", "path": "/data/moved"},
        {"op": "add", "path": "/permissions/read/system.Everyone"},
    ]
    body = patch(api, article, operations, "application/json-patch+json")
    assert body["permissions"]["read"] == ["system.Everyone"]
    assert stored_data(api, article) == {
        "title": "U",
        "tags": ["a", "b"],
        "copy": "U",
        "moved": {"x": 1},
    }
    body = patch(
        api,
        article,
        [{"op": "remove", "path": "/permissions/read/system.Everyone"}],
        "application/json-patch+json",
    )
    assert "read" not in body["permissions"] or body["permissions"]["read"] == []


def test_json_patch_failure_changes_nothing(api, article):
    before = assert_status(api.get(article), 200).json()
    response = api.patch(
        article,
        data=json.dumps(
            [
                {"op": "replace", "path": "/data/title", "value": "U"},
                {"op": "test", "path": "/data/title", "value": "nope"},
            ]
        ),
        headers={"Content-Type": "application/json-patch+json"},
    )
    body = assert_error(response, 400, 107)
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["description"].startswith("JSON Patch operation failed")
    assert assert_status(api.get(article), 200).json() == before


NEW_TS = "new last_modified"


# light: the applied fields that changed; diff: those whose stored value differs
# from the applied one.  JSON Patch applies the whole document, last_modified too.
@pytest.mark.parametrize(
    "content_type, body, light, diff",
    [
        ("application/json", {"data": {"title": "U", "tags": ["a"]}}, {"title": "U"}, {}),
        ("application/json", {"data": {"new": 1}}, {"new": 1}, {}),
        ("application/json", {"permissions": {"read": ["system.Everyone"]}}, {}, {}),
        (
            "application/json",
            {"data": {"title": "U", "last_modified": 1}},
            {"title": "U", "last_modified": NEW_TS},
            {"last_modified": NEW_TS},
        ),
        ("application/merge-patch+json", {"data": {"meta": {"x": 1}}}, {}, {}),
        (
            "application/merge-patch+json",
            {"data": {"title": "U", "new": {"a": 1}}},
            {"title": "U", "new": {"a": 1}},
            {},
        ),
        # Kinto merges into the object it compares with, so it never reports a merged
        # nested object (and answers 500 to a removal): kintofs reports the change.
        pytest.param(
            "application/merge-patch+json",
            {"data": {"meta": {"x": 5}}},
            {"meta": {"x": 5, "y": {"z": 2}}},
            {"meta": {"x": 5, "y": {"z": 2}}},
            marks=kintofs_only,
        ),
        pytest.param(
            "application/merge-patch+json", {"data": {"tags": None}}, {}, {}, marks=kintofs_only
        ),
        (
            "application/json-patch+json",
            [{"op": "replace", "path": "/data/title", "value": "U"}],
            {"title": "U", "last_modified": NEW_TS},
            {"last_modified": NEW_TS},
        ),
        (
            "application/json-patch+json",
            [{"op": "remove", "path": "/data/tags"}],
            {"last_modified": NEW_TS},
            {"last_modified": NEW_TS},
        ),
        (
            "application/json-patch+json",
            [{"op": "add", "path": "/permissions/read/system.Everyone"}],
            {"last_modified": NEW_TS},
            {"last_modified": NEW_TS},
        ),
    ],
)
def test_response_behavior_light_and_diff(api, article, content_type, body, light, diff):
    for behavior, expected in (("light", light), ("diff", diff)):
        put(api, behavior, {"title": "T", "meta": {"x": 1, "y": {"z": 2}}, "tags": ["a"]})
        url = f"{RECORDS}/{behavior}"
        response = api.patch(
            url,
            data=json.dumps(body),
            headers={"Content-Type": content_type, "Response-Behavior": behavior},
        )
        got = assert_status(response, 200).json()
        new_ts = etag_of(response)
        assert got == {"data": {k: new_ts if v == NEW_TS else v for k, v in expected.items()}}
        assert stored_data(api, url) != {} and etag_of(api.get(url)) == new_ts


def test_response_behavior_full_and_invalid(api, article):
    body = patch(api, article, {"data": {"n": 1}}, **{"Response-Behavior": "full"})
    assert set(body) == {"data", "permissions"}
    assert body["data"]["n"] == 1
    error = assert_error(
        api.patch(article, json={"data": {}}, headers={"Response-Behavior": "foo"}), 400, 107
    )
    assert error["details"] == [
        {
            "location": "header",
            "name": "Response-Behavior",
            "description": '"foo" is not one of full, light, diff',
        }
    ]


# -- pagination while the list is being written to -----------------------------


@kintofs_only
@pytest.mark.parametrize("sort", [None, "title", "-rank"])
def test_pagination_under_concurrent_writes_loses_and_repeats_nothing(api, records, sort):
    """Records present throughout appear exactly once, whatever happens around them."""
    stable = {f"s{i:03d}" for i in range(60)}
    batch = [
        {
            "method": "PUT",
            "path": f"{RECORDS}/{oid}",
            "body": {"data": {"title": f"t{oid}", "rank": i % 7}},
        }
        for i, oid in enumerate(sorted(stable))
    ]
    for start in range(0, len(batch), 25):
        assert_status(api.post("/batch", json={"requests": batch[start : start + 25]}), 200)
    volatile = [f"v{i:03d}" for i in range(20)]
    for oid in volatile:
        put(api, oid, {"title": f"t{oid}", "rank": 3})

    stop = threading.Event()
    writer_api = api.as_user(ALICE)
    writes = []

    def write_around():
        rng = random.Random(7)
        while not stop.is_set():
            oid = rng.choice(volatile)
            action = rng.choice(["create", "update", "delete"])
            if action == "create":
                new_id = f"n{len(writes):04d}"
                writer_api.put(
                    f"{RECORDS}/{new_id}",
                    json={"data": {"title": f"t{rng.random()}", "rank": rng.randrange(7)}},
                )
            elif action == "update":
                writer_api.patch(f"{RECORDS}/{oid}", json={"data": {"other": rng.random()}})
            else:
                writer_api.delete(f"{RECORDS}/{oid}")
            writes.append(action)

    thread = threading.Thread(target=write_around)
    thread.start()
    try:
        seen = []
        params = {"_limit": "7", **({"_sort": sort} if sort else {})}
        response = assert_status(api.get(RECORDS, params=params), 200)
        seen += [obj["id"] for obj in response.json()["data"]]
        while "Next-Page" in response.headers:
            # At least one write between two pages, however busy the machine.
            written, deadline = len(writes), time.monotonic() + 10
            while len(writes) == written and time.monotonic() < deadline:
                time.sleep(0.005)
            response = assert_status(api.get(response.headers["Next-Page"]), 200)
            seen += [obj["id"] for obj in response.json()["data"]]
    finally:
        stop.set()
        thread.join()
    assert len(writes) > 10, "the writer really ran during the walk"
    assert len(seen) == len(set(seen)), "no record repeated"
    assert stable <= set(seen), "no stable record lost"


# -- the real kinto-http client --------------------------------------------------
# kinto-http makes its own requests sessions, so these tests talk to a daemon.


def make_client(api, auth):
    return kinto_http.Client(
        server_url=api.daemon.url, auth=auth, bucket="b", collection="c", timeout=30
    )


class Replica:
    """A client's local copy of a collection, kept current with `_since` polls."""

    def __init__(self, client):
        self.client = client
        self.records = {}
        self.cursor = None

    def pull(self):
        kwargs = {"_since": self.cursor} if self.cursor is not None else {}
        changes = self.client.get_records(**kwargs)
        for change in changes:
            if change.get("deleted"):
                self.records.pop(change["id"], None)
            else:
                self.records[change["id"]] = change
        self.cursor = self.client.get_records_timestamp()
        return changes


@pytest.mark.daemon
def test_two_kinto_http_clients_sync_with_since_and_conflicts(api, records):
    collection_acl = {"read": ["system.Authenticated"], "write": ["system.Authenticated"]}
    assert_status(api.patch("/buckets/b/collections/c", json={"permissions": collection_acl}), 200)
    alice, bob = Replica(make_client(api, ALICE)), Replica(make_client(api, BOB))
    assert alice.pull() == [] and bob.pull() == []

    for i in range(5):
        alice.client.create_record(id=f"r{i}", data={"n": i})
    assert len(bob.pull()) == 5
    assert sorted(bob.records) == [f"r{i}" for i in range(5)]
    assert len(alice.pull()) == 5

    # Bob edits r1 and deletes r2; Alice only receives those two changes.
    bob.client.update_record(id="r1", data={"n": 10})
    bob.client.delete_record(id="r2")
    changes = alice.pull()
    assert [change["id"] for change in changes] == ["r2", "r1"]
    assert changes[0]["deleted"] is True
    assert alice.pull() == [], "nothing new since the last poll"
    assert alice.records["r1"]["n"] == 10 and "r2" not in alice.records
    bob.pull()
    assert alice.records == bob.records

    # Both edit r3 from the same version: the second write is rejected with 412.
    version = alice.records["r3"]["last_modified"]
    alice.client.update_record(id="r3", data={"n": "alice"}, if_match=version)
    with pytest.raises(KintoException) as info:
        bob.client.update_record(id="r3", data={"n": "bob"}, if_match=version)
    assert info.value.response.status_code == 412
    existing = info.value.response.json()["details"]["existing"]
    assert existing["n"] == "alice", "the 412 carries the winning version"
    bob.pull()
    assert bob.records["r3"]["n"] == "alice"
    with pytest.raises(KintoException) as info:
        bob.client.delete_record(id="r4", if_match=version)
    assert info.value.response.status_code == 412

    # Safe creation: a record created by both with if_not_exists is created once.
    alice.client.create_record(id="new", data={"by": "alice"}, if_not_exists=True)
    bob.client.create_record(id="new", data={"by": "bob"}, if_not_exists=True)
    bob.pull()
    assert bob.records["new"]["by"] == "alice"
    assert alice.pull()[0]["id"] == "new"
    assert alice.records == bob.records


@pytest.mark.daemon
def test_kinto_http_pages_through_since_changes(api, records):
    client = make_client(api, ALICE)
    requests_batch = [
        {"method": "PUT", "path": f"{RECORDS}/r{i:03d}", "body": {"data": {"i": i}}}
        for i in range(60)
    ]
    for start in range(0, 60, 25):
        assert_status(
            api.post("/batch", json={"requests": requests_batch[start : start + 25]}), 200
        )
    cursor = client.get_records_timestamp()
    for i in range(0, 60, 3):
        client.delete_record(id=f"r{i:03d}")
    changes = client.get_records(_since=cursor, _limit=7, pages=float("inf"))
    assert len(changes) == 20
    assert all(change["deleted"] for change in changes)
    assert len(client.get_records(_limit=7, pages=float("inf"))) == 40
    pages = list(client.get_paginated_records(_since=cursor, _limit=7))
    assert [len(page["data"]) for page in pages] == [7, 7, 6]

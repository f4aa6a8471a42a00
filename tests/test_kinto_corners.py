"""Protocol corners where kintofs once answered otherwise than Kinto 26.5.

Every expectation was first asked of a real Kinto 26.5.0 (memory backend,
flush, history and accounts plugins, ``account`` then ``basicauth``).  Run
this file against one with ``KINTOFS_REFERENCE_URL=http://127.0.0.1:PORT/v1``
(see conftest; its ``userid_hmac_secret`` must be conftest's ``SECRET``).
"""

import json

import pytest
from conftest import (
    BOB,
    REFERENCE_URL,
    Remote,
    assert_error,
    assert_status,
    flush,
    header_set,
    make_server,
)

ORIGIN = {"Origin": "http://example.com"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
BASE_EXPOSED = {"Backoff", "Retry-After", "Alert", "Content-Length", "Content-Type"}
OBJECT_READ_EXPOSED = BASE_EXPOSED | {"ETag", "Last-Modified", "Cache-Control", "Expires", "Pragma"}
LIST_EXPOSED = OBJECT_READ_EXPOSED | {"Next-Page"}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    if REFERENCE_URL:
        yield Remote(REFERENCE_URL)
        return
    server = make_server(
        tmp_path_factory.mktemp("corners") / "data",
        plugins="flush history accounts",
        auth_policies="account basicauth",
        account_create_principals="system.Everyone",
    )
    yield server
    server.stop()


@pytest.fixture
def api(target):
    """Alice, who owns bucket ``b`` (with collection ``c`` and group ``g``)."""
    api = flush(target)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    assert_status(api.put("/buckets/b/groups/g", json={"data": {"members": []}}), 201)
    return api


def assert_missing(response, kind, object_id):
    body = assert_error(response, 404, 111)
    assert body["details"] == {"id": object_id, "resource_name": kind}, body


# -- 1. an id no object can have, in a parent position --------------------------

# Kinto authorizes reads first: who holds a grant in a bucket may list it.
READS_UNDER_BAD_PARENT = [
    ("GET", "/buckets/*/collections", "bucket", "*"),
    ("GET", "/buckets/%2A/collections/x/records", "bucket", "*"),
    ("GET", "/buckets/*/groups", "bucket", "*"),
    ("DELETE", "/buckets/*/collections", "bucket", "*"),
    ("GET", "/buckets/*/history", "bucket", "*"),
    ("GET", "/buckets/b/collections/*/records", "collection", "*"),
    ("DELETE", "/buckets/b/collections/*/records", "collection", "*"),
    ("GET", "/buckets/b/collections/*/records/r", "collection", "*"),
    ("GET", "/buckets/*/collections/*/records", "bucket", "*"),
]


@pytest.mark.parametrize("method,path,kind,object_id", READS_UNDER_BAD_PARENT)
def test_read_under_bad_parent_authorizes_then_answers_404(api, method, path, kind, object_id):
    assert_missing(api.request(method, path), kind, object_id)
    assert_error(api.as_user(None).request(method, path), 401, 104)


# Kinto loads the target of a write before it authorizes: 404 for anyone.
WRITES_UNDER_BAD_PARENT = [
    ("POST", "/buckets/*/collections", "bucket", "*"),
    ("PUT", "/buckets/*/collections/x", "bucket", "*"),
    ("PATCH", "/buckets/*/collections/x", "bucket", "*"),
    ("DELETE", "/buckets/*/groups/x", "bucket", "*"),
    ("PUT", "/buckets/*/groups/g", "bucket", "*"),
    ("POST", "/buckets/*/collections/x/records", "bucket", "*"),
    ("POST", "/buckets/b/collections/*/records", "collection", "*"),
    ("PUT", "/buckets/b!/collections/c/records/r", "bucket", "b!"),
]


@pytest.mark.parametrize("method,path,kind,object_id", WRITES_UNDER_BAD_PARENT)
def test_write_under_bad_parent_answers_404_to_anyone(api, method, path, kind, object_id):
    body = {"data": {}}
    for who in (api, api.as_user(None), api.as_user(BOB)):
        assert_missing(who.request(method, path, json=body), kind, object_id)
    assert [b["id"] for b in assert_status(api.get("/buckets"), 200).json()["data"]] == ["b"]


def test_object_read_with_bad_bucket_id_is_denied(api):
    # Nobody holds a grant on a bucket named "*": denied before any 404.
    assert_error(api.get("/buckets/*/collections/x"), 403, 121)
    assert_error(api.get("/buckets/*/groups/g"), 403, 121)
    assert_error(api.as_user(None).get("/buckets/*/collections/x"), 401, 104)


def test_read_under_bad_parent_denied_to_who_holds_nothing(api):
    assert_error(api.as_user(BOB).get("/buckets/*/collections/x/records"), 403, 121)
    assert_error(api.as_user(BOB).get("/buckets/b/collections/*/records"), 403, 121)
    assert_error(api.as_user(BOB).delete("/buckets/*/collections"), 403, 121)
    # A bad id without "*" matches nothing, even for a bucket owner.
    assert_error(api.get("/buckets/b!/collections"), 403, 121)
    # Below a missing bucket, the bad collection id is not reached.
    assert_error(api.get("/buckets/nope/collections/*/records"), 403, 121)


def test_a_star_in_a_parent_id_matches_what_the_caller_may_read(api):
    """Kinto's shared-objects lookup takes each ``*`` for one or more characters."""
    # "b" is neither "be" nor "b" followed by more.
    assert_error(api.get("/buckets/be*/groups"), 403, 121)
    assert_error(api.get("/buckets/b*/groups"), 403, 121)
    assert_status(api.put("/buckets/bee"), 201)
    assert_missing(api.get("/buckets/be*/groups"), "bucket", "be*")
    assert_missing(api.get("/buckets/b*/groups"), "bucket", "b*")
    # Bob reads everything of bucket "pub": "*" finds it for him, and for anyone.
    assert_error(api.as_user(BOB).get("/buckets/*/collections"), 403, 121)
    permissions = {"read": ["system.Everyone"]}
    assert_status(api.put("/buckets/pub", json={"permissions": permissions}), 201)
    assert_missing(api.as_user(BOB).get("/buckets/*/collections"), "bucket", "*")
    assert_missing(api.as_user(None).get("/buckets/p*/collections"), "bucket", "p*")
    assert_error(api.as_user(None).get("/buckets/b*/groups"), 401, 104)


def test_head_under_bad_parent(api):
    response = assert_status(api.head("/buckets/*/collections"), 404)
    assert response.content == b""
    assert_status(api.as_user(None).head("/buckets/*/collections"), 401)


def test_method_not_allowed_comes_before_the_bad_parent(api):
    assert_error(api.patch("/buckets/*/collections", json={}), 405, 115)


# -- 2. a URL that is not UTF-8 -------------------------------------------------

INVALID_PATH = {
    "code": 400,
    "errno": 107,
    "error": "Bad Request",
    "message": "Invalid URL path.",
}


@pytest.mark.parametrize(
    "path", ["/%82%AC", "/buckets/%82", "/buckets/b/collections/%FF/records", "/buckets/%82/"]
)
def test_path_not_utf8(api, path):
    for who in (api, api.as_user(None)):
        response = assert_status(who.get(path), 400)
        assert response.json() == INVALID_PATH


def test_path_not_utf8_outside_the_version_prefix(api):
    for path in ("/%82", "/v2/%82"):
        response = api.get(api.daemon.root_url + path)
        assert assert_status(response, 400).json() == INVALID_PATH


def test_path_is_checked_before_the_querystring(api):
    assert assert_status(api.get("/%82?%82=1"), 400).json() == INVALID_PATH


@pytest.mark.parametrize("query", ["%82=1", "a=%82", "%C3=1"])
def test_querystring_not_utf8(api, query):
    message = (
        "A request with an incorrect encoding in the querystring wasreceived. "
        f"Please make sure your requests are encoded in UTF-8: {query}"
    )
    for method, path in (("GET", "/buckets"), ("POST", "/buckets"), ("GET", "/__heartbeat__")):
        response = api.as_user(None).request(method, f"{path}?{query}", json={"data": {}})
        body = assert_error(response, 400, 107, message)
        assert body["error"] == "Bad Request"
    assert [b["id"] for b in assert_status(api.get("/buckets"), 200).json()["data"]] == ["b"]


def test_utf8_url_still_routes(api):
    assert_error(api.get("/buckets/%C3%A9"), 403, 121)
    assert_status(api.get("/buckets?a=%C3%A9"), 200)


# -- 3. contribute.json ---------------------------------------------------------


def test_contribute_json(api):
    response = assert_status(api.as_user(None).get("/contribute.json"), 200)
    assert response.headers["Content-Type"] == "application/json"
    info = response.json()
    assert {"name", "description", "repository", "participate", "bugs", "keywords"} <= set(info)
    assert {"url", "license", "tests"} <= set(info["repository"])
    assert {"home", "docs"} <= set(info["participate"])
    assert set(info["bugs"]) == {"list", "report"}
    assert all(isinstance(word, str) for word in info["keywords"])
    assert "Apache" in info["repository"]["license"]
    assert assert_status(api.head("/contribute.json"), 200).content == b""
    assert_error(api.post("/contribute.json", json={}), 405, 115)


# -- 4. the heartbeat's keys ----------------------------------------------------


def test_heartbeat_reports_storage_permission_and_cache(api):
    beat = assert_status(api.as_user(None).get("/__heartbeat__"), 200).json()
    assert beat["storage"] is True
    assert beat["permission"] is True
    assert beat["cache"] is True


# -- 5. a group written without data ------------------------------------------


def test_group_put_with_only_permissions_gets_no_members(api):
    permissions = {"read": ["system.Everyone"]}
    created = assert_status(api.put("/buckets/b/groups/g1", json={"permissions": permissions}), 201)
    assert set(created.json()["data"]) == {"id", "last_modified"}
    assert set(api.get("/buckets/b/groups/g1").json()["data"]) == {"id", "last_modified"}
    # Replaced without data, it keeps its data as it is: still no members.
    replaced = api.put("/buckets/b/groups/g1", json={"permissions": {"read": [BOB[0]]}})
    assert set(assert_status(replaced, 200).json()["data"]) == {"id", "last_modified"}
    assert set(assert_status(api.put("/buckets/b/groups/g2"), 201).json()["data"]) == {
        "id",
        "last_modified",
    }


def test_group_post_with_only_permissions_gets_no_members(api):
    permissions = {"read": ["system.Everyone"]}
    created = assert_status(api.post("/buckets/b/groups", json={"permissions": permissions}), 201)
    assert set(created.json()["data"]) == {"id", "last_modified"}


def test_group_written_with_data_gets_members(api):
    created = assert_status(api.put("/buckets/b/groups/g1", json={"data": {}}), 201)
    assert created.json()["data"]["members"] == []
    posted = api.post("/buckets/b/groups", json={"data": {"id": "g2"}, "permissions": {}})
    assert assert_status(posted, 201).json()["data"]["members"] == []
    # Any PATCH gives Kinto's default to a group that had none.
    assert_status(api.put("/buckets/b/groups/g3"), 201)
    patched = api.patch("/buckets/b/groups/g3", json={"permissions": {"read": [BOB[0]]}})
    assert assert_status(patched, 200).json()["data"]["members"] == []


# -- 6. JSON Patch between permissions and data -------------------------------


def put_shared_record(api):
    body = {"data": {"a": 1, "old": "x"}, "permissions": {"read": ["alice", "bob"]}}
    assert_status(api.put("/buckets/b/collections/c/records/r", json=body), 201)


def json_patch(api, operations):
    return api.patch(
        "/buckets/b/collections/c/records/r", data=json.dumps(operations), headers=JSON_PATCH
    )


@pytest.mark.parametrize("op,left", [("move", ["bob"]), ("copy", ["alice", "bob"])])
def test_json_patch_takes_a_principal_into_data(api, op, left):
    put_shared_record(api)
    operations = [{"op": op, "from": "/permissions/read/alice", "path": "/data/old"}]
    result = assert_status(json_patch(api, operations), 200).json()
    assert result["data"]["old"] == "alice"
    assert result["data"]["a"] == 1
    assert sorted(result["permissions"]["read"]) == left
    stored = api.get("/buckets/b/collections/c/records/r").json()
    assert stored["data"]["old"] == "alice"
    assert sorted(stored["permissions"]["read"]) == left


def test_json_patch_takes_data_into_permissions(api):
    put_shared_record(api)
    operations = [{"op": "move", "from": "/data/a", "path": "/permissions/read/zed"}]
    result = assert_status(json_patch(api, operations), 200).json()
    assert "a" not in result["data"]
    assert sorted(result["permissions"]["read"]) == ["alice", "bob", "zed"]


def test_json_patch_moves_a_whole_permission_as_a_mapping(api):
    put_shared_record(api)
    operations = [{"op": "copy", "from": "/permissions/read", "path": "/data/readers"}]
    result = assert_status(json_patch(api, operations), 200).json()
    assert result["data"]["readers"] == {"alice": "alice", "bob": "bob"}


def test_json_patch_permission_member_value_is_the_principal(api):
    put_shared_record(api)
    # Kinto puts the principal in place of any value: every such test passes.
    for value in ("alice", True, "someone else"):
        operations = [{"op": "test", "path": "/permissions/read/alice", "value": value}]
        assert_status(json_patch(api, operations), 200)
    operations = [{"op": "test", "path": "/data/old", "value": True}]
    assert_error(json_patch(api, operations), 400, 107)


def test_json_patch_from_a_missing_principal(api):
    put_shared_record(api)
    operations = [{"op": "copy", "from": "/permissions/read/nobody", "path": "/data/old"}]
    assert_error(
        json_patch(api, operations), 400, 107, "body: JSON Patch operation failed: 'nobody'"
    )
    assert api.get("/buckets/b/collections/c/records/r").json()["data"]["old"] == "x"


# -- 7. Access-Control-Expose-Headers -------------------------------------------


def test_utility_and_unknown_urls_expose_kintos_base_headers(api):
    for response in (
        api.get("/", headers=ORIGIN),
        api.as_user(None).get("/", headers=ORIGIN),
        api.get("/nowhere", headers=ORIGIN),
        api.get("/buckets/b/nowhere", headers=ORIGIN),
        api.get("/__heartbeat__", headers=ORIGIN),
        api.get("/__lbheartbeat__", headers=ORIGIN),
        api.get("/contribute.json", headers=ORIGIN),
        api.get("/%82", headers=ORIGIN),
        api.post("/batch", json={"requests": [{"path": "/buckets"}]}, headers=ORIGIN),
        api.get("/buckets/b/", headers=ORIGIN),
    ):
        assert response.status_code in (200, 307, 400, 404), response.url
        assert header_set(response, "Access-Control-Expose-Headers") == BASE_EXPOSED, response.url
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_resource_responses_expose_at_least_kintos_headers(api):
    # kintofs exposes more on resources (README, "Differences from Kinto").
    for response, expected in (
        (api.get("/buckets", headers=ORIGIN), LIST_EXPOSED),
        (api.get("/buckets/b/collections/c/records", headers=ORIGIN), LIST_EXPOSED),
        (api.get("/buckets/b/history", headers=ORIGIN), LIST_EXPOSED),
        (api.get("/buckets/b", headers=ORIGIN), OBJECT_READ_EXPOSED),
        (api.get("/buckets/zz", headers=ORIGIN), OBJECT_READ_EXPOSED),
        (api.as_user(None).get("/buckets/b", headers=ORIGIN), OBJECT_READ_EXPOSED),
        (api.get("/buckets/b/collections/c/records/nope", headers=ORIGIN), OBJECT_READ_EXPOSED),
        (api.get("/buckets?_limit=x", headers=ORIGIN), LIST_EXPOSED),
        (api.put("/buckets/b/collections/c/records/r", json={}, headers=ORIGIN), BASE_EXPOSED),
    ):
        assert response.status_code in (200, 201, 400, 401, 403, 404), response.url
        assert expected <= header_set(response, "Access-Control-Expose-Headers"), response.url

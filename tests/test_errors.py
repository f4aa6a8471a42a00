"""Kinto's JSON error bodies (protocol sections 4, 7, 11) and hostile ids.

Every error is ``{"code", "errno", "error", "message"?, "details"?}`` with
``Content-Type: application/json``.  Hostile ids must be refused with a
400/404 and must never reach the disk: nothing is written outside the data
directory, and no file inside it is named after them.
"""

import http.client
import json
import os

import pytest
from conftest import ALICE, BOB, assert_error, assert_status, basic_auth, file_tree

RECORDS = "/buckets/b/collections/c/records"
RECORD = RECORDS + "/r1"
MARKER = "evil"


@pytest.fixture
def tree(api):
    """Bucket b, group g, collection c, record r1 (alice owns them all)."""
    for path in ("/buckets/b", "/buckets/b/groups/g", "/buckets/b/collections/c", RECORD):
        assert_status(api.put(path, json={"data": {"title": "ok"}}), 201)
    return api


def send(api, method, path, body, content_type="application/json", **headers):
    """A request whose body is sent verbatim (str or bytes)."""
    if content_type is not None:
        headers["Content-Type"] = content_type
    return api.request(method, path, data=body, headers=headers)


def only_detail(body):
    assert len(body["details"]) == 1, body
    return body["details"][0]


def invalid(response, status=400):
    """A validation error: errno 107, error "Invalid parameters", details a list."""
    body = assert_error(response, status, 107)
    assert body["error"] == "Invalid parameters"
    assert isinstance(body["details"], list) and body["details"], body
    for detail in body["details"]:
        assert set(detail) == {"location", "name", "description"}, detail
    return body


# -- bodies -------------------------------------------------------------------


def test_invalid_json(tree):
    body = invalid(send(tree, "PUT", RECORD, '{"data": {'))
    assert body["message"].startswith("Invalid JSON")
    assert {"location": "body", "name": "", "description": "Required"} in body["details"]


@pytest.mark.parametrize("escape", [r"\ud800", r"\uDFFF", r"x\udc00y", r"\ud83d", r"\ude00\ud83d"])
def test_a_lone_surrogate_is_invalid_json(tree, escape):
    # Python decodes it, UTF-8 cannot store it: refused, in any case of hex digits.
    body = invalid(send(tree, "PUT", RECORD, '{"data": {"a": "' + escape + '"}}'))
    assert "surrogate" in body["message"]


def test_a_surrogate_pair_is_a_character(tree):
    response = send(tree, "PUT", RECORD, r'{"data": {"a": "\ud83d\ude00", "b": "\\ud800"}}')
    assert response.status_code in (200, 201), response.text
    assert response.json()["data"]["a"] == "\U0001f600"
    assert response.json()["data"]["b"] == "\\ud800"


@pytest.mark.parametrize("raw", ['"x"', "null", "12", "true"])
def test_json_scalar_body(tree, raw):
    body = invalid(send(tree, "PUT", RECORD, raw))
    assert body["message"] == "Should be a JSON object or an array"


@pytest.mark.parametrize("method, path", [("PUT", RECORD), ("POST", RECORDS), ("PATCH", RECORD)])
def test_array_body_where_an_object_is_expected(tree, method, path):
    body = invalid(send(tree, method, path, "[]"))
    assert (
        body["message"] == '"[]" is not a mapping type: Does not implement dict-like functionality.'
    )


@pytest.mark.parametrize("method, path", [("PUT", RECORD), ("POST", RECORDS), ("PATCH", RECORD)])
def test_unknown_top_level_key(tree, method, path):
    body = invalid(tree.request(method, path, json={"data": {}, "foo": 1}))
    assert only_detail(body) == {
        "location": "body",
        "name": "",
        "description": "Unrecognized keys in mapping: \"{'foo': 1}\"",
    }
    assert body["message"] == "Unrecognized keys in mapping: \"{'foo': 1}\""


@pytest.mark.parametrize("data", ["str", None, [1], 3])
def test_data_must_be_an_object(tree, data):
    body = invalid(tree.put(RECORD, json={"data": data}))
    assert only_detail(body)["name"] == "data"
    assert "is not a mapping type" in only_detail(body)["description"]


def test_unknown_permission_name(tree):
    body = invalid(tree.put(RECORD, json={"permissions": {"foo": ["x"]}}))
    assert only_detail(body) == {
        "location": "body",
        "name": "permissions",
        "description": '"foo" is not one of read, write',
    }
    body = invalid(tree.put("/buckets/b/collections/c", json={"permissions": {"foo": []}}))
    assert only_detail(body)["description"] == '"foo" is not one of read, write, record:create'


def test_permission_value_must_be_a_list(tree):
    body = invalid(tree.put(RECORD, json={"permissions": {"read": "x"}}))
    assert only_detail(body) == {
        "location": "body",
        "name": "permissions.read",
        "description": '"x" is not iterable',
    }


def test_nothing_is_written_on_a_bad_body(tree):
    before = tree.get(RECORD).json()
    for raw in ('{"data": {', "[]", '{"data": {}, "x": 1}', '{"data": "s"}'):
        assert_status(send(tree, "PUT", RECORD, raw), 400)
    assert tree.get(RECORD).json() == before


# -- PATCH without data or permissions ----------------------------------------


@pytest.mark.parametrize("raw", ["", "{}"])
def test_patch_needs_data_or_permissions(tree, raw):
    body = invalid(send(tree, "PATCH", RECORD, raw))
    assert only_detail(body) == {
        "location": "body",
        "name": "data",
        "description": "Provide at least one of data or permissions",
    }
    assert body["message"] == "Provide at least one of data or permissions"


def test_patch_with_empty_data_is_fine(tree):
    assert_status(tree.patch(RECORD, json={"data": {}}), 200)


# -- data.id ------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path", [("PUT", RECORD), ("PUT", RECORDS + "/new"), ("PATCH", RECORD)]
)
def test_body_id_must_match_url(tree, method, path):
    body = invalid(tree.request(method, path, json={"data": {"id": "other"}}))
    assert only_detail(body) == {
        "location": "body",
        "name": "id",
        "description": "Object id does not match existing object",
    }
    assert body["message"] == "Object id does not match existing object"
    assert_status(tree.get(RECORDS + "/new"), 404)


def test_json_patch_cannot_change_the_id(tree):
    response = send(
        tree,
        "PATCH",
        RECORD,
        json.dumps([{"op": "replace", "path": "/data/id", "value": "other"}]),
        content_type="application/json-patch+json",
    )
    assert (
        only_detail(invalid(response))["description"] == "Object id does not match existing object"
    )


@pytest.mark.parametrize("posted_id", [12, None, "", "in.valid", "a/b"])
def test_posted_id_must_be_valid(tree, posted_id):
    body = invalid(tree.post(RECORDS, json={"data": {"id": posted_id}}))
    assert only_detail(body) == {
        "location": "path",
        "name": None,
        "description": "Invalid object id",
    }
    assert body["message"] == "path: Invalid object id"


def test_posted_invalid_id_is_checked_before_authorization(tree):
    invalid(tree.as_user(None).post(RECORDS, json={"data": {"id": "in.valid"}}))


# -- content negotiation ------------------------------------------------------


@pytest.mark.parametrize("method, path", [("PUT", RECORD), ("POST", RECORDS)])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/merge-patch+json"],
)
def test_wrong_content_type_is_415(tree, method, path, content_type):
    body = invalid(send(tree, method, path, '{"data": {}}', content_type), 415)
    assert only_detail(body) == {
        "location": "header",
        "name": "Content-Type",
        "description": "Content-Type header should be one of ['application/json']",
    }


def test_patch_wrong_content_type_lists_the_three_types(tree):
    body = invalid(send(tree, "PATCH", RECORD, '{"data": {}}', "text/plain"), 415)
    description = only_detail(body)["description"]
    for media in (
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
    ):
        assert media in description


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8"])
def test_json_content_types_that_are_accepted(tree, content_type):
    response = send(tree, "PUT", RECORDS + "/r2", '{"data": {"n": 1}}', content_type)
    assert assert_status(response, 201).json()["data"]["n"] == 1


def test_415_comes_before_authentication(tree):
    response = send(tree.as_user(None), "PUT", RECORD, '{"data": {}}', "text/plain")
    invalid(response, 415)


@pytest.mark.parametrize("path", [RECORD, RECORDS, "/buckets/b/collections/c/records/nope"])
def test_accept_html_is_406(tree, path):
    body = invalid(tree.get(path, headers={"Accept": "text/html"}), 406)
    assert only_detail(body) == {
        "location": "header",
        "name": "Accept",
        "description": "Accept header should be one of ['application/json']",
    }


def test_406_comes_before_authentication(tree):
    invalid(tree.as_user(None).get(RECORD, headers={"Accept": "text/html"}), 406)


@pytest.mark.parametrize(
    "accept", ["*/*", "application/json", "application/*", "text/html, application/json;q=0.5"]
)
def test_accept_headers_that_are_fine(tree, accept):
    assert_status(tree.get(RECORD, headers={"Accept": accept}), 200)


# -- preconditions ------------------------------------------------------------


def current_ts(api, path=RECORD):
    return int(assert_status(api.get(path), 200).headers["ETag"].strip('"'))


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ["bad", "123", '"abc"', 'W/"1"', '"1", "2"', '"-1"', '""'])
def test_precondition_header_syntax(tree, header, value):
    body = invalid(tree.get(RECORD, headers={header: value}))
    assert only_detail(body) == {
        "location": "header",
        "name": header,
        "description": "The value should be integer between double quotes.",
    }
    assert (
        body["message"] == f"{header} in header: The value should be integer between double quotes."
    )


def precondition_failed(response):
    body = assert_error(response, 412, 114, "Resource was modified meanwhile")
    assert body["error"] == "Precondition Failed"
    return body


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("PUT", {"json": {"data": {"title": "new"}}}),
        ("PATCH", {"json": {"data": {"title": "new"}}}),
        ("DELETE", {}),
        ("GET", {}),
    ],
)
def test_if_match_stale_is_412_with_the_current_object(tree, method, kwargs):
    current = tree.get(RECORD).json()["data"]
    response = tree.request(method, RECORD, headers={"If-Match": '"1"'}, **kwargs)
    body = precondition_failed(response)
    assert body["details"] == {"existing": current}
    assert response.headers["ETag"] == f'"{current["last_modified"]}"'
    assert tree.get(RECORD).json()["data"] == current, "nothing changed"


def test_if_match_current_succeeds(tree):
    ts = current_ts(tree)
    response = tree.put(RECORD, json={"data": {"title": "new"}}, headers={"If-Match": f'"{ts}"'})
    assert assert_status(response, 200).json()["data"]["title"] == "new"


def test_if_match_on_a_list(tree):
    list_ts = current_ts(tree, RECORDS)
    body = precondition_failed(tree.get(RECORDS, headers={"If-Match": '"1"'}))
    assert "details" not in body
    precondition_failed(tree.delete(RECORDS, headers={"If-Match": '"1"'}))
    assert_status(tree.get(RECORDS, headers={"If-Match": f'"{list_ts}"'}), 200)
    assert_status(tree.get(RECORD), 200)


def test_if_match_on_a_missing_object(tree):
    body = precondition_failed(
        tree.put(RECORDS + "/nope", json={"data": {}}, headers={"If-Match": "*"})
    )
    assert "details" not in body
    assert_status(tree.get(RECORDS + "/nope"), 404)
    assert_error(
        tree.patch(RECORDS + "/nope", json={"data": {}}, headers={"If-Match": '"1"'}), 404, 110
    )


def test_if_none_match_star(tree):
    current = tree.get(RECORD).json()["data"]
    for response in (
        tree.put(RECORD, json={"data": {}}, headers={"If-None-Match": "*"}),
        tree.get(RECORD, headers={"If-None-Match": "*"}),
        tree.post(RECORDS, json={"data": {"id": "r1"}}, headers={"If-None-Match": "*"}),
    ):
        assert precondition_failed(response)["details"] == {"existing": current}
    assert "details" not in precondition_failed(tree.get(RECORDS, headers={"If-None-Match": "*"}))

    created = tree.put(RECORDS + "/r2", json={"data": {}}, headers={"If-None-Match": "*"})
    assert_status(created, 201)


def test_if_none_match_star_without_create_permission_is_403(tree):
    tree.put("/buckets/b", json={"permissions": {"read": ["system.Authenticated"]}})
    response = tree.as_user(BOB).put(RECORD, json={"data": {}}, headers={"If-None-Match": "*"})
    assert_error(response, 403, 121)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", [RECORD, RECORDS])
def test_if_none_match_current_is_304(tree, method, path):
    ts = current_ts(tree, path)
    response = tree.request(method, path, headers={"If-None-Match": f'"{ts}"'})
    assert_status(response, 304)
    assert response.content == b""
    assert response.headers["ETag"] == f'"{ts}"'

    response = tree.request(method, path, headers={"If-None-Match": f'"{ts - 1}"'})
    assert_status(response, 200)


def test_304_needs_authorization_first(tree):
    ts = current_ts(tree)
    assert_error(tree.as_user(None).get(RECORD, headers={"If-None-Match": f'"{ts}"'}), 401, 104)


def test_if_none_match_value_is_ignored_on_writes(tree):
    ts = current_ts(tree)
    response = tree.put(RECORD, json={"data": {"v": 2}}, headers={"If-None-Match": f'"{ts}"'})
    assert assert_status(response, 200).json()["data"]["v"] == 2


# -- 401, 403, 404, 405 -------------------------------------------------------


def test_401_and_403_bodies(tree):
    response = tree.as_user(None).get("/buckets/b")
    assert_error(response, 401, 104, "Please authenticate yourself to use this endpoint.")
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="Realm"')
    assert_error(
        tree.as_user(BOB).get("/buckets/b"), 403, 121, "This user cannot access this resource."
    )


def test_404_bodies(tree):
    body = assert_error(tree.get(RECORDS + "/nope"), 404, 110)
    assert body == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "nope", "resource_name": "record"},
    }
    body = assert_error(tree.get("/buckets/b/collections/nope/records"), 404, 111)
    assert body["details"] == {"id": "nope", "resource_name": "collection"}


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("POST", RECORD, "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"),
        ("PUT", RECORDS, "HEAD, GET, POST, DELETE, OPTIONS"),
        ("PATCH", "/buckets", "HEAD, GET, POST, DELETE, OPTIONS"),
        ("TRACE", "/buckets/b", "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"),
        ("FOO", RECORD, "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"),
    ],
)
def test_405_with_allow_header(tree, method, path, allow):
    response = tree.request(method, path, json={"data": {}})
    assert_error(response, 405, 115, "Method not allowed on this endpoint.")
    assert response.headers["Allow"] == allow


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("DELETE", "/", {"GET", "HEAD"}),
        ("GET", "/batch", {"POST"}),
        ("GET", "/__flush__", {"POST"}),
        ("POST", "/__heartbeat__", {"GET", "HEAD"}),
    ],
)
def test_405_on_utility_endpoints(tree, method, path, allowed):
    response = tree.request(method, path)
    assert_error(response, 405, 115, "Method not allowed on this endpoint.")
    allow = {name.strip() for name in response.headers["Allow"].split(",")}
    assert allowed <= allow and method not in allow


def test_405_comes_before_authentication(tree):
    assert_error(tree.as_user(None).post(RECORD, json={"data": {}}), 405, 115)


# -- 413 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A daemon, not the in-process app: beyond max_request_body_bytes the
    request gate hands the app the head alone, and refuses an oversized
    chunked body itself; these tests cover that path end to end."""
    from conftest import Daemon

    daemon = Daemon(tmp_path_factory.mktemp("small") / "data", max_request_body_bytes=1000)
    yield daemon
    daemon.process.kill()  # kintofs ignores SIGTERM for now (see test_concurrency.py)
    daemon.stop()


def test_body_too_large_is_413(small_server):
    from conftest import Api

    api = Api(small_server)
    assert_status(api.put("/buckets/b", json={"data": {"pad": "x" * 900}}), 201)

    for size in (1001 - len('{"data": {"pad": ""}}'), 5000):
        response = api.put("/buckets/b", json={"data": {"pad": "x" * size}})
        body = assert_error(response, 413, 113)
        assert body["error"] == "Request Entity Too Large"
    assert api.get("/buckets/b").json()["data"]["pad"] == "x" * 900


def test_far_too_large_body_is_a_kinto_413(small_server):
    from conftest import Api

    response = Api(small_server).put("/buckets/b", json={"data": {"pad": "x" * 200_000}})
    assert_error(response, 413, 113)


def test_chunked_body_too_large_is_413(small_server):
    from conftest import Api

    api = Api(small_server)

    def chunks(total):
        yield b'{"data": {"pad": "'
        for _ in range(total // 100):
            yield b"x" * 100
        yield b'"}}'

    assert_status(
        api.put("/buckets/c1", data=chunks(500), headers={"Content-Type": "application/json"}), 201
    )
    response = api.put(
        "/buckets/c2", data=chunks(5000), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, 113)
    assert_status(api.get("/buckets/c2"), 403)  # never created


def test_batch_body_too_large_is_413(small_server):
    from conftest import Api

    api = Api(small_server)
    response = api.post("/batch", json={"requests": [{"path": "/buckets/x" + "x" * 2000}]})
    assert_error(response, 413, 113)


# -- hostile ids --------------------------------------------------------------


def raw_request(daemon, method, path, body=None):
    """Send ``path`` byte for byte (no client-side normalisation of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    headers = {"Authorization": basic_auth(ALICE)}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


# Ids as they appear in the URL (percent-encoding included); each carries the
# marker when it could name a file, so a stray file is easy to find.
HOSTILE_IDS = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "a/" + MARKER,
    "../../" + MARKER,
    "..%2F" + MARKER,
    "%2e%2e%2f" + MARKER,
    "a%2F" + MARKER,
    "..%5C" + MARKER,
    "a\\" + MARKER,
    MARKER + "%00",
    "%00",
    MARKER + "%00.json",
    "%2Fetc%2F" + MARKER,
    "~" + MARKER,
    "%20" + MARKER,
    MARKER + "%20",
    MARKER + "%0A",
    "%C3%A9" + MARKER,  # é
    "%EF%BC%8E%EF%BC%8E",  # fullwidth full stops
    "%E2%80%A4%E2%80%A4" + MARKER,  # one-dot leaders
    MARKER + "%E2%80%8B",  # zero-width space
    "%D0%B0" + MARKER,  # Cyrillic a
    "%EF%BD%85vil",  # fullwidth e + "vil"
    "%EF%BC%8F" + MARKER,  # fullwidth solidus
    MARKER + "x" * 300,
    "_journal",
    "_journal.jsonl",
    "_lock",
    "_bucket",
    "_collection",
    "_format",
    "_format.json",
    ".tmp-" + MARKER,
    ".trash-" + MARKER,
    "_" + MARKER,
    "-" + MARKER,
    MARKER + ".json",
]

# (method, URL template, statuses allowed): every position an id can take.
POSITIONS = [
    ("PUT", "/v1/buckets/{}", {400, 404}),
    ("PUT", "/v1/buckets/b/groups/{}", {400, 404}),
    ("PUT", "/v1/buckets/b/collections/{}", {400, 404}),
    ("PUT", "/v1/buckets/b/collections/c/records/{}", {400, 404}),
    ("PATCH", "/v1/buckets/b/collections/c/records/{}", {400, 404}),
    ("DELETE", "/v1/buckets/b/collections/c/records/{}", {400, 404}),
    ("GET", "/v1/buckets/b/collections/c/records/{}", {400, 404}),
    ("PUT", "/v1/buckets/b/collections/{}/records/r1", {400, 404}),
    ("GET", "/v1/buckets/b/collections/{}/records", {400, 404}),
    # Kinto authorizes before it looks at a parent bucket id: 403 is fine there.
    ("PUT", "/v1/buckets/{}/collections/c", {400, 403, 404}),
    ("GET", "/v1/buckets/{}/groups", {400, 403, 404}),
]


def snapshot(root):
    """{relative path: bytes} of every file under ``root``."""
    return file_tree(root)


def names_with_marker(root):
    hits = []
    for folder, dirs, files in os.walk(root):
        hits += [os.path.join(folder, n) for n in dirs + files if MARKER in n.lower()]
    return hits


@pytest.mark.daemon  # raw_request: the path byte for byte, as cheroot decodes it
@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_ids_never_touch_the_disk(tree, hostile):
    daemon = tree.daemon
    data_dir = daemon.data_dir
    outside = os.path.dirname(os.path.dirname(data_dir))  # pytest's base temp folder
    before = snapshot(data_dir)
    assert not names_with_marker(outside)

    for method, template, allowed in POSITIONS:
        path = template.format(hostile)
        status, content_type, raw = raw_request(
            daemon,
            method,
            path,
            None if method in ("GET", "DELETE") else {"data": {"title": MARKER}},
        )
        assert status in allowed, (method, path, status, raw[:300])
        assert content_type == "application/json", (method, path, content_type)
        body = json.loads(raw)
        assert body["code"] == status and isinstance(body["errno"], int), body

    decoded = {"data": {"id": hostile.replace("%2F", "/").replace("%00", "\x00"), "title": MARKER}}
    status, _, raw = raw_request(daemon, "POST", "/v1/buckets/b/collections/c/records", decoded)
    assert status == 400, raw

    assert snapshot(data_dir) == before, "a refused request changed files"
    assert not names_with_marker(outside)
    assert not [n for n in os.listdir(os.getcwd()) if MARKER in n]
    assert_status(tree.get(RECORD), 200)
    assert tree.get("/buckets/b").json()["data"]["title"] == "ok"


@pytest.mark.parametrize(
    "posted_id",
    [
        "../" + MARKER,
        "..",
        "a/b",
        "a\\b",
        "a\x00b",
        "é",
        "．．",
        "_journal",
        ".tmp-x",
        "_bucket",
        "x" * 300,
    ],
)
def test_hostile_posted_ids_are_400(tree, posted_id):
    for plural in ("/buckets", "/buckets/b/groups", "/buckets/b/collections", RECORDS):
        body = invalid(tree.post(plural, json={"data": {"id": posted_id}}))
        assert body["message"] == "path: Invalid object id"
    assert not names_with_marker(os.path.dirname(os.path.dirname(tree.daemon.data_dir)))

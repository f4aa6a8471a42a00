"""Requests built to make the daemon work for minutes, over HTTP (in process, see conftest).

Each attack is sized so that the former code (a backtracking regex for
like_, a raw-string test for nested batches) kept a request thread, and the
GIL, busy for minutes; every request here has a 10 s guard timeout, which is
never a speed assertion: the answers come at once.
"""

import json
import os
from urllib.parse import urlencode

import pytest
from conftest import REFERENCE_URL, assert_error, assert_status, basic_auth
from wsgi_transport import wsgi_session

from kintofs.config import load_settings
from kintofs.server import build_app
from kintofs.web import batch as batch_module

GUARD = 10  # seconds; the former code needed minutes for each attack below
RECORDS = "/buckets/b/collections/c/records"
RECURSIVE = "Recursive call on /batch endpoint is forbidden."

# Real Kinto tests the raw path only, so it runs the percent-encoded spellings.
kintofs_only = pytest.mark.skipif(bool(REFERENCE_URL), reason="Kinto nests these batches")


def call(api, method, path, **kwargs):
    """A request with the guard timeout (conftest's Api waits 30 s)."""
    return api.session.request(
        method, api.daemon.url + path, auth=api.auth, timeout=GUARD, allow_redirects=False, **kwargs
    )


def put_records(api, records):
    """PUT (id, data) pairs, 25 to a batch."""
    for start in range(0, len(records), 25):
        body = {
            "requests": [
                {"method": "PUT", "path": f"{RECORDS}/{rid}", "body": {"data": data}}
                for rid, data in records[start : start + 25]
            ]
        }
        responses = assert_status(call(api, "POST", "/batch", json=body), 200).json()["responses"]
        assert {r["status"] for r in responses} == {201}


@pytest.fixture
def collection(api):
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    return api


def like(api, pattern, field="title"):
    response = call(api, "GET", RECORDS, params={f"like_{field}": pattern, "_sort": "id"})
    return [record["id"] for record in assert_status(response, 200).json()["data"]]


# -- like_ in linear time ------------------------------------------------------


@pytest.mark.skipif(
    bool(REFERENCE_URL), reason="Kinto's memory backend backtracks: its workers hang"
)
def test_like_against_long_runs_of_one_letter_answers_at_once(collection):
    """`*a*a*a*b` against 300 `a`s took the regex ~3-5 s per record (40 here);
    `*a*a*a*a*b` against 200 `a`s took ~30 s per record (6 here)."""
    put_records(
        collection,
        [(f"a300-{i:02}", {"title": "a" * 300}) for i in range(40)]
        + [(f"a200-{i}", {"title": "a" * 200}) for i in range(6)]
        + [("hit300", {"title": "a" * 300 + "b"}), ("hit200", {"title": "A" * 199 + "B"})],
    )
    assert like(collection, "*a*a*a*b") == ["hit200", "hit300"]
    assert like(collection, "*a*a*a*a*b") == ["hit200", "hit300"]
    assert like(collection, "a*a*a*a*a*a*") == sorted(
        [f"a300-{i:02}" for i in range(40)] + [f"a200-{i}" for i in range(6)] + ["hit200", "hit300"]
    )
    many_stars = "*a" * 150 + "*b"  # every piece must find its own `a`
    assert like(collection, many_stars) == ["hit200", "hit300"]
    assert like(collection, "*a" * 201 + "*b") == ["hit300"]


@pytest.mark.skipif(bool(REFERENCE_URL), reason="a regex like Kinto's would hang the worker")
def test_a_path_of_many_stars_against_a_long_bucket_id_answers_at_once(api):
    """`*` in a parent id matches the buckets shared with the caller (as
    Kinto's lookup does); 40 stars against a 200-letter id is no backtracking."""
    long_id = "a" * 200
    assert_status(api.put(f"/buckets/{long_id}"), 201)
    path = "/buckets/" + "a*" * 40 + "b/collections"
    assert_error(call(api, "GET", path), 403, 121)  # no bucket matches: not readable
    assert_error(call(api, "GET", "/buckets/" + "a*" * 40 + "/collections"), 404, 111)


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("hello*", {"hello"}),  # the start is anchored
        ("*world", {"hello"}),  # the end is anchored
        ("world*", set()),
        ("*hello", set()),
        ("lo wo", {"hello"}),  # no star: a substring anywhere
        ("HeLLo*WORLD", {"hello"}),  # case-insensitive
        ("ab*ba", {"abba", "abxba"}),  # not "aba": the pieces never overlap
        ("a**b", {"ab", "aab", "dot"}),  # `**` is one `*`
        ("*", {"hello", "aba", "abba", "abxba", "ab", "aab", "empty", "dot"}),
        ("", {"hello", "aba", "abba", "abxba", "ab", "aab", "empty", "dot"}),
        ("a.b", {"dot"}),  # `.` is a plain character
        ("*b*", {"aba", "abba", "abxba", "ab", "aab", "dot"}),
    ],
)
def test_like_semantics(collection, pattern, expected):
    put_records(
        collection,
        [
            ("hello", {"title": "Hello World"}),
            ("aba", {"title": "aba"}),
            ("abba", {"title": "ABBA"}),
            ("abxba", {"title": "abxba"}),
            ("ab", {"title": "ab"}),
            ("aab", {"title": "aab"}),
            ("empty", {"title": ""}),
            ("dot", {"title": "a.b"}),
            ("number", {"title": 5}),
            ("missing", {}),
        ],
    )
    assert set(like(collection, pattern)) == expected


def test_other_hostile_querystrings_answer_at_once(collection):
    """Querystrings longer than a request line may be, sent as batch sub-requests."""
    nested = node = {}
    for _ in range(30):
        node["a"] = {}
        node = node["a"]
    put_records(collection, [(f"r{i}", {"a": nested["a"], "l": [i]}) for i in range(50)])
    dotted = "a." * 20_000 + "b"  # splitting and re-joining it was quadratic per record
    queries = [
        {f"eq_{dotted}": "1"},
        {"_sort": dotted},
        {"_fields": dotted},
        {"in_l": ",".join(map(str, range(20_000)))},
        {"contains_any_l": "[" + ",".join(map(str, range(1, 20_000))) + "]"},
        {"_sort": ",".join(["l", "-l"] * 2000)},
        {"eq_l": "[" * 600 + "]" * 600},
    ]  # compared as a string: it blew the stack
    body = {"requests": [{"path": f"{RECORDS}?{urlencode(query)}"} for query in queries]}
    responses = assert_status(call(collection, "POST", "/batch", json=body), 200).json()
    assert [r["status"] for r in responses["responses"]] == [200] * len(queries)
    assert responses["responses"][-1]["body"]["data"] == []
    response = call(collection, "GET", RECORDS, params={"gt_last_modified": "1" * 5000})
    assert_error(response, 400, 107)  # more digits than int() converts: it was a 500


# -- batch: no spelling of /batch nests ------------------------------------------


def nested_batch(path, levels, inner):
    """A batch whose 25 requests each POST a batch of 25 ... `levels` deep,
    through `defaults` only: ~1.5 KB that the former code ran as 25**(levels+1)
    sub-requests (390,625 at 3 levels), every one an `inner` request."""
    defaults = inner
    for _ in range(levels):
        defaults = {
            "method": "POST",
            "path": path,
            "body": {"requests": [{}] * 25, "defaults": defaults},
        }
    return {"requests": [{}] * 25, "defaults": defaults}


def refused(api, body):
    """Kinto's 400 for the whole batch: none of its requests runs."""
    response = call(api, "POST", "/batch", json=body)
    error = assert_error(response, 400, 107, f"requests in body: {RECURSIVE}")
    assert error["details"] == [{"location": "body", "name": "requests", "description": RECURSIVE}]


def no_buckets(api):
    return assert_status(api.get("/buckets"), 200).json()["data"] == []


SPELLINGS = [
    "/batch",
    "/v1/batch",
    "/batch/",
    "/v1/batch/",
    "/v1/batch?x=1",
    "/v1//batch",
    "//batch",
    "/v1/./batch",
    "/v1/x/../batch",
    "/buckets/batch",
    pytest.param("/v1/%62atch", marks=kintofs_only),
    pytest.param("/%62atch", marks=kintofs_only),
    pytest.param("/v1/%62%61%74%63%68", marks=kintofs_only),
    pytest.param("/v1/%62atch/", marks=kintofs_only),  # would be redirected to /v1/batch
    pytest.param("/v1/%62atch?x=1", marks=kintofs_only),
    pytest.param("/%2Fbatch", marks=kintofs_only),
    pytest.param("/v1%2Fbatch", marks=kintofs_only),
    pytest.param("/v1/.%2Fbatch", marks=kintofs_only),
    pytest.param("/v1/x/..%2F%62atch", marks=kintofs_only),
    pytest.param("/v1/%2e/%62atch", marks=kintofs_only),
    pytest.param("/v1/x/%2e%2e/%62atch", marks=kintofs_only),
    pytest.param("/v1/%2F%2Fbatch", marks=kintofs_only),
    pytest.param("/buckets/%62atch", marks=kintofs_only),
]


@pytest.mark.parametrize("path", SPELLINGS)
def test_every_spelling_of_batch_is_refused_and_nothing_runs(api, path):
    put_first = {"method": "PUT", "path": "/buckets/first"}
    inner = {"method": "PUT", "path": "/buckets/nested"}
    refused(
        api,
        {"requests": [put_first, {"method": "POST", "path": path, "body": {"requests": [inner]}}]},
    )
    refused(api, {"requests": [put_first, {"path": path}]})  # any method
    refused(api, nested_batch(path, 3, inner))
    assert no_buckets(api)


@kintofs_only
def test_nested_batch_through_defaults_is_refused_at_once(api):
    """The attack of the issue: 25**4 = 390,625 sub-requests from 1.5 KB,
    without credentials (the inner requests carry their own)."""
    inner = {
        "method": "PUT",
        "path": "/buckets/nested",
        "headers": {"Authorization": basic_auth(api.auth)},
    }
    body = nested_batch("/v1/%62atch", 3, inner)
    assert len(json.dumps(body)) < 2000
    refused(api.as_user(None), body)
    assert no_buckets(api)


def test_paths_that_only_look_like_batch_run(api):
    body = {
        "requests": [
            {"method": "PUT", "path": "/buckets/mybatch"},
            {"path": "/v1/BATCH"},  # routes are case-sensitive: 404
            {"path": "/buckets/mybatch?q=batch"},
        ]
    }
    responses = assert_status(call(api, "POST", "/batch", json=body), 200).json()["responses"]
    assert [r["status"] for r in responses] == [201, 404, 200]


# -- batch: the second lock, in process ----------------------------------------


@pytest.fixture
def app_and_service(tmp_path):
    settings = load_settings(
        os.devnull,
        environ={},
        overrides={"data_dir": str(tmp_path / "data"), "fsync": False, "userid_hmac_secret": "s"},
    )
    return build_app(settings)


def post_batch(app, body):
    response = wsgi_session(app, "http://kintofs.test").post(
        "http://kintofs.test/v1/batch", json=body, allow_redirects=False
    )
    return response.status_code, response.json()


def test_a_batch_route_reached_from_a_batch_refuses_to_run(app_and_service, monkeypatch):
    """Should a spelling ever get past the path check, the sub-request's batch
    view refuses: one batch runs at most batch_max_requests sub-requests."""
    app, service = app_and_service
    monkeypatch.setattr(batch_module, "is_recursive", lambda path: False)  # a check gone wrong
    calls = []
    inner_wsgi = service.wsgi

    def counting(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return inner_wsgi(environ, start_response)

    service.wsgi = counting
    inner = {"method": "PUT", "path": "/buckets/nested"}
    status, body = post_batch(app, nested_batch("/v1/%62atch", 3, inner))
    assert status == 200
    assert calls == ["/v1/batch"] * 25  # the nested batches ran nothing
    assert [r["status"] for r in body["responses"]] == [400] * 25
    assert body["responses"][0]["body"]["details"] == [
        {"location": "body", "name": "requests", "description": RECURSIVE}
    ]

    calls.clear()  # a redirect to /v1/batch (trailing slash) meets the same lock
    status, body = post_batch(
        app,
        {"requests": [{"method": "POST", "path": "/v1/%62atch/", "body": {"requests": [inner]}}]},
    )
    assert status == 200 and calls == ["/v1/batch/", "/v1/batch"]
    assert body["responses"][0]["status"] == 400


def test_a_redirect_to_batch_is_not_followed(app_and_service, monkeypatch):
    app, service = app_and_service
    seen = []
    real_check = batch_module.is_recursive

    def first_path_slips_through(path):  # as a missed spelling would
        seen.append(("checked", path))
        return len(seen) > 1 and real_check(path)

    monkeypatch.setattr(batch_module, "is_recursive", first_path_slips_through)
    inner_wsgi = service.wsgi

    def recording(environ, start_response):
        seen.append(("ran", environ["PATH_INFO"]))
        return inner_wsgi(environ, start_response)

    service.wsgi = recording
    status, body = post_batch(app, {"requests": [{"method": "POST", "path": "/v1/%62atch/"}]})
    assert status == 200
    assert body["responses"][0]["status"] == 307  # reported, not followed to /v1/batch
    assert seen == [("checked", "/v1/%62atch/"), ("ran", "/v1/batch/"), ("checked", "/v1/batch")]

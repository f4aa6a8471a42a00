"""What surrounds the resources: redirects, CORS, security headers, the hello
view, heartbeats, read-only mode, batch and flush (protocol sections 3.1, 5,
13, 14, 20).
"""

import time
from email.utils import parsedate_to_datetime

import pytest
from conftest import (
    ALICE,
    BOB,
    Api,
    assert_error,
    assert_status,
    basic_auth,
    basicauth_id,
    header_set,
)

CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
MUST_EXPOSE = {
    "Backoff",
    "Retry-After",
    "Alert",
    "Content-Length",
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Next-Page",
    "Total-Objects",
    "Total-Records",
}
ORIGIN = {"Origin": "http://example.com"}


def root_get(api, path, method="GET", **kwargs):
    """A request to ``path`` outside ``/v1`` (redirects not followed)."""
    return api.request(method, api.daemon.root_url + path, **kwargs)


def redirect(response, location):
    assert_status(response, 307)
    assert response.headers["Location"] == location
    return response


# -- redirects ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, target",
    [
        ("/", "/v1/"),
        ("/?a=1&b=2", "/v1/?a=1&b=2"),
        ("/buckets", "/v1/buckets"),
        ("/buckets/b/collections?_limit=2", "/v1/buckets/b/collections?_limit=2"),
        ("/__heartbeat__", "/v1/__heartbeat__"),
        ("/__flush__", "/v1/__flush__"),
        ("/nothing", "/v1/nothing"),
    ],
)
def test_unprefixed_paths_redirect_to_v1(api, path, target):
    response = redirect(root_get(api, path), api.daemon.root_url + target)
    assert "Cache-Control" not in response.headers
    redirect(root_get(api, path, method="POST", json={}), api.daemon.root_url + target)


def test_v1_without_slash_redirects_with_cache_headers(api):
    response = redirect(root_get(api, "/v1"), api.daemon.url + "/")
    assert response.headers["Cache-Control"] == "max-age=3600"
    assert_expires_in_an_hour(response)


def assert_expires_in_an_hour(response):
    expires = parsedate_to_datetime(response.headers["Expires"]).timestamp()
    assert 3500 <= expires - time.time() <= 3700, response.headers["Expires"]


@pytest.mark.parametrize(
    "path, target",
    [
        ("/buckets/", "/buckets"),
        ("/buckets/?_limit=1", "/buckets?_limit=1"),
        ("/buckets/b/collections/c/records/", "/buckets/b/collections/c/records"),
        ("/__heartbeat__/", "/__heartbeat__"),
        ("/nothing-here/", "/nothing-here"),
    ],
)
def test_trailing_slash_redirects(api, path, target):
    response = redirect(api.get(path), api.daemon.url + target)
    assert response.headers["Cache-Control"] == "max-age=3600"
    assert_expires_in_an_hour(response)


def test_clients_follow_the_redirects(api):
    """307 keeps the method and body: a POST to /buckets creates a bucket."""
    response = api.post(
        api.daemon.root_url + "/buckets", json={"data": {"id": "viaredirect"}}, allow_redirects=True
    )
    assert assert_status(response, 201).json()["data"]["id"] == "viaredirect"
    followed = api.get(api.daemon.root_url + "/buckets/viaredirect/", allow_redirects=True)
    assert assert_status(followed, 200).json()["data"]["id"] == "viaredirect"
    assert [r.status_code for r in followed.history] == [307, 307]


@pytest.mark.parametrize("path", ["/v2", "/v2/", "/v2/buckets", "/v0/x"])
def test_other_versions_are_404_errno_116(api, path):
    assert_error(
        root_get(api, path), 404, 116, "The requested API version is not available on this server."
    )


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/nothing-here", "/buckets/b/nothing", "/buckets/b/collections/c/x/y"]
)
def test_unknown_urls_are_404_errno_111(api, method, path):
    body = assert_error(
        api.request(method, path, json={}),
        404,
        111,
        "The resource you are looking for could not be found.",
    )
    assert "details" not in body


# -- CORS and security headers ------------------------------------------------


def test_cors_on_actual_requests(api):
    api.put("/buckets/b", json={"data": {}})
    responses = [
        api.get("/", headers=ORIGIN),
        api.get("/buckets", headers=ORIGIN),
        api.put("/buckets/b/collections/c", json={"data": {}}, headers=ORIGIN),
        api.get("/nothing-here", headers=ORIGIN),
        api.as_user(None).get("/buckets/b", headers=ORIGIN),
        api.as_user(BOB).get("/buckets/b", headers=ORIGIN),
        api.get("/buckets/b", headers={**ORIGIN, "If-Match": '"1"'}),
        api.post("/buckets/b", headers=ORIGIN),
        root_get(api, "/buckets", headers=ORIGIN),
        api.post("/batch", json={"requests": []}, headers=ORIGIN),
    ]
    assert [r.status_code for r in responses] == [200, 200, 201, 404, 401, 403, 412, 405, 307, 200]
    for response in responses:
        assert response.headers.get("Access-Control-Allow-Origin") == "*", response.url
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_no_allow_origin_without_origin(api):
    response = api.get("/")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_expose_headers_let_browsers_read_sync_headers(api):
    """Section 20 recommends the union on every response (Kinto varies it per
    route and omits ETag on writes, which kinto.js then cannot read)."""
    api.put("/buckets/b", json={"data": {}})
    for response in (
        api.get("/buckets", headers=ORIGIN),
        api.head("/buckets", headers=ORIGIN),
        api.get("/buckets/b", headers=ORIGIN),
        api.put("/buckets/b", json={"data": {}}, headers=ORIGIN),
    ):
        assert MUST_EXPOSE <= header_set(response, "Access-Control-Expose-Headers"), (
            response.request.method
        )


def test_security_headers_on_every_response(api):
    api.put("/buckets/b", json={"data": {}})
    ts = api.get("/buckets/b").headers["ETag"]
    for response in (
        api.get("/"),
        api.get("/buckets/b"),
        api.get("/nothing"),
        api.get("/buckets/b", headers={"If-None-Match": ts}),
        root_get(api, "/"),
        api.post("/buckets/b"),
        api.as_user(None).get("/buckets/b"),
        api.request(
            "OPTIONS", "/buckets", headers={**ORIGIN, "Access-Control-Request-Method": "GET"}
        ),
    ):
        assert response.headers.get("Content-Security-Policy") == CSP, response.status_code
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.status_code


def preflight(api, path, **headers):
    return api.request("OPTIONS", path, auth=None, headers=headers)


def test_preflight_on_a_plural_endpoint(api):
    response = preflight(
        api,
        "/buckets",
        Origin="http://example.com",
        **{
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization, If-Match, X-Foo",
        },
    )
    assert_status(response, 200)
    assert response.json() is None
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "HEAD,GET,POST,DELETE,OPTIONS"
    assert response.headers["Access-Control-Max-Age"] == "3600"
    allowed = {h.lower() for h in header_set(response, "Access-Control-Allow-Headers")}
    assert {"authorization", "if-match", "x-foo", "etag", "content-type"} <= allowed


@pytest.mark.parametrize(
    "path", ["/buckets/b", "/buckets/b/groups/g", "/buckets/b/collections/c/records/r"]
)
def test_preflight_on_an_object_endpoint(api, path):
    response = preflight(
        api,
        path,
        Origin="http://example.com",
        **{
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "If-None-Match, Content-Type",
        },
    )
    assert_status(response, 200)
    assert response.headers["Access-Control-Allow-Methods"] == "GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
    allowed = {h.lower() for h in header_set(response, "Access-Control-Allow-Headers")}
    assert {"if-none-match", "content-type"} <= allowed


def test_preflight_on_utility_endpoints(api):
    for path, method in (("/", "GET"), ("/batch", "POST")):
        response = preflight(
            api, path, Origin="http://example.com", **{"Access-Control-Request-Method": method}
        )
        assert_status(response, 200)
        assert method in header_set(response, "Access-Control-Allow-Methods")


def test_preflight_without_required_headers(api):
    body = assert_error(preflight(api, "/buckets"), 400, 107)
    assert body["details"] == [
        {
            "location": "header",
            "name": "Access-Control-Request-Method",
            "description": "this header is mandatory",
        },
        {"location": "header", "name": "Origin", "description": "this header is mandatory"},
    ]
    assert body["message"] == "Access-Control-Request-Method in header: this header is mandatory"

    response = preflight(api, "/buckets", Origin="http://example.com")
    body = assert_error(response, 400, 107)
    assert [d["name"] for d in body["details"]] == ["Access-Control-Request-Method"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


# -- hello, heartbeats, version -----------------------------------------------


def test_hello_anonymous(api):
    response = api.as_user(None).get("/")
    hello = assert_status(response, 200).json()
    assert response.headers["Content-Type"] == "application/json"
    assert hello["http_api_version"] == "1.23"
    assert hello["url"] == api.daemon.url + "/"
    assert hello["settings"] == {
        "batch_max_requests": 25,
        "readonly": False,
        "explicit_permissions": True,
    }
    assert isinstance(hello["project_name"], str) and isinstance(hello["project_version"], str)
    assert hello["project_docs"].startswith("http")
    assert {"basicauth", "flush_endpoint"} <= set(hello["capabilities"])
    for capability in hello["capabilities"].values():
        assert {"description", "url"} <= set(capability)
    assert "user" not in hello


@pytest.mark.parametrize("auth", [ALICE, BOB, ("carol", ""), ("dé", "pâss:word")])
def test_hello_user_is_the_basicauth_hmac(api, auth):
    hello = assert_status(api.as_user(auth).get("/"), 200).json()
    expected = basicauth_id(auth)
    assert hello["user"]["id"] == expected
    assert len(expected) == len("basicauth:") + 64
    assert set(hello["user"]["principals"]) == {expected, "system.Everyone", "system.Authenticated"}


@pytest.mark.parametrize("authorization", ["Basic Ol9w", "Basic !!!", "Bearer abc", "Basic"])
def test_unusable_credentials_are_anonymous(api, authorization):
    """Empty user name, bad base64, other schemes: anonymous, not an error."""
    response = api.get("/", auth=None, headers={"Authorization": authorization})
    assert "user" not in assert_status(response, 200).json()


def test_hello_head(api):
    response = assert_status(api.head("/"), 200)
    assert response.content == b""
    assert response.headers["Content-Type"] == "application/json"


def test_hello_accepts_any_accept_header(api):
    assert_status(api.get("/", headers={"Accept": "text/html"}), 200)


def test_heartbeats_and_version(api):
    heartbeat = assert_status(api.as_user(None).get("/__heartbeat__"), 200).json()
    assert heartbeat and all(value is True for value in heartbeat.values())
    assert "storage" in heartbeat

    lb = assert_status(api.as_user(None).get("/__lbheartbeat__"), 200)
    assert lb.json() == {} and lb.content.strip() == b"{}"

    version = assert_status(api.as_user(None).get("/__version__"), 200).json()
    assert {"name", "version", "source", "commit"} <= set(version)
    assert_status(api.head("/__heartbeat__"), 200)


# -- read-only mode -----------------------------------------------------------


def test_readonly_mode_refuses_every_write(start_app):
    daemon = start_app(readonly="true")
    api = Api(daemon)
    hello = api.get("/")
    assert assert_status(hello, 200).json()["settings"]["readonly"] is True
    assert hello.headers["Cache-Control"] == "max-age=86400"

    writes = [
        ("PUT", "/buckets/b"),
        ("POST", "/buckets"),
        ("PATCH", "/buckets/b"),
        ("DELETE", "/buckets/b"),
        ("DELETE", "/buckets"),
        ("POST", "/batch"),
        ("POST", "/__flush__"),
        ("POST", "/nothing-here"),
        ("PUT", "/buckets/b/collections/c"),
    ]
    for method, path in writes:
        assert_error(
            api.request(method, path, json={"data": {}}),
            405,
            115,
            "Method not allowed on this endpoint.",
        )
    assert_error(api.as_user(None).put("/buckets/b", json={"data": {}}), 405, 115)

    assert assert_status(api.get("/buckets"), 200).json() == {"data": []}
    assert_status(api.get("/__heartbeat__"), 200)
    assert_status(
        api.request(
            "OPTIONS",
            "/buckets",
            auth=None,
            headers={**ORIGIN, "Access-Control-Request-Method": "GET"},
        ),
        200,
    )


# -- batch --------------------------------------------------------------------


def batch(api, requests_, defaults=None, status=200, **kwargs):
    body = {"requests": requests_}
    if defaults is not None:
        body["defaults"] = defaults
    response = api.post("/batch", json=body, **kwargs)
    assert_status(response, status)
    return response.json()["responses"] if status == 200 else response.json()


def test_batch_runs_sub_requests_in_order(api):
    responses = batch(
        api,
        [
            {"method": "PUT", "path": "/buckets/b", "body": {"data": {"title": "t"}}},
            {"method": "PUT", "path": "/v1/buckets/b/collections/c"},
            {
                "method": "POST",
                "path": "/buckets/b/collections/c/records",
                "body": {"data": {"id": "r1"}},
            },
            {"method": "GET", "path": "/buckets/b/collections/c/records?_sort=id"},
            {"method": "HEAD", "path": "/buckets/b"},
            {"method": "GET", "path": "/buckets/b/collections/c/records/missing"},
            {"method": "PATCH", "path": "/buckets/b", "body": {"data": {"x": 1}}},
            {"method": "DELETE", "path": "/buckets/b/collections/c/records/r1"},
        ],
    )
    assert [r["status"] for r in responses] == [201, 201, 201, 200, 200, 404, 200, 200]
    assert [r["path"] for r in responses] == [
        "/v1/buckets/b",
        "/v1/buckets/b/collections/c",
        "/v1/buckets/b/collections/c/records",
        "/v1/buckets/b/collections/c/records",
        "/v1/buckets/b",
        "/v1/buckets/b/collections/c/records/missing",
        "/v1/buckets/b",
        "/v1/buckets/b/collections/c/records/r1",
    ]

    created = responses[0]
    assert created["body"]["data"]["title"] == "t"
    assert created["body"]["permissions"] == {"write": [basicauth_id(ALICE)]}
    assert created["headers"]["ETag"] == f'"{created["body"]["data"]["last_modified"]}"'
    assert created["headers"]["Content-Type"] == "application/json"
    assert all(isinstance(v, str) for r in responses for v in r["headers"].values())

    assert [r["id"] for r in responses[3]["body"]["data"]] == ["r1"]
    assert responses[4]["body"] == ""
    assert responses[5]["body"] == {
        "code": 404,
        "errno": 110,
        "error": "Not Found",
        "details": {"id": "missing", "resource_name": "record"},
    }
    assert responses[7]["body"]["data"]["deleted"] is True
    assert_status(api.get("/buckets/b/collections/c/records/r1"), 404)


def test_batch_defaults_fill_every_sub_request(api):
    api.put("/buckets/b", json={"data": {}})
    api.put("/buckets/b/collections/c", json={"data": {}})
    responses = batch(
        api,
        [
            {"path": "/buckets/b/collections/c/records/a1", "body": {"data": {"title": "One"}}},
            {"path": "/buckets/b/collections/c/records/a1", "body": {"data": {"title": "Again"}}},
            {
                "path": "/buckets/b/collections/c/records/a2",
                "headers": {"If-None-Match": ""},
                "body": {"data": {"title": "Two"}, "permissions": {"read": []}},
            },
            {"method": "GET", "path": "/buckets/b/collections/c/records/a1", "headers": {}},
        ],
        defaults={
            "method": "PUT",
            "headers": {"If-None-Match": "*"},
            "body": {"permissions": {"read": ["system.Everyone"]}},
        },
    )
    assert [r["status"] for r in responses] == [201, 412, 201, 412]
    assert responses[0]["body"]["permissions"]["read"] == ["system.Everyone"]
    assert responses[1]["body"]["details"]["existing"]["title"] == "One"
    assert responses[2]["body"]["data"]["title"] == "Two"
    assert "read" not in responses[2]["body"]["permissions"], "the request's own body wins"


def test_batch_authorization_is_inherited_and_can_be_overridden(api):
    anonymous = api.as_user(None)
    responses = batch(
        anonymous,
        [
            {"method": "PUT", "path": "/buckets/b"},
            {"method": "GET", "path": "/buckets/b", "headers": {"Authorization": basic_auth(BOB)}},
        ],
        headers={"Authorization": basic_auth(ALICE)},
    )
    assert [r["status"] for r in responses] == [201, 403]
    assert responses[0]["body"]["permissions"] == {"write": [basicauth_id(ALICE)]}

    responses = batch(
        anonymous,
        [
            {
                "method": "GET",
                "path": "/buckets/b",
                "headers": {"Authorization": basic_auth(ALICE)},
            },
            {"method": "GET", "path": "/buckets/b"},
        ],
    )
    assert [r["status"] for r in responses] == [200, 401]
    assert responses[1]["body"]["errno"] == 104


def test_batch_follows_redirects_and_reports_prefixed_paths(api):
    api.put("/buckets/b", json={"data": {}})
    responses = batch(
        api,
        [
            {"path": "/buckets/"},
            {"path": "/v1/buckets/b/"},
            {"path": "/"},
            {"path": "/v1"},
            {"path": "/nothing"},
        ],
    )
    assert [r["status"] for r in responses] == [200, 200, 200, 200, 404]
    assert responses[0]["path"] == "/v1/buckets"
    assert responses[1]["body"]["data"]["id"] == "b"
    assert responses[2]["body"]["url"].endswith("/v1/")
    assert responses[2]["path"] == responses[3]["path"] == "/v1/"
    assert responses[4]["body"]["errno"] == 111


def test_batch_304_sub_response(api):
    ts = api.put("/buckets/b", json={"data": {}}).headers["ETag"]
    responses = batch(api, [{"path": "/buckets/b", "headers": {"If-None-Match": ts}}])
    assert responses[0]["status"] == 304
    assert responses[0]["body"] == ""


def test_batch_limits(api):
    assert batch(api, [{"path": "/"}] * 25)[-1]["status"] == 200
    body = batch(api, [{"path": "/"}] * 26, status=400)
    assert body["errno"] == 107
    assert body["details"] == [
        {
            "location": "body",
            "name": "requests",
            "description": "Number of requests is limited to 25",
        }
    ]
    assert batch(api, []) == []


@pytest.mark.parametrize("path", ["/batch", "/v1/batch", "/buckets/batch"])
def test_recursive_batch_is_refused(api, path):
    body = batch(api, [{"method": "POST", "path": path}], status=400)
    assert body["errno"] == 107
    assert body["details"] == [
        {
            "location": "body",
            "name": "requests",
            "description": "Recursive call on /batch endpoint is forbidden.",
        }
    ]
    # As in Kinto, the schema of every request is checked first.
    body = batch(api, [{"method": "POST", "path": path}, {"path": "/", "method": "X"}], status=400)
    assert body["details"][0]["name"] == "requests.1.method"


@pytest.mark.parametrize(
    "payload, name",
    [
        ({"requests": [{"path": "buckets"}]}, "requests.0.path"),
        ({"requests": [{"path": "/", "foo": 1}]}, "requests.0"),
        ({"requests": [{"path": "/", "method": "OPTIONS"}]}, "requests.0.method"),
        ({"requests": [{"path": "/", "body": []}]}, "requests.0.body"),
        ({"requests": [{"path": "/", "headers": {"X": 1}}]}, "requests.0.headers"),
        ({"requests": [{"method": "GET"}]}, "requests.0.path"),
        ({}, "requests"),
        ({"requests": [], "foo": 1}, ""),
    ],
)
def test_batch_schema_errors(api, payload, name):
    response = api.post("/batch", json=payload)
    body = assert_error(response, 400, 107)
    assert body["details"][0]["location"] == "body"
    assert body["details"][0]["name"] == name


def test_batch_needs_no_authentication(api):
    responses = batch(api.as_user(None), [{"path": "/__heartbeat__"}])
    assert responses[0]["status"] == 200


# -- flush --------------------------------------------------------------------


def test_flush_wipes_everything(api):
    api.put("/buckets/b", json={"data": {}})
    response = api.as_user(None).post("/__flush__")
    assert assert_status(response, 202).json() == {}
    assert_error(api.get("/buckets/b"), 403, 121)
    assert api.get("/buckets").json() == {"data": []}


def test_flush_is_absent_unless_enabled(start_app):
    api = Api(start_app(plugins="[]"))
    assert_error(api.post("/__flush__"), 404, 111)
    assert "flush_endpoint" not in api.get("/").json()["capabilities"]

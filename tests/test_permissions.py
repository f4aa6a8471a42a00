"""Permissions exactly as Kinto: the permission matrix, ACL edits, groups,
``GET /v1/permissions`` and the default bucket.

The matrix: for each kind of object and each of its permissions, a user
(carol) is granted it directly, through a parent, through a group, through
``system.Authenticated``, or not at all; each cell is then checked over HTTP
for read, list, create, update and delete.  Each cell lives in a bucket of
its own, built once per kind with batch requests on a server of its own
(in process, see conftest).
The same cells were run against real Kinto 26.5 (see ``run_cell``) and gave
the statuses ``expected`` predicts.
"""

from dataclasses import dataclass

import pytest
from conftest import ALICE, Api, basicauth_id, flush, make_server

CAROL = ("carol", "carol-pw")

ALICE_ID = basicauth_id(ALICE)
CAROL_ID = basicauth_id(CAROL)


# -- the matrix ---------------------------------------------------------------

PERMISSIONS = {
    "bucket": ("read", "write", "collection:create", "group:create"),
    "group": ("read", "write"),
    "collection": ("read", "write", "record:create"),
    "record": ("read", "write"),
}
ROUTES = ("direct", "parent", "group", "authenticated", "none")

# Own permissions that let a caller read an object (Kinto's read:attributes).
READ_GRANTS = {
    "bucket": {"read", "write", "collection:create", "group:create"},
    "group": {"read", "write"},
    "collection": {"read", "write", "record:create"},
    "record": {"read", "write"},
}


@dataclass(frozen=True)
class Cell:
    kind: str
    permission: str
    route: str

    @property
    def bucket(self):
        return f"m-{self.kind}-{self.permission.replace(':', '-')}-{self.route}"

    @property
    def bucket_path(self):
        return f"/buckets/{self.bucket}"

    @property
    def plural(self):
        """The list the target object is in."""
        return {
            "bucket": "/buckets",
            "group": f"{self.bucket_path}/groups",
            "collection": f"{self.bucket_path}/collections",
            "record": f"{self.bucket_path}/collections/c/records",
        }[self.kind]

    @property
    def target(self):
        if self.kind == "bucket":
            return self.bucket_path
        return f"{self.plural}/target"

    @property
    def grant(self):
        """The (permission, principal) set on the target, or None."""
        principal = {
            "direct": CAROL_ID,
            "group": f"{self.bucket_path}/groups/friends",
            "authenticated": "system.Authenticated",
        }.get(self.route)
        return (self.permission, principal) if principal else None

    @property
    def parent_grant(self):
        """The permission carol gets on the parent with the "parent" route."""
        if self.route != "parent":
            return None
        return "write" if self.permission == "record:create" else self.permission


def matrix_cells(kind):
    return [
        Cell(kind, permission, route)
        for permission in PERMISSIONS[kind]
        for route in ROUTES
        if not (kind == "bucket" and route == "parent")
    ]


def build_requests(cell):
    """Batch sub-requests (as alice) creating one cell's objects."""

    def acl_for(kind):
        if kind == cell.kind and cell.grant:
            permission, principal = cell.grant
            return {permission: [principal]}
        parent_kind = "collection" if cell.kind == "record" else "bucket"
        if kind == parent_kind and cell.parent_grant:
            return {cell.parent_grant: [CAROL_ID]}
        return {}

    def put(path, kind, data=None):
        return {
            "method": "PUT",
            "path": path,
            "body": {"data": data or {}, "permissions": acl_for(kind)},
        }

    requests = [
        put(cell.bucket_path, "bucket"),
        put(f"{cell.bucket_path}/groups/friends", None, {"members": [CAROL_ID]}),
    ]
    if cell.kind == "group":
        requests.append(put(cell.target, "group", {"members": []}))
    if cell.kind == "collection":
        requests.append(put(cell.target, "collection"))
    if cell.kind == "record":
        requests += [
            put(f"{cell.bucket_path}/collections/c", "collection"),
            put(cell.target, "record"),
        ]
    return requests


def build_matrix(api, kind):
    """Create every cell of ``kind`` with as few batch requests as possible."""
    requests = [sub for cell in matrix_cells(kind) for sub in build_requests(cell)]
    for start in range(0, len(requests), 25):
        response = api.post("/batch", json={"requests": requests[start : start + 25]})
        assert response.status_code == 200, response.text
        statuses = [sub["status"] for sub in response.json()["responses"]]
        assert all(status == 201 for status in statuses), response.text


def run_cell(api, cell):
    """What carol (``api``) observes for each operation on the cell's target."""
    observed = {"read": api.get(cell.target).status_code}
    listing = api.get(cell.plural)
    if listing.status_code == 200:
        ids = {obj["id"] for obj in listing.json()["data"]}
        observed["list"] = "listed" if cell.target.rsplit("/", 1)[1] in ids else "hidden"
    else:
        observed["list"] = listing.status_code
    observed["create"] = create_status(api, cell)
    observed["update"] = api.patch(cell.target, json={"data": {"touched": True}}).status_code
    observed["delete"] = api.delete(cell.target).status_code
    return observed


def create_status(api, cell):
    """Creating next to or below the target: what its permissions allow."""
    if cell.kind == "bucket":
        return (
            api.post(f"{cell.bucket_path}/collections", json={"data": {}}).status_code,
            api.post(f"{cell.bucket_path}/groups", json={"data": {"id": "new"}}).status_code,
        )
    if cell.kind == "collection":
        return api.post(f"{cell.target}/records", json={"data": {}}).status_code
    return api.post(cell.plural, json={"data": {"id": "sibling"}}).status_code


def expected(cell):
    """Kinto's answers, from the inheritance rules (protocol 9.2 and 9.5)."""
    own = cell.permission if cell.grant else None
    parent = cell.parent_grant  # read or write on the parent
    can_write = own == "write" or parent == "write"
    can_read = own in READ_GRANTS[cell.kind] or parent is not None
    allowed = lambda yes, status: status if yes else 403  # noqa: E731
    if cell.kind == "bucket":
        listing = "listed" if own else "hidden"  # anyone may create buckets: never a 403
        create = (
            allowed(own in ("write", "collection:create"), 201),
            allowed(own in ("write", "group:create"), 201),
        )
    else:
        listing = "listed" if can_read else 403
        if cell.kind == "collection":
            create = allowed(own in ("write", "record:create") or parent == "write", 201)
        else:
            create = allowed(parent == "write", 201)
    return {
        "read": allowed(can_read, 200),
        "list": listing,
        "create": create,
        "update": allowed(can_write, 200),
        "delete": allowed(can_write, 200),
    }


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("matrix") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def built_kinds(matrix_server):
    """Kinds whose cells exist already (each kind is built on first use)."""
    return set()


@pytest.mark.parametrize(
    "cell",
    [cell for kind in PERMISSIONS for cell in matrix_cells(kind)],
    ids=lambda cell: f"{cell.kind}-{cell.permission}-{cell.route}",
)
def test_permission_matrix(matrix_server, built_kinds, cell):
    if cell.kind not in built_kinds:
        build_matrix(Api(matrix_server, ALICE), cell.kind)
        built_kinds.add(cell.kind)
    assert run_cell(Api(matrix_server, CAROL), cell) == expected(cell)


# -- a daemon with the default bucket and the permissions endpoint ------------

BOB = ("bob", "bob-pw")
BOB_ID = basicauth_id(BOB)
DAVE = ("dave", "dave-pw")


FULL_SETTINGS = {
    "plugins": "flush default_bucket",
    "experimental_permissions_endpoint": "true",
    "default_bucket_hmac_secret": "bucketsecret",
}


@pytest.fixture(scope="module")
def full_server(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("perms") / "data", **FULL_SETTINGS)
    yield server
    server.stop()


@pytest.fixture
def alice(full_server):
    """Alice on a freshly flushed server (default bucket, permissions endpoint)."""
    return flush(full_server)


def body_of(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def make(api, *paths, permissions=None):
    for path in paths:
        body = {"data": {}, "permissions": permissions or {}}
        assert api.put(path, json=body).status_code in (200, 201)


# -- editing ACLs --------------------------------------------------------------


def test_put_replaces_every_ace_and_keeps_the_editor(alice):
    make(alice, "/buckets/b", "/buckets/b/collections/c")
    first = body_of(
        alice.put(
            "/buckets/b/collections/c",
            json={"permissions": {"read": [BOB_ID], "record:create": [BOB_ID]}},
        )
    )
    assert first["permissions"] == {
        "read": [BOB_ID],
        "record:create": [BOB_ID],
        "write": [ALICE_ID],
    }
    replaced = body_of(
        alice.put(
            "/buckets/b/collections/c",
            json={"data": {"t": 1}, "permissions": {"read": ["system.Everyone"]}},
        )
    )
    assert replaced["permissions"] == {"read": ["system.Everyone"], "write": [ALICE_ID]}
    assert replaced["data"]["t"] == 1


def test_put_with_permissions_only_keeps_the_data(alice):
    make(alice, "/buckets/b")
    alice.put("/buckets/b/collections/c", json={"data": {"title": "kept"}})
    body = body_of(alice.put("/buckets/b/collections/c", json={"permissions": {"read": [BOB_ID]}}))
    assert body["data"]["title"] == "kept"
    assert body["permissions"]["read"] == [BOB_ID]


def test_patch_merges_named_aces_and_null_leaves_them(alice):
    make(alice, "/buckets/b")
    alice.put("/buckets/b/groups/g", json={"permissions": {"read": [BOB_ID]}})
    body = body_of(alice.patch("/buckets/b/groups/g", json={"permissions": {"write": [BOB_ID]}}))
    assert body["permissions"] == {"read": [BOB_ID], "write": sorted([ALICE_ID, BOB_ID])}
    body = body_of(alice.patch("/buckets/b/groups/g", json={"permissions": {"read": None}}))
    assert body["permissions"]["read"] == [BOB_ID]
    body = body_of(alice.patch("/buckets/b/groups/g", json={"permissions": {"read": []}}))
    assert "read" not in body["permissions"]


def test_a_permissions_change_makes_the_editor_a_writer(alice):
    """A bucket writer who edits a record's ACL is added to its write ACE."""
    make(alice, "/buckets/b", "/buckets/b/collections/c", permissions={"write": [BOB_ID]})
    make(alice, "/buckets/b/collections/c/records/r")
    bob = alice.as_user(BOB)
    assert body_of(bob.get("/buckets/b/collections/c/records/r"))["permissions"] == {}
    body = body_of(
        bob.patch(
            "/buckets/b/collections/c/records/r",
            json={"permissions": {"read": ["system.Everyone"]}},
        )
    )
    assert body["permissions"] == {"read": ["system.Everyone"], "write": sorted([ALICE_ID, BOB_ID])}


def test_json_patch_on_permissions(alice):
    make(alice, "/buckets/b", "/buckets/b/collections/c")
    path = "/buckets/b/collections/c"
    json_patch = {"Content-Type": "application/json-patch+json"}
    body = body_of(
        alice.patch(
            path,
            headers=json_patch,
            json=[
                {"op": "add", "path": f"/permissions/read/{BOB_ID}"},
                {"op": "add", "path": "/permissions/record:create", "value": [BOB_ID]},
                {"op": "add", "path": "/data/title", "value": "t"},
            ],
        )
    )
    assert body["permissions"] == {"read": [BOB_ID], "record:create": [BOB_ID], "write": [ALICE_ID]}
    assert body["data"]["title"] == "t"
    body = body_of(
        alice.patch(
            path, headers=json_patch, json=[{"op": "remove", "path": f"/permissions/read/{BOB_ID}"}]
        )
    )
    assert "read" not in body["permissions"]
    # Kinto fills the value in for read and write members only.
    error = body_of(
        alice.patch(
            path,
            headers=json_patch,
            json=[{"op": "add", "path": f"/permissions/record:create/{ALICE_ID}"}],
        ),
        400,
    )
    assert error["message"].endswith("The operation does not contain a 'value' member")
    error = body_of(
        alice.patch(
            path, headers=json_patch, json=[{"op": "remove", "path": "/permissions/write/nobody"}]
        ),
        400,
    )
    assert error["message"].endswith("can't remove a non-existent object 'nobody'")


def test_unknown_permission_names_are_refused(alice):
    make(alice, "/buckets/b")
    error = body_of(
        alice.put("/buckets/b/groups/g", json={"permissions": {"record:create": [BOB_ID]}}), 400
    )
    assert error["errno"] == 107


# -- settings grants -------------------------------------------------------------


def test_settings_grant_as_kinto_checks_them(start_app):
    """``record_write_principals`` also reads, lists and creates records;
    ``bucket_write_principals`` reads any bucket but does not list them all,
    and makes a missing bucket a 404; ``collection_create_principals``
    creates collections in every bucket."""
    carol_id, dave_id = CAROL_ID, basicauth_id(DAVE)
    daemon = start_app(
        record_write_principals=BOB_ID,
        bucket_write_principals=carol_id,
        collection_create_principals=dave_id,
    )
    alice = Api(daemon, ALICE)
    make(alice, "/buckets/b", "/buckets/b/collections/c", "/buckets/b/collections/c/records/r")
    records = "/buckets/b/collections/c/records"
    bob, carol, dave = (alice.as_user(user) for user in (BOB, CAROL, DAVE))
    assert bob.get(f"{records}/r").status_code == 200
    assert [r["id"] for r in body_of(bob.get(records))["data"]] == ["r"]
    assert bob.post(records, json={"data": {}}).status_code == 201
    assert bob.get("/buckets/b/collections/c").status_code == 403
    assert carol.get("/buckets/b").status_code == 200
    assert body_of(carol.get("/buckets"))["data"] == []
    assert carol.delete("/buckets/nothing").status_code == 404
    assert dave.delete("/buckets/nothing").status_code == 403
    assert dave.post("/buckets/b/collections", json={"data": {"id": "d"}}).status_code == 201
    assert dave.get("/buckets/b/collections/c").status_code == 403


# -- groups ----------------------------------------------------------------------


def test_group_membership_changes_take_effect_at_once(alice):
    make(alice, "/buckets/b")
    make(alice, "/buckets/b/collections/shared", permissions={"read": ["/buckets/b/groups/team"]})
    bob = alice.as_user(BOB)
    assert bob.get("/buckets/b/collections/shared").status_code == 403
    alice.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    assert bob.get("/buckets/b/collections/shared").status_code == 200
    assert "/buckets/b/groups/team" in body_of(bob.get("/"))["user"]["principals"]
    alice.patch("/buckets/b/groups/team", json={"data": {"members": []}})
    assert bob.get("/buckets/b/collections/shared").status_code == 403
    alice.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    alice.delete("/buckets/b/groups/team")
    assert bob.get("/buckets/b/collections/shared").status_code == 403
    alice.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    alice.delete("/buckets/b/groups")  # plural delete
    assert bob.get("/buckets/b/collections/shared").status_code == 403


def test_a_group_of_system_authenticated_includes_every_user(alice):
    make(alice, "/buckets/b")
    alice.put("/buckets/b/groups/all", json={"data": {"members": ["system.Authenticated"]}})
    make(alice, "/buckets/b/collections/c", permissions={"read": ["/buckets/b/groups/all"]})
    assert alice.as_user(DAVE).get("/buckets/b/collections/c").status_code == 200
    assert alice.as_user(None).get("/buckets/b/collections/c").status_code == 401
    assert "/buckets/b/groups/all" in body_of(alice.as_user(DAVE).get("/"))["user"]["principals"]


def test_deleting_a_bucket_ends_the_memberships_of_its_groups(alice):
    """Unlike Kinto (README, Differences from Kinto): a group re-created
    with the same id in a re-created bucket does not list its old members."""
    make(alice, "/buckets/b")
    alice.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    bob = alice.as_user(BOB)
    assert "/buckets/b/groups/team" in body_of(bob.get("/"))["user"]["principals"]
    alice.delete("/buckets/b")
    assert "/buckets/b/groups/team" not in body_of(bob.get("/"))["user"]["principals"]
    make(alice, "/buckets/b")
    alice.put("/buckets/b/groups/team", json={"data": {"members": []}})
    make(alice, "/buckets/b/collections/c", permissions={"read": ["/buckets/b/groups/team"]})
    assert bob.get("/buckets/b/collections/c").status_code == 403


def test_another_daemon_changing_a_group_is_seen_at_once(start_server, tmp_path):
    first = start_server(tmp_path / "shared")
    second = start_server(tmp_path / "shared")
    alice_first, bob_second = Api(first, ALICE), Api(second, BOB)
    make(alice_first, "/buckets/b")
    make(alice_first, "/buckets/b/collections/c", permissions={"read": ["/buckets/b/groups/team"]})
    assert bob_second.get("/buckets/b/collections/c").status_code == 403  # index built here
    alice_first.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    assert bob_second.get("/buckets/b/collections/c").status_code == 200
    alice_first.patch("/buckets/b/groups/team", json={"data": {"members": []}})
    assert bob_second.get("/buckets/b/collections/c").status_code == 403
    alice_first.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    assert bob_second.get("/buckets/b/collections/c").status_code == 200
    alice_first.delete("/buckets/b/groups/team")
    assert bob_second.get("/buckets/b/collections/c").status_code == 403
    # and the other way round, while the first daemon's index is warm
    Api(second, ALICE).put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    assert Api(first, BOB).get("/buckets/b/collections/c").status_code == 200


# -- GET /v1/permissions -----------------------------------------------------------


def entries_by_uri(response):
    return {entry["uri"]: entry for entry in body_of(response)["data"]}


def test_permissions_endpoint_lists_own_grants_with_implied_ones(alice):
    make(alice, "/buckets/b")
    alice.put("/buckets/b/groups/team", json={"data": {"members": [BOB_ID]}})
    make(
        alice, "/buckets/b/collections/c", permissions={"record:create": ["/buckets/b/groups/team"]}
    )
    make(alice, "/buckets/b/collections/c/records/r", permissions={"read": [BOB_ID]})
    make(alice, "/buckets/other")

    bobs = entries_by_uri(alice.as_user(BOB).get("/permissions"))
    assert set(bobs) == {"/buckets/b/collections/c", "/buckets/b/collections/c/records/r", "/"}
    assert bobs["/buckets/b/collections/c"] == {
        "uri": "/buckets/b/collections/c",
        "resource_name": "collection",
        "permissions": ["read:attributes", "record:create"],
        "bucket_id": "b",
        "id": "c",
        "collection_id": "c",
    }
    assert bobs["/buckets/b/collections/c/records/r"]["permissions"] == ["read"]
    assert bobs["/buckets/b/collections/c/records/r"]["record_id"] == "r"
    assert bobs["/"] == {"uri": "/", "resource_name": "root", "permissions": ["bucket:create"]}

    alices = entries_by_uri(alice.get("/permissions"))
    assert alices["/buckets/b"]["permissions"] == [
        "collection:create",
        "group:create",
        "read",
        "read:attributes",
        "write",
    ]
    assert alices["/buckets/b/groups/team"]["permissions"] == ["read", "write"]
    assert alices["/buckets/b/groups/team"]["group_id"] == "team"
    assert "/buckets/other" in alices


def test_permissions_endpoint_filters_sorts_and_paginates(alice):
    for bucket in ("b1", "b2", "b3"):
        make(alice, f"/buckets/{bucket}")
    uris = [entry["uri"] for entry in body_of(alice.get("/permissions"))["data"]]
    assert uris == ["/buckets/b3", "/buckets/b2", "/buckets/b1", "/"], "newest uri first"
    page = alice.get("/permissions?_limit=2&_sort=uri")
    assert [e["uri"] for e in body_of(page)["data"]] == ["/", "/buckets/b1"]
    following = alice.get(page.headers["Next-Page"])
    assert [e["uri"] for e in body_of(following)["data"]] == ["/buckets/b2", "/buckets/b3"]
    assert "Next-Page" not in following.headers
    assert body_of(alice.get("/permissions?resource_name=bucket&_fields=uri"))["data"][0] == {
        "uri": "/buckets/b3",
        "id": "b3",
    }
    assert alice.head("/permissions?resource_name=bucket").headers["Total-Objects"] == "3"
    assert len(body_of(alice.get("/permissions?_since=1&last_modified=5"))["data"]) == 4
    for bad in ("foo=1", "permissions=read", "_sort=foo", "_fields=permissions"):
        assert body_of(alice.get(f"/permissions?{bad}"), 400)["errno"] == 107


def test_permissions_endpoint_for_anonymous_and_settings(start_app):
    daemon = start_app(
        experimental_permissions_endpoint="true",
        collection_read_principals=BOB_ID,
        permissions_read_principals="system.Authenticated",
    )
    alice = Api(daemon, ALICE)
    make(alice, "/buckets/b", "/buckets/b/collections/c")
    hello = body_of(alice.get("/"))
    assert "permissions_endpoint" in hello["capabilities"]
    anonymous = alice.as_user(None).get("/permissions")
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
    bobs = entries_by_uri(alice.as_user(BOB).get("/permissions"))
    assert bobs["/buckets/b/collections/c"]["permissions"] == ["read", "read:attributes"]
    assert alice.post("/permissions", json={}).status_code == 405


def test_permissions_endpoint_is_off_by_default(api):
    assert body_of(api.get("/permissions"), 404)["errno"] == 111
    assert "permissions_endpoint" not in body_of(api.get("/"))["capabilities"]


# -- the default bucket --------------------------------------------------------------


def test_personal_bucket_id_is_derived_as_kinto_does():
    from kintofs.plugins.default_bucket import personal_bucket_id

    userid_ = "basicauth:741990a963a80c63909bfb68ab5e86ed40af0662b5fd4013398e105e6d5fba94"
    assert personal_bucket_id("bucketsecret", userid_) == "6571b022-448c-0dd2-2a14-9e313c929a54"


def test_default_bucket_is_created_on_first_use(alice):
    hello = body_of(alice.get("/"))
    bucket_id = hello["user"]["bucket"]
    assert "default_bucket" in hello["capabilities"]
    listing = body_of(alice.get("/buckets/default/collections/tasks/records"))
    assert listing["data"] == []
    assert [b["id"] for b in body_of(alice.get("/buckets"))["data"]] == [bucket_id]
    bucket = body_of(alice.get("/buckets/default"))
    assert bucket["data"]["id"] == bucket_id
    assert bucket["permissions"] == {"write": [ALICE_ID]}
    collection = body_of(alice.get(f"/buckets/{bucket_id}/collections/tasks"))
    assert collection["permissions"] == {"write": [ALICE_ID]}
    assert alice.get("/buckets/default/groups/g").status_code == 404, "groups are not implicit"


def test_default_bucket_shows_the_real_id(alice):
    bucket_id = body_of(alice.get("/"))["user"]["bucket"]
    records = "/buckets/default/collections/tasks/records"
    for number in range(3):
        alice.post(records, json={"data": {"n": number}})
    page = alice.get(f"{records}?_limit=2")
    assert f"/v1/buckets/{bucket_id}/collections/tasks/records?" in page.headers["Next-Page"]
    real = alice.get(f"/buckets/{bucket_id}/collections/tasks/records")
    assert page.headers["ETag"] == real.headers["ETag"]
    created = body_of(
        alice.post("/buckets/default/collections", json={"data": {"id": "my-default"}}), 201
    )
    assert created["data"]["id"] == f"my-{bucket_id}"


def test_default_bucket_for_anonymous_and_bad_ids(alice):
    assert body_of(alice.as_user(None).get("/buckets/default"), 401)["errno"] == 104
    error = body_of(alice.get("/buckets/default/collections/in.valid/records"), 400)
    assert error["message"] == "path: Invalid collection id"


def test_default_bucket_put_is_not_an_implicit_creation(alice):
    created = body_of(alice.put("/buckets/default", json={"data": {"x": 1}}), 201)
    assert created["data"]["x"] == 1
    collection = body_of(alice.put("/buckets/default/collections/c", json={"data": {"y": 2}}), 201)
    assert collection["data"]["y"] == 2
    assert alice.delete("/buckets/default").status_code == 200
    assert body_of(alice.get("/buckets/default"))["data"].keys() == {"id", "last_modified"}


def test_default_bucket_in_a_batch_and_each_user_has_their_own(alice):
    response = body_of(
        alice.post(
            "/batch",
            json={
                "requests": [
                    {
                        "method": "PUT",
                        "path": "/buckets/default/collections/c/records/r",
                        "body": {"data": {}},
                    },
                    {"path": "/buckets/default/collections/c/records"},
                ]
            },
        )
    )
    statuses = [sub["status"] for sub in response["responses"]]
    assert statuses == [201, 200]
    assert [r["id"] for r in response["responses"][1]["body"]["data"]] == ["r"]
    bob = alice.as_user(BOB)
    assert body_of(bob.get("/buckets/default/collections/c/records"))["data"] == []
    alices_bucket = body_of(alice.get("/"))["user"]["bucket"]
    assert bob.get(f"/buckets/{alices_bucket}").status_code == 403


def test_default_bucket_with_kinto_http(start_server):
    import kinto_http

    # kinto-http makes its own requests sessions: a daemon with the same settings.
    daemon = start_server(**FULL_SETTINGS)
    alice = Api(daemon, ALICE)
    client = kinto_http.Client(
        server_url=daemon.url, auth=ALICE, bucket="default", collection="tasks"
    )
    client.create_record(data={"title": "milk"}, id="milk")
    assert [r["title"] for r in client.get_records()] == ["milk"]
    bucket_id = body_of(alice.get("/"))["user"]["bucket"]
    assert client.get_bucket()["data"]["id"] == bucket_id
    assert client.server_info()["user"]["bucket"] == bucket_id


def test_default_bucket_is_off_without_the_plugin(api):
    assert api.get("/buckets/default").status_code == 403
    assert "bucket" not in body_of(api.get("/"))["user"]


# -- kinto-http: sharing through a group ----------------------------------------------


@pytest.mark.daemon  # kinto-http makes its own requests sessions
def test_kinto_http_sharing_a_collection_through_a_group(api, server):
    import kinto_http
    from kinto_http.exceptions import KintoException

    def client(auth):
        return kinto_http.Client(
            server_url=server.url, auth=auth, bucket="team", collection="notes", timeout=30
        )

    alice, bob = client(ALICE), client(BOB)
    alice.create_bucket(id="team")
    alice.create_collection(id="notes")
    alice.create_record(id="n1", data={"text": "hello"})
    alice.create_collection(id="private")

    with pytest.raises(KintoException) as denied:
        bob.get_records()
    assert denied.value.response.status_code == 403

    alice.create_group(id="editors", data={"members": [BOB_ID]})
    alice.patch_collection(id="notes", permissions={"write": ["/buckets/team/groups/editors"]})
    assert "/buckets/team/groups/editors" in bob.server_info()["user"]["principals"]

    assert [r["id"] for r in bob.get_records()] == ["n1"]
    bob.update_record(id="n1", data={"text": "edited by bob"})
    bob.create_record(id="n2", data={"text": "bob's"})
    assert {r["id"] for r in alice.get_records()} == {"n1", "n2"}
    for forbidden in (
        lambda: bob.get_records(collection="private"),
        lambda: bob.update_bucket(id="team", data={"x": 1}),
        lambda: bob.update_group(id="editors", data={"members": []}),
        lambda: bob.create_collection(id="mine"),
    ):
        with pytest.raises(KintoException) as error:
            forbidden()
        assert error.value.response.status_code == 403
    assert [c["id"] for c in bob.get_collections()] == ["notes"]

    alice.create_record(id="n3", data={"text": "after"})
    alice.update_group(id="editors", data={"members": []})
    with pytest.raises(KintoException) as removed:
        bob.get_record(id="n3")
    assert removed.value.response.status_code == 403
    # what bob edited or created stays his: editors become explicit writers
    assert {r["id"] for r in bob.get_records()} == {"n1", "n2"}


# -- the principal index itself ----------------------------------------------------------


def test_membership_index_follows_changes_and_reloads(tmp_path):
    """Our writes update it; a write it was not told about (a group file
    changed behind its back) is seen after ``reload()``."""
    from kintofs.acl import MembershipIndex
    from kintofs.fsstore import FileSystemStore

    store = FileSystemStore(tmp_path / "data", fsync=False)
    index = MembershipIndex(store)

    def write_group(some_store, members):
        with some_store.list((), "bucket").transaction() as buckets:
            if buckets.get("b") is None:
                buckets.put("b", {}, {})
        with some_store.list((("bucket", "b"),), "group").transaction() as groups:
            return groups.put("team", {"members": members}, {})

    assert index.groups_of("bob") == []
    stored = write_group(store, ["bob"])
    index.object_changed("create", "group", "/buckets/b/groups/team", stored)
    assert index.groups_of("bob") == ["/buckets/b/groups/team"]

    behind_its_back = FileSystemStore(tmp_path / "data", fsync=False)
    write_group(behind_its_back, ["carol"])
    assert index.groups_of("bob") == ["/buckets/b/groups/team"], "not told: still the old view"
    index.reload()
    assert index.groups_of("bob") == []
    assert index.groups_of("carol") == ["/buckets/b/groups/team"]

    index.object_changed("delete", "bucket", "/buckets/b", {"id": "b", "deleted": True})
    assert index.groups_of("carol") == []

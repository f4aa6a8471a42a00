"""The accounts plugin (protocol 10.2) and ``kintofs account``, over HTTP.

The shared server (in process, see conftest) runs Kinto's usual accounts setup: anyone may sign up,
``account:admin`` administers and reads every account, and a wrong account
password falls back to basicauth.

The HTTP tests can be pointed at real Kinto to check the tests themselves:
``KINTOFS_ACCOUNTS_REFERENCE_URL=http://127.0.0.1:8871/v1`` with a Kinto
whose ini has the flush and accounts plugins, ``multiauth.policies = account
basicauth``, ``kinto.userid_hmac_secret = secret``,
``kinto.account_create_principals = system.Everyone`` and
``kinto.account_write_principals`` / ``kinto.account_read_principals =
account:admin``.  Tests of kintofs's own files, CLI and startup are skipped then.
"""

import json
import os
import subprocess
import sys
import time

import kinto_http
import pytest
from conftest import (
    SECRET,
    Api,
    Remote,
    assert_error,
    assert_status,
    basic_auth,
    basicauth_id,
    flush,
    make_server,
)

REFERENCE_URL = os.environ.get("KINTOFS_ACCOUNTS_REFERENCE_URL")
HMAC_SECRET = "secret" if REFERENCE_URL else SECRET
kintofs_only = pytest.mark.skipif(bool(REFERENCE_URL), reason="kintofs internals")

ACCOUNT_SETTINGS = {
    "plugins": "accounts flush",
    "auth_policies": "account basicauth",
    "account_create_principals": "system.Everyone",
    "account_write_principals": "account:admin",
    "account_read_principals": "account:admin",
    # Many tests try wrong passwords on purpose; the limiter has its own test here.
    "login_rate_limit": "0",
}
ADMIN = ("admin", "admin-pw")
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
MISMATCH = "Username and account ID do not match."


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory):
    if REFERENCE_URL:
        yield Remote(REFERENCE_URL)
        return
    server = make_server(tmp_path_factory.mktemp("accounts") / "data", **ACCOUNT_SETTINGS)
    yield server
    server.stop()


@pytest.fixture
def anon(accounts_server):
    """Anonymous requests to a flushed accounts server."""
    return flush(accounts_server).as_user(None)


@pytest.fixture
def accounts_daemon(start_server):
    """A flushed daemon with the same settings: kinto-http makes its own requests sessions."""
    if REFERENCE_URL:
        return flush(Remote(REFERENCE_URL)).daemon
    return start_server(**ACCOUNT_SETTINGS)


def signup(anon, auth, **fields):
    """Create an account anonymously, as a sign-up form would."""
    account_id, password = auth
    response = anon.put(
        f"/accounts/{account_id}", auth=None, json={"data": {"password": password, **fields}}
    )
    return assert_status(response, 201).json()


def user_id(api, auth):
    return api.get("/", auth=auth).json()["user"]["id"]


def assert_invalid(response, name, description):
    body = assert_error(response, 400, 107)
    assert body["details"] == [{"location": "body", "name": name, "description": description}]
    return body


# -- creation --------------------------------------------------------------


def test_anonymous_put_creates_account_owned_by_itself(anon):
    body = signup(anon, ALICE)
    assert body["permissions"] == {"write": ["account:alice"]}
    assert body["data"]["id"] == "alice"
    assert body["data"]["password"] != ALICE[1]
    assert user_id(anon, ALICE) == "account:alice"


def test_anonymous_post_creates_account(anon):
    response = anon.post("/accounts", json={"data": {"id": "bob", "password": BOB[1]}})
    body = assert_status(response, 201).json()
    assert body["permissions"] == {"write": ["account:bob"]}
    assert user_id(anon, BOB) == "account:bob"


@pytest.mark.parametrize("body", [{"data": {"password": "x"}}, {}, "{", None])
def test_anonymous_post_without_id_is_refused(anon, body):
    raw = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    response = anon.post("/accounts", data=raw, headers={"Content-Type": "application/json"})
    assert_invalid(response, "data.id", "data.id in body: Required")


def test_account_ids_follow_kinto_pattern(anon):
    signup(anon, ("e.mail+tag@example.org", "pw"))
    for bad in ("_x", "a:b", "a$b", ".x"):
        response = anon.put(f"/accounts/{bad}", json={"data": {"password": "x"}})
        assert_error(response, 400, 107, "path: Invalid object id")
    response = anon.post("/accounts", json={"data": {"id": "a$b", "password": "x"}})
    assert_error(response, 400, 107, "path: Invalid object id")


def test_creation_requires_a_password(anon):
    for request in (
        lambda body: anon.put("/accounts/dave", json=body),
        lambda body: anon.post("/accounts", json={"data": {"id": "dave", **body.get("data", {})}}),
    ):
        for data in ({}, {"password": None}, {"password": ""}):
            assert_invalid(request({"data": data}), "data.password", "Required")
    response = anon.put("/accounts/dave", json={"permissions": {"read": ["system.Everyone"]}})
    assert_invalid(response, "data", "Required")


@pytest.mark.parametrize(
    "value, text", [(12, "12"), (True, "True"), ([1], "[1]"), ({"a": 1}, "{'a': 1}"), (1.5, "1.5")]
)
def test_password_must_be_a_string(anon, value, text):
    response = anon.put("/accounts/dave", json={"data": {"password": value}})
    body = assert_invalid(response, "data.password", f"{text} is not a string: {{'password': ''}}")
    assert body["message"] == f"data.password in body: {text} is not a string: {{'password': ''}}"


def test_existing_id_cannot_be_taken_anonymously(anon):
    signup(anon, ALICE)
    for response in (
        anon.put("/accounts/alice", json={"data": {"password": "mine"}}),
        anon.post("/accounts", json={"data": {"id": "alice", "password": "mine"}}),
    ):
        assert_error(response, 401, 104)
        assert len(response.raw.headers.getlist("WWW-Authenticate")) == 2
    assert user_id(anon, ALICE) == "account:alice"


def test_post_of_own_existing_id_returns_the_account(anon):
    created = signup(anon, ALICE)
    response = anon.post(
        "/accounts", auth=ALICE, json={"data": {"id": "alice", "password": "ignored"}}
    )
    assert assert_status(response, 200).json() == created
    assert user_id(anon, ALICE) == "account:alice"


def test_non_admin_cannot_create_or_replace_other_accounts(anon):
    signup(anon, ALICE)
    signup(anon, BOB)
    carol = ("carol", "basic")  # a basicauth user, no account
    for auth in (ALICE, carol):
        for response in (
            anon.put("/accounts/bob", auth=auth, json={"data": {"password": "x"}}),
            anon.put("/accounts/zed", auth=auth, json={"data": {"password": "x"}}),
            anon.post("/accounts", auth=auth, json={"data": {"id": "bob", "password": "x"}}),
            anon.post("/accounts", auth=auth, json={"data": {"id": "zed", "password": "x"}}),
        ):
            body = assert_invalid(response, "data.id", MISMATCH)
            assert body["message"] == f"data.id in body: {MISMATCH}"
    assert user_id(anon, BOB) == "account:bob"
    signup(anon, ADMIN)
    assert_error(anon.get("/accounts/zed", auth=ADMIN), 404, 110)


def test_authenticated_post_without_id_is_refused(anon):
    response = anon.post("/accounts", auth=("carol", "basic"), json={"data": {"password": "x"}})
    assert_invalid(response, "data.id", "Accounts must have an ID.")


# -- reading and listing -----------------------------------------------------


def test_reading_accounts(anon):
    signup(anon, ALICE)
    signup(anon, BOB)
    own = assert_status(anon.get("/accounts/alice", auth=ALICE), 200).json()
    assert own["data"]["id"] == "alice"
    assert_error(anon.get("/accounts/bob", auth=ALICE), 403, 121)
    assert_error(anon.get("/accounts/nobody", auth=ALICE), 403, 121)
    response = anon.get("/accounts/alice")
    assert_error(response, 401, 104)
    assert response.raw.headers.getlist("WWW-Authenticate") == ['Basic realm="Realm"'] * 2


def test_account_shared_with_another_user_reads_as_missing(anon):
    # Kinto files each account under its own id: bob may read alice's, but
    # only ever looks among his own, so he gets a 404.
    signup(anon, ALICE)
    signup(anon, BOB)
    response = anon.patch(
        "/accounts/alice", auth=ALICE, json={"permissions": {"read": ["account:bob"]}}
    )
    assert assert_status(response, 200).json()["permissions"] == {
        "read": ["account:bob"],
        "write": ["account:alice"],
    }
    body = assert_error(anon.get("/accounts/alice", auth=BOB), 404, 110)
    assert body["details"] == {"id": "alice", "resource_name": "account"}
    assert [a["id"] for a in anon.get("/accounts", auth=BOB).json()["data"]] == ["bob"]


def test_anonymous_list_is_refused_without_challenge(anon):
    signup(anon, ALICE)
    for method in ("GET", "DELETE"):
        response = anon.request(method, "/accounts")
        assert_status(response, 401)
        assert response.json() == {"code": 401, "errno": 999, "error": "Cannot read accounts."}
        assert "WWW-Authenticate" not in response.headers
    assert_status(anon.head("/accounts"), 401)
    assert user_id(anon, ALICE) == "account:alice"


def test_non_admin_lists_only_own_account(anon):
    signup(anon, ALICE)
    signup(anon, BOB)
    body = assert_status(anon.get("/accounts", auth=ALICE), 200).json()
    assert [a["id"] for a in body["data"]] == ["alice"]
    assert anon.head("/accounts", auth=ALICE).headers["Total-Objects"] == "1"
    assert anon.get("/accounts", auth=("carol", "basic")).json() == {"data": []}


def test_admin_lists_every_account(anon):
    signup(anon, ADMIN)
    for auth in (ALICE, BOB):
        signup(anon, auth)
    body = assert_status(anon.get("/accounts?_sort=id", auth=ADMIN), 200).json()
    assert [a["id"] for a in body["data"]] == ["admin", "alice", "bob"]
    assert all(a["password"].startswith("$") for a in body["data"])
    body = anon.get("/accounts?id=bob&_fields=id", auth=ADMIN).json()
    assert [a["id"] for a in body["data"]] == ["bob"]
    assert_error(anon.get("/accounts?_limit=x", auth=ADMIN), 400, 107)


# -- changing and deleting ---------------------------------------------------


def test_password_change_with_patch_rehashes_and_old_password_stops_at_once(anon):
    created = signup(anon, ALICE)
    assert user_id(anon, ALICE) == "account:alice"  # now in the credentials cache
    response = anon.patch("/accounts/alice", auth=ALICE, json={"data": {"password": "new-pw"}})
    changed = assert_status(response, 200).json()["data"]
    assert changed["password"] not in ("new-pw", created["data"]["password"])
    assert user_id(anon, ALICE) == basicauth_id(ALICE, HMAC_SECRET)  # falls back at once
    assert_error(anon.get("/accounts/alice", auth=ALICE), 403, 121)
    assert user_id(anon, ("alice", "new-pw")) == "account:alice"


def test_password_change_with_put(anon):
    signup(anon, ALICE)
    response = anon.put(
        "/accounts/alice", auth=ALICE, json={"data": {"password": "put-pw", "name": "Alice"}}
    )
    assert assert_status(response, 200).json()["data"]["name"] == "Alice"
    assert user_id(anon, ("alice", "put-pw")) == "account:alice"
    assert user_id(anon, ALICE) == basicauth_id(ALICE, HMAC_SECRET)
    response = anon.put("/accounts/alice", auth=("alice", "put-pw"), json={"data": {"x": 1}})
    assert_invalid(response, "data.password", "Required")


def test_patch_without_password_keeps_the_hash(anon):
    created = signup(anon, ALICE)
    response = anon.patch("/accounts/alice", auth=ALICE, json={"data": {"age": 3}})
    data = assert_status(response, 200).json()["data"]
    assert data["password"] == created["data"]["password"]
    assert data["age"] == 3
    response = anon.patch("/accounts/alice", auth=ALICE, json={"permissions": {"read": ["x"]}})
    assert assert_status(response, 200).json()["data"]["password"] == created["data"]["password"]
    assert user_id(anon, ALICE) == "account:alice"


def test_patch_cannot_remove_or_retype_the_password(anon):
    signup(anon, ALICE)
    assert_invalid(
        anon.patch("/accounts/alice", auth=ALICE, json={"data": {"password": None}}),
        "password",
        "Required",
    )
    response = anon.patch("/accounts/alice", auth=ALICE, json={"data": {"password": 12}})
    body = assert_invalid(response, "password", "12 is not a string: {'password': ''}")
    assert body["message"] == "12 is not a string: {'password': ''}"
    response = anon.patch(
        "/accounts/alice",
        auth=ALICE,
        data=json.dumps({"data": {"password": None}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert_invalid(response, "password", "Required")
    assert user_id(anon, ALICE) == "account:alice"


@kintofs_only
def test_json_patch_of_password_is_hashed(anon):
    # Kinto stores such a password in clear and then fails every login (500).
    signup(anon, ALICE)
    response = anon.patch(
        "/accounts/alice",
        auth=ALICE,
        data=json.dumps([{"op": "replace", "path": "/data/password", "value": "patched-pw"}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert assert_status(response, 200).json()["data"]["password"].startswith("$scrypt$")
    assert user_id(anon, ("alice", "patched-pw")) == "account:alice"


def test_non_admin_cannot_touch_other_accounts(anon):
    signup(anon, ALICE)
    signup(anon, BOB)
    for path in ("/accounts/bob", "/accounts/nobody"):
        assert_error(anon.patch(path, auth=ALICE, json={"data": {"x": 1}}), 403, 121)
        assert_error(anon.delete(path, auth=ALICE), 403, 121)
    assert_error(anon.delete("/accounts/bob"), 401, 104)
    assert user_id(anon, BOB) == "account:bob"


def test_delete_own_account(anon):
    signup(anon, ALICE)
    response = anon.delete("/accounts/alice", auth=ALICE)
    body = assert_status(response, 200).json()
    assert body["data"]["deleted"] is True and body["data"]["id"] == "alice"
    assert user_id(anon, ALICE) == basicauth_id(ALICE, HMAC_SECRET)
    signup(anon, ALICE)  # the id is free again


def test_admin_manages_other_accounts(anon):
    signup(anon, ADMIN)
    signup(anon, ALICE)
    response = anon.put("/accounts/ivan", auth=ADMIN, json={"data": {"password": "ivan-pw"}})
    assert assert_status(response, 201).json()["permissions"] == {"write": ["account:ivan"]}
    response = anon.post("/accounts", auth=ADMIN, json={"data": {"id": "jane", "password": "j"}})
    assert assert_status(response, 201).json()["permissions"] == {"write": ["account:jane"]}
    assert_invalid(
        anon.post("/accounts", auth=ADMIN, json={"data": {"password": "j"}}),
        "data.id",
        "data.id in body: Required",
    )
    body = assert_status(anon.get("/accounts/alice", auth=ADMIN), 200).json()
    assert body["permissions"] == {"write": ["account:alice"]}
    response = anon.patch("/accounts/alice", auth=ADMIN, json={"data": {"password": "reset"}})
    assert assert_status(response, 200).json()["permissions"] == {"write": ["account:alice"]}
    assert user_id(anon, ("alice", "reset")) == "account:alice"
    assert_error(anon.patch("/accounts/nobody", auth=ADMIN, json={"data": {}}), 404, 110)
    assert_error(anon.delete("/accounts/nobody", auth=ADMIN), 404, 110)
    assert_status(anon.delete("/accounts/ivan", auth=ADMIN), 200)
    assert user_id(anon, ("ivan", "ivan-pw")) == basicauth_id(("ivan", "ivan-pw"), HMAC_SECRET)


def test_admin_deletes_every_account(anon):
    for auth in (ADMIN, ALICE, BOB):
        signup(anon, auth)
    body = assert_status(anon.delete("/accounts?_sort=id", auth=ADMIN), 200).json()
    assert [(t["id"], t["deleted"]) for t in body["data"]] == [
        ("admin", True),
        ("alice", True),
        ("bob", True),
    ]
    assert user_id(anon, ALICE) == basicauth_id(ALICE, HMAC_SECRET)


def test_non_admin_plural_delete_removes_only_own_account(anon):
    signup(anon, ALICE)
    signup(anon, BOB)
    body = assert_status(anon.delete("/accounts", auth=ALICE), 200).json()
    assert [t["id"] for t in body["data"]] == ["alice"]
    assert user_id(anon, BOB) == "account:bob"
    assert anon.delete("/accounts", auth=("carol", "basic")).json() == {"data": []}


def test_accounts_in_a_batch(anon):
    response = anon.post(
        "/batch",
        json={
            "requests": [
                {
                    "method": "PUT",
                    "path": "/accounts/alice",
                    "body": {"data": {"password": ALICE[1]}},
                },
                {
                    "method": "GET",
                    "path": "/accounts/alice",
                    "headers": {"Authorization": basic_auth(ALICE)},
                },
            ]
        },
    )
    statuses = [r["status"] for r in assert_status(response, 200).json()["responses"]]
    assert statuses == [201, 200]


def test_cors_preflight_on_accounts(anon):
    for path, method, allowed in (
        ("/accounts", "POST", "HEAD,GET,POST,DELETE,OPTIONS"),
        ("/accounts/alice", "PATCH", "GET,HEAD,PUT,PATCH,DELETE,OPTIONS"),
    ):
        response = anon.request(
            "OPTIONS",
            path,
            headers={"Origin": "http://example.com", "Access-Control-Request-Method": method},
        )
        assert assert_status(response, 200).headers["Access-Control-Allow-Methods"] == allowed


# -- authentication ------------------------------------------------------------


def test_capability_and_hello(anon):
    hello = anon.get("/").json()
    assert hello["capabilities"]["accounts"] == {
        "description": "Manage user accounts.",
        "url": "https://kinto.readthedocs.io/en/latest/api/1.x/accounts.html",
        "validation_enabled": False,
    }
    signup(anon, ALICE)
    user = anon.get("/", auth=ALICE).json()["user"]
    assert user["id"] == "account:alice"
    assert "account:alice" in user["principals"]


def test_wrong_password_falls_back_to_basicauth(anon):
    signup(anon, ALICE)
    assert user_id(anon, ("alice", "wrong")) == basicauth_id(("alice", "wrong"), HMAC_SECRET)
    assert user_id(anon, ("nobody", "pw")) == basicauth_id(("nobody", "pw"), HMAC_SECRET)
    assert user_id(anon, ALICE) == "account:alice"


def test_account_creates_and_owns_a_bucket(anon):
    signup(anon, ALICE)
    response = anon.put("/buckets/alices", auth=ALICE)
    assert assert_status(response, 201).json()["permissions"] == {"write": ["account:alice"]}
    assert_error(anon.get("/buckets/alices", auth=("alice", "wrong")), 403, 121)


# -- kintofs's own files, cache, CLI and startup ------------------------------


@kintofs_only
def test_password_is_stored_hashed_on_disk(anon, accounts_server):
    signup(anon, ALICE)
    folder = os.path.join(accounts_server.data_dir, "accounts")
    with open(os.path.join(folder, "alice.json"), encoding="utf-8") as f:
        text = f.read()
    stored = json.loads(text)
    assert ALICE[1] not in text
    assert stored["password"].startswith("$scrypt$ln=13,r=8,p=1$")
    with open(os.path.join(folder, "alice.acl"), encoding="utf-8") as f:
        assert json.load(f) == {"write": ["account:alice"]}


@kintofs_only
def test_credentials_cache_spares_the_hash(anon):
    signup(anon, ALICE)
    anon.get("/", auth=ALICE)  # verified once, then remembered

    def best_of(auth, tries=5):
        timings = []
        for _ in range(tries):
            start = time.perf_counter()
            assert_status(anon.get("/", auth=auth), 200)
            timings.append(time.perf_counter() - start)
        return min(timings)

    cached = best_of(ALICE)
    with_hash = best_of(("alice", "wrong-but-remembered-too"), tries=1)  # first check hashes
    assert cached < with_hash


def run_cli(data_dir, *args, password=None, plugins="accounts"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update({"KINTOFS_PLUGINS": plugins, "KINTOFS_FSYNC": "false"})
    stdin_args = ["--password-stdin"] if password is not None else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kintofs",
            "account",
            *args,
            *stdin_args,
            "--data-dir",
            str(data_dir),
            "--config",
            os.devnull,
        ],
        input=(password + "\n") if password is not None else "",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@kintofs_only
def test_cli_accounts_log_in_over_http(tmp_path, start_app):
    data_dir = tmp_path / "data"
    added = run_cli(data_dir, "add", "admin", password="admin-pw")
    assert added.returncode == 0, added.stderr
    stored = json.loads((data_dir / "accounts" / "admin.json").read_text())
    assert stored["password"].startswith("$scrypt$") and "admin-pw" not in json.dumps(stored)
    assert json.loads((data_dir / "accounts" / "admin.acl").read_text()) == {
        "write": ["account:admin"]
    }

    daemon = start_app(data_dir=data_dir, **ACCOUNT_SETTINGS)
    api = Api(daemon, auth=None)
    assert user_id(api, ADMIN) == "account:admin"

    # While the daemon runs: the CLI's changes count at once.
    assert run_cli(data_dir, "add", "alice", password="alice-pw").returncode == 0
    assert user_id(api, ALICE) == "account:alice"
    signup(api, BOB)
    listed = run_cli(data_dir, "list")
    assert listed.stdout.split() == ["admin", "alice", "bob"]

    assert run_cli(data_dir, "passwd", "alice", password="changed").returncode == 0
    assert user_id(api, ALICE) == basicauth_id(ALICE, HMAC_SECRET)  # cached, yet refused at once
    assert user_id(api, ("alice", "changed")) == "account:alice"
    assert run_cli(data_dir, "passwd", "bob", password="bob-new").returncode == 0
    assert user_id(api, ("bob", "bob-new")) == "account:bob"

    assert run_cli(data_dir, "del", "alice").returncode == 0
    assert user_id(api, ("alice", "changed")) == basicauth_id(("alice", "changed"), HMAC_SECRET)
    body = api.get("/accounts?_since=0&_sort=id", auth=ADMIN).json()
    assert [(a["id"], a.get("deleted", False)) for a in body["data"]] == [
        ("admin", False),
        ("alice", True),
        ("bob", False),
    ]


@kintofs_only
def test_cli_refusals(tmp_path):
    data_dir = tmp_path / "data"
    assert run_cli(data_dir, "add", "alice", password="pw").returncode == 0
    cases = [
        (("add", "alice"), "pw", 1, "already exists"),
        (("passwd", "nobody"), "pw", 1, "no account 'nobody'"),
        (("del", "nobody"), None, 1, "no account 'nobody'"),
        (("add", "bad:id"), "pw", 1, "not a valid account id"),
        (("add", "carol"), "", 1, "password is empty"),
    ]
    for args, password, status, message in cases:
        result = run_cli(data_dir, *args, password=password)
        assert result.returncode == status, (args, result.stderr)
        assert message in result.stderr
    result = run_cli(data_dir, "add", "dave", password="pw", plugins="flush")
    assert result.returncode == 2 and "accounts plugin is not enabled" in result.stderr
    assert not (data_dir / "accounts" / "dave.json").exists()
    result = run_cli(data_dir, "passwd", "alice")  # no terminal, no --password-stdin
    assert result.returncode == 1 and "nothing changed" in result.stderr
    assert run_cli(data_dir, "list").stdout.split() == ["alice"]


def serve_exit(tmp_path, **settings):
    """Run ``kintofs serve`` with settings that must stop it: (status, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update({f"KINTOFS_{k.upper()}": v for k, v in settings.items()})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kintofs",
            "serve",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            os.devnull,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return result.returncode, result.stderr


@kintofs_only
def test_wrong_account_passwords_count_as_failed_logins(start_app):
    daemon = start_app(**{**ACCOUNT_SETTINGS, "login_rate_limit": "3"})
    api = Api(daemon, auth=None)
    signup(api, ALICE)
    for _ in range(3):
        assert user_id(api, ("alice", "guess")) == basicauth_id(("alice", "guess"), HMAC_SECRET)
    assert_error(api.get("/", auth=ALICE), 429, 117)


@kintofs_only
def test_startup_refuses_creators_who_are_not_administrators(tmp_path):
    status, stderr = serve_exit(
        tmp_path, **{**ACCOUNT_SETTINGS, "account_create_principals": "account:bob"}
    )
    assert status == 2
    assert "account_create_principals" in stderr and "account:bob" in stderr
    assert "Traceback" not in stderr


@kintofs_only
def test_startup_refuses_basicauth_before_account(tmp_path):
    status, stderr = serve_exit(
        tmp_path, **{**ACCOUNT_SETTINGS, "auth_policies": "basicauth account"}
    )
    assert status == 2 and "'basicauth' should not be mentioned before 'account'" in stderr


@kintofs_only
def test_without_sign_up_only_admins_create(start_app):
    # account_create_principals = [] : anonymous and ordinary users may not create.
    daemon = start_app(**{**ACCOUNT_SETTINGS, "account_create_principals": ""})
    api = Api(daemon, auth=None)
    assert_error(api.put("/accounts/alice", json={"data": {"password": "x"}}), 401, 104)
    assert_error(api.get("/accounts"), 401, 104)
    assert_invalid(
        api.post("/accounts", json={"data": {"password": "x"}}),
        "data.id",
        "data.id in body: Required",
    )
    carol = ("carol", "basic")
    assert_error(api.get("/accounts", auth=carol), 403, 121)
    assert_error(api.put("/accounts/carol", auth=carol, json={"data": {"password": "x"}}), 403, 121)


@kintofs_only
def test_admin_without_read_principals_lists_own_account_only(start_app):
    daemon = start_app(**{**ACCOUNT_SETTINGS, "account_read_principals": ""})
    api = Api(daemon, auth=None)
    signup(api, ADMIN)
    signup(api, ALICE)
    assert [a["id"] for a in api.get("/accounts", auth=ADMIN).json()["data"]] == ["admin"]
    assert_status(api.get("/accounts/alice", auth=ADMIN), 200)  # write implies read
    body = assert_status(api.delete("/accounts?_sort=id", auth=ADMIN), 200).json()
    assert [t["id"] for t in body["data"]] == ["admin", "alice"]


# -- the real kinto-http client ------------------------------------------------


def test_kinto_http_client_as_an_account(accounts_daemon):
    anonymous = kinto_http.Client(server_url=accounts_daemon.url, timeout=30)
    body, _ = anonymous.session.request("put", "/accounts/alice", data={"password": ALICE[1]})
    assert body["permissions"] == {"write": ["account:alice"]}

    alice = kinto_http.Client(server_url=accounts_daemon.url, auth=ALICE, timeout=30)
    assert alice.server_info()["user"]["id"] == "account:alice"
    bucket = alice.create_bucket(id="notes")
    assert bucket["permissions"]["write"] == ["account:alice"]
    alice.create_collection(id="todo", bucket="notes")
    record = alice.create_record(data={"title": "milk"}, bucket="notes", collection="todo")
    assert (
        alice.get_record(id=record["data"]["id"], bucket="notes", collection="todo")["data"][
            "title"
        ]
        == "milk"
    )
    account, _ = alice.session.request("get", "/accounts/alice")
    assert account["data"]["id"] == "alice"

    stranger = kinto_http.Client(
        server_url=accounts_daemon.url, auth=("alice", "wrong"), timeout=30
    )
    with pytest.raises(kinto_http.KintoException) as raised:
        stranger.get_bucket(id="notes")
    assert raised.value.response.status_code == 403

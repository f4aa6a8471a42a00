"""The change feed (kintofs/feed.py), in-process through the WSGI app.

Every write the API makes reaches subscribers as one Change, at both
moments, the same way for create, update and delete.
"""

import base64
import io
import json
import os
import threading
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import ALICE, SECRET, basicauth_id

from kintofs.config import load_settings
from kintofs.feed import AFTER_COMMIT, IN_COMMIT
from kintofs.server import build_app


@pytest.fixture
def service(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("KINTOFS_")]:
        monkeypatch.delenv(name)
    settings = load_settings(os.devnull, overrides={"data_dir": str(tmp_path / "data")})
    settings.update(fsync=False, userid_hmac_secret=SECRET, plugins=[])
    app, service = build_app(settings)
    service.call = lambda *args, **kwargs: call(app, *args, **kwargs)
    return service


def call(app, method, path, body=None):
    environ = {}
    setup_testing_defaults(environ)
    raw = json.dumps(body).encode() if body is not None else b""
    environ.update(
        {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(raw)),
            "wsgi.input": io.BytesIO(raw),
            "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(":".join(ALICE).encode()).decode(),
        }
    )
    status = []
    chunks = app(environ, lambda s, headers, exc_info=None: status.append(int(s[:3])))
    content = b"".join(chunks)
    return status[0], json.loads(content) if content else None


def test_every_write_is_one_change_told_at_both_moments(service):
    seen = []
    service.feed.subscribe(lambda change: seen.append((IN_COMMIT, change)), IN_COMMIT)
    service.feed.subscribe(lambda change: seen.append((AFTER_COMMIT, change)), AFTER_COMMIT)
    service.call("PUT", "/v1/buckets/b")
    service.call("PUT", "/v1/buckets/b/collections/c")
    _, created = service.call("PUT", "/v1/buckets/b/collections/c/records/r1", {"data": {"n": 1}})
    _, updated = service.call("PATCH", "/v1/buckets/b/collections/c/records/r1", {"data": {"n": 2}})
    _, deleted = service.call("DELETE", "/v1/buckets/b/collections/c/records/r1")

    assert [(moment, c.action, c.kind, c.id) for moment, c in seen] == [
        (moment, action, kind, object_id)
        for action, kind, object_id in [
            ("create", "bucket", "b"),
            ("create", "collection", "c"),
            ("create", "record", "r1"),
            ("update", "record", "r1"),
            ("delete", "record", "r1"),
        ]
        for moment in (IN_COMMIT, AFTER_COMMIT)
    ]
    records = [change for moment, change in seen if moment == IN_COMMIT and change.kind == "record"]
    create, update, delete = records
    assert create.parent == (("bucket", "b"), ("collection", "c"))
    assert create.uri == "/buckets/b/collections/c/records/r1"
    assert create.userid == basicauth_id(ALICE)
    assert create.old is None and create.data == created["data"]
    assert update.old[0] == created["data"] and update.data == updated["data"]
    assert update.timestamp == updated["data"]["last_modified"]
    assert delete.old[0] == updated["data"] and delete.new == (deleted["data"], {})
    assert delete.acl == {} and delete.data["deleted"] is True


def test_in_commit_the_change_is_pending_and_the_list_locked(service):
    service.call("PUT", "/v1/buckets/b")
    service.call("PUT", "/v1/buckets/b/collections/c")
    records = service.store.list((("bucket", "b"), ("collection", "c")), "record")
    observed = {}

    def in_commit(change):
        observed["on_disk"] = os.path.exists(os.path.join(records.folder, "r1.json"))
        observed["seen_here"] = records.get("r1").data  # the commit's own thread
        elsewhere = []
        reader = threading.Thread(target=lambda: elsewhere.append(records.get("r1")))
        reader.start()
        reader.join(10)
        observed["seen_elsewhere"] = elsewhere
        observed["locked"] = records._write_guard.locked()  # noqa: SLF001 (what the test checks)

    def after_commit(change):
        with open(os.path.join(records.folder, "r1.json")) as f:
            observed["after_on_disk"] = json.load(f)
        with records.transaction() as writer:  # the lock is free again: no deadlock
            observed["after"] = writer.get("r1").data

    service.feed.subscribe(in_commit, IN_COMMIT)
    service.feed.subscribe(after_commit, AFTER_COMMIT)
    status, body = service.call("PUT", "/v1/buckets/b/collections/c/records/r1", {"data": {}})
    assert status == 201
    assert observed == {
        "on_disk": False,
        "seen_here": body["data"],
        "seen_elsewhere": [None],
        "locked": True,
        "after_on_disk": body["data"],
        "after": body["data"],
    }


def test_a_plural_delete_is_one_change_per_object(service):
    service.call("PUT", "/v1/buckets/b")
    service.call("PUT", "/v1/buckets/b/collections/c")
    for name in ("r1", "r2", "r3"):
        service.call("PUT", f"/v1/buckets/b/collections/c/records/{name}", {"data": {}})
    seen = []
    service.feed.subscribe(lambda change: seen.append((change.action, change.id)), IN_COMMIT)
    status, body = service.call("DELETE", "/v1/buckets/b/collections/c/records")
    assert status == 200
    assert sorted(seen) == [("delete", "r1"), ("delete", "r2"), ("delete", "r3")]


def test_an_in_commit_failure_fails_the_request_an_after_commit_one_does_not(service):
    service.call("PUT", "/v1/buckets/b")

    def refuse(change):
        if change.id == "bad":
            raise RuntimeError("in-commit work failed")

    def broken(change):
        raise RuntimeError("after-commit work failed")

    service.feed.subscribe(refuse, IN_COMMIT)
    service.feed.subscribe(broken, AFTER_COMMIT)
    assert service.call("PUT", "/v1/buckets/b/collections/bad")[0] == 500
    assert service.call("GET", "/v1/buckets/b/collections/bad")[0] == 404, "nothing stored"
    assert not os.path.exists(os.path.join(service.store.root, "buckets/b/collections/bad"))
    assert service.call("PUT", "/v1/buckets/b/collections/good")[0] == 201

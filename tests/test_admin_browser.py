"""Kinto Admin served by the admin plugin (issue 16), over HTTP and in a browser.

The HTTP tests serve a small stand-in build made in a temp folder: routes,
types, caching, the Content-Security-Policy of the page, traversal attempts
and the start-up errors, as Kinto's ``kinto.plugins.admin`` answers them.

The browser test drives the real Kinto Admin: its build is taken from the
``kinto==25.0.0`` wheel on PyPI (``pip download``, then the wheel's
``kinto/plugins/admin/build/`` folder), kept in pytest's cache folder
(``.pytest_cache``, git-ignored) so that reruns download nothing.  Headless
Chromium, launched as tests/test_push_browser.py does, signs in with Basic
auth, creates a bucket, a collection and a record, edits the record and
reads the collection's history, and each step is checked on the server.
Without chromium or playwright, or when PyPI cannot be reached, it skips.
"""

import os
import subprocess
import sys
import time
import zipfile
from email.utils import formatdate

import pytest
from conftest import ALICE, Api, assert_error, assert_status, raw_exchange

from kintofs.config import ConfigError

ADMIN_CSP = (
    "default-src 'self'; img-src data: *; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'"
)
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
KINTO_WHEEL = "kinto==25.0.0"  # the newest kinto wheel that carries a Kinto Admin build
WHEEL_BUILD = "kinto/plugins/admin/build/"


@pytest.fixture
def fake_build(tmp_path):
    """A build folder with a few files, beside a file it must never serve."""
    build = tmp_path / "build"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text("<!DOCTYPE html><title>Kinto Administration</title>")
    (build / "VERSION").write_text("6.2.0\n")
    (build / "assets" / "index-1.js").write_text("console.log('admin')")
    (build / "assets" / "index-1.css").write_text("body{}")
    (build / "assets" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (build / "assets" / "link.txt").symlink_to(tmp_path / "secret.txt")
    return build


@pytest.fixture
def admin_api(start_app, fake_build):
    return Api(start_app(plugins="admin", admin_assets_path=str(fake_build)))


def test_capability_as_kinto(admin_api):
    hello = assert_status(admin_api.get("/"), 200).json()
    assert hello["capabilities"]["admin"] == {
        "version": "6.2.0",
        "description": "Serves the admin console.",
        "url": "https://github.com/Kinto/kinto-admin/",
    }


def test_redirect_then_index_with_the_admin_csp(admin_api):
    moved = assert_status(admin_api.get("/admin"), 307)
    assert moved.headers["Location"] == admin_api.daemon.url + "/admin/"
    home = assert_status(admin_api.get("/admin/"), 200)
    assert home.text == "<!DOCTYPE html><title>Kinto Administration</title>"
    assert home.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert home.headers["Content-Security-Policy"] == ADMIN_CSP
    assert "Cache-Control" not in home.headers  # as Kinto's home view
    assert assert_status(admin_api.head("/admin/"), 200).content == b""
    # Every other answer keeps the strict policy.
    assert assert_status(admin_api.get("/"), 200).headers["Content-Security-Policy"] == STRICT_CSP
    assert_error(admin_api.post("/admin/"), 405, 115)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("assets/index-1.js", "text/javascript; charset=UTF-8"),
        ("assets/index-1.css", "text/css; charset=UTF-8"),
        ("assets/logo.png", "image/png"),
        ("VERSION", "application/octet-stream"),
        ("index.html", "text/html; charset=UTF-8"),
    ],
)
def test_static_files_with_types_and_an_hour_of_cache(admin_api, fake_build, path, content_type):
    response = assert_status(admin_api.get("/admin/" + path), 200)
    assert response.content == (fake_build / path).read_bytes()
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Cache-Control"] == "max-age=3600"
    assert "Expires" in response.headers
    assert response.headers["Content-Security-Policy"] == STRICT_CSP
    modified = response.headers["Last-Modified"]
    assert modified == formatdate(os.stat(fake_build / path).st_mtime, usegmt=True)
    again = admin_api.get("/admin/" + path, headers={"If-Modified-Since": modified})
    assert_status(again, 304)


@pytest.mark.parametrize("path", ["nope.js", "buckets/b", "assets", "assets/", "assets/link.txt"])
def test_no_fallback_to_index_and_no_folders(admin_api, path):
    # Kinto Admin routes with #/..., so Kinto serves files only: 404 otherwise.
    response = admin_api.get("/admin/" + path)
    if response.status_code == 307:  # "assets/": the trailing-slash redirect, as any path
        response = admin_api.get(response.headers["Location"])
    assert_error(response, 404, 111, "The resource you are looking for could not be found.")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/../../secret.txt",
        "/v1/admin/assets/../../secret.txt",
        "/v1/admin/%2e%2e/secret.txt",
        "/v1/admin/..%2fsecret.txt",
        "/v1/admin/assets/..%2f..%2fsecret.txt",
        "/v1/admin/%2fetc%2fpasswd",
        "/v1/admin//etc/passwd",
        "/v1/admin/assets/link.txt",
        "/v1/admin/..%5csecret.txt",
        "/v1/admin/%00",
    ],
)
def test_nothing_outside_the_build_is_served(start_server, fake_build, path):
    daemon = start_server(plugins="admin", admin_assets_path=str(fake_build))
    # Raw bytes: an HTTP client would remove the dot segments itself.
    reply = raw_exchange(daemon.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status = reply.split(b"\r\n", 1)[0]
    assert status.split()[1] in (b"400", b"404"), reply[:300]
    assert b"TOP SECRET" not in reply
    assert b"root:" not in reply


def test_a_missing_or_empty_assets_path_stops_the_daemon(start_app, tmp_path):
    (tmp_path / "empty").mkdir()
    for value in ("", str(tmp_path / "absent"), str(tmp_path / "empty")):
        with pytest.raises(ConfigError, match="Kinto Admin build") as raised:
            start_app(plugins="admin", admin_assets_path=value)
        assert raised.value.key == "admin_assets_path"
    # On the command line: one line naming the setting, exit code 2.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update(KINTOFS_PLUGINS="admin", KINTOFS_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-m", "kintofs", "serve", "--port", "1", "--config", os.devnull],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "admin_assets_path" in done.stderr and "kinto==25.0.0" in done.stderr
    assert "Traceback" not in done.stderr


# -- the real Kinto Admin in a browser -----------------------------------------


@pytest.fixture(scope="session")
def kinto_admin_build(request):
    """The Kinto Admin build of the kinto wheel on PyPI, cached between runs."""
    cache = request.config.cache.mkdir("kinto-admin-" + KINTO_WHEEL.split("==")[1])
    build = cache / "build"
    if (build / "index.html").is_file():
        return build
    download = cache / "download"
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", KINTO_WHEEL, "--no-deps", "-d", str(download)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if fetched.returncode != 0:
        pytest.skip(f"could not download {KINTO_WHEEL} from PyPI: {fetched.stderr[-300:]}")
    (wheel,) = download.glob("kinto-*.whl")
    unpacked = cache / f"unpacking-{os.getpid()}"
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith(WHEEL_BUILD)]
        archive.extractall(unpacked, members)
    os.replace(unpacked / WHEEL_BUILD, build)  # complete, or not there
    return build


def test_kinto_admin_in_a_browser(start_server, kinto_admin_build):
    push_browser = pytest.importorskip("test_push_browser")  # its chromium, or its skip
    daemon = start_server(
        plugins="admin history",
        admin_assets_path=str(kinto_admin_build),
        experimental_permissions_endpoint="true",
    )
    api = Api(daemon, ALICE)
    admin = daemon.url + "/admin/"
    with push_browser.sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=push_browser.CHROMIUM,
            headless=True,
            args=["--no-proxy-server", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            blocked = []  # what the page's CSP stopped, if anything
            page.on(
                "console",
                lambda message: (
                    blocked.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            drive_kinto_admin(page, admin, api)
            assert blocked == []
        finally:
            browser.close()


def sign_in(page, admin):
    page.goto(admin)
    page.get_by_label("Basic Auth").check()
    page.fill("#root_credentials_username", ALICE[0])
    page.fill("#root_credentials_password", ALICE[1])
    page.get_by_role("button", name="Sign in using Basic Auth").click()
    page.get_by_text("Connected as").wait_for()


def wait_for_server(check, timeout=20):
    """``check()`` until it returns something true (the page writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "the server never saw the page's write"
        time.sleep(0.1)
    return found


def drive_kinto_admin(page, admin, api):
    sign_in(page, admin)
    userid = api.get("/").json()["user"]["id"]
    assert page.get_by_text(f"Connected as {userid}").count() == 1

    page.goto(admin + "#/buckets/create")
    page.fill("#root_id", "notes")
    page.get_by_role("button", name="Create bucket").click()
    page.wait_for_url("**/#/buckets/notes/attributes")
    bucket = assert_status(api.get("/buckets/notes"), 200).json()
    assert userid in bucket["permissions"]["write"]

    # Kinto Admin reads the caller's permissions (/v1/permissions) when it
    # loads: a reload shows what the new bucket lets alice do.
    page.reload()
    page.get_by_text("Connected as").wait_for()
    page.get_by_role("link", name="Create collection").first.click()
    page.fill("#root_id", "todo")
    page.get_by_role("button", name="Create collection").click()
    page.wait_for_url("**/#/buckets/notes/collections/todo/records")
    assert_status(api.get("/buckets/notes/collections/todo"), 200)

    page.get_by_role("link", name="Create record").click()

    page.fill("#root_title", "Buy milk")
    page.fill("#root_content", "two bottles")
    page.get_by_role("button", name="Create record").click()
    page.get_by_text("Record created").wait_for()
    records = "/buckets/notes/collections/todo/records"
    (record,) = wait_for_server(lambda: api.get(records).json()["data"])
    assert (record["title"], record["content"]) == ("Buy milk", "two bottles")

    page.goto(admin + f"#{records}/{record['id']}/attributes")
    page.wait_for_selector("#root_title")
    page.fill("#root_title", "Buy oat milk")
    page.get_by_role("button", name="Update record").click()
    page.get_by_text("Record updated").wait_for()
    edited = api.get(f"{records}/{record['id']}").json()["data"]
    assert (edited["title"], edited["content"]) == ("Buy oat milk", "two bottles")
    assert edited["last_modified"] > record["last_modified"]
    page.locator(".content table").get_by_text("Buy oat milk").wait_for()  # the list shows it

    page.goto(admin + "#/buckets/notes/collections/todo/history")
    page.get_by_text("History for notes/todo").wait_for()
    rows = page.locator(".content table tbody tr").filter(has_text=record["id"])
    rows.first.wait_for()
    shown = [" ".join(row.split()) for row in rows.all_inner_texts()]
    assert [text.split()[2:4] for text in shown if "record" in text] == [
        ["update", "record"],
        ["create", "record"],
    ]
    entries = api.get("/buckets/notes/history", params={"resource_name": "record"}).json()["data"]
    assert [(e["action"], e["record_id"]) for e in entries] == [
        ("update", record["id"]),
        ("create", record["id"]),
    ]

"""Full and read-only disks: writes fail cleanly, reads go on, nothing is half written.

Each test runs twice when it can:

* ``tmpfs``: the daemon's data directory is a 2 MiB tmpfs that the test mounts
  (we run as root in CI), fills with a ballast file until the kernel answers
  ENOSPC, or remounts read-only (EROFS).  Skipped where mounting is not
  permitted.
* ``injected``: where mounting is not possible, and always as a second
  opinion, the storage layer is told through the test-only environment
  variable ``KFS_TEST_DISK_FAULT_FILE`` to fail every write with ENOSPC or
  EROFS while a flag file exists (kintofs/fsstore/atomic.py).

Expected: a refused write answers 507 errno 201 with ``Retry-After`` and
leaves every file as it was (compared byte for byte); reads keep working;
writes work again once space is freed, and what was refused never comes back
after a restart.
"""

import os
import subprocess

import pytest
from conftest import Api, assert_error, assert_status, file_tree, fill_disk

RECORDS = "/buckets/b/collections/c/records"
BALLAST = ".ballast"  # the file that fills the tmpfs, ignored by snapshots


def snapshot(root):
    """Every data file under ``root`` with its bytes, and every non-empty folder.

    Lock files and empty list folders are created on demand by any request
    and hold no data, so they are left out.
    """
    return file_tree(root, ignore=lambda name: name == "_lock" or name.startswith(BALLAST))


def temp_files(root):
    return [
        os.path.join(folder, name)
        for folder, _, files in os.walk(root)
        for name in files
        if name.startswith(".tmp-")
    ]


class TmpfsDisk:
    """A 2 MiB tmpfs mounted on the data directory."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", self.path],
            capture_output=True,
        )
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); "
                "the injected variant covers this test"
            )
        self.environ = {}

    def refuse_space(self):
        fill_disk(os.path.join(self.path, BALLAST))

    def free_space(self):
        os.unlink(os.path.join(self.path, BALLAST))

    def make_read_only(self):
        subprocess.run(["mount", "-o", "remount,ro", self.path], check=True)

    def make_writable(self):
        subprocess.run(["mount", "-o", "remount,rw", self.path], check=True)

    def close(self):
        subprocess.run(["umount", "-l", self.path], check=False)


class InjectedDisk:
    """An ordinary folder whose writes fail while a flag file names an errno."""

    def __init__(self, path, flag):
        self.path = str(path)
        self.flag = str(flag)
        self.environ = {"KFS_TEST_DISK_FAULT_FILE": self.flag}

    def _fail_with(self, name):
        with open(self.flag, "w", encoding="ascii") as f:
            f.write(name)

    def refuse_space(self):
        self._fail_with("ENOSPC")

    def make_read_only(self):
        self._fail_with("EROFS")

    def free_space(self):
        os.unlink(self.flag)

    make_writable = free_space

    def close(self):
        pass


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch):
    if request.param == "tmpfs":
        made = TmpfsDisk(tmp_path / "data")
    else:
        made = InjectedDisk(tmp_path / "data", tmp_path / "fault-flag")
    for name, value in made.environ.items():
        monkeypatch.setenv(name, value)  # inherited by the daemons started below
    yield made
    made.close()


def fill_some_data(api):
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    for index in range(3):
        assert_status(api.put(f"{RECORDS}/r{index}", json={"data": {"n": index}}), 201)
    # Read every list once, so their journals hold what a read would add.
    for path in ("/buckets", "/buckets/b/collections", "/buckets/b/groups", RECORDS):
        assert_status(api.get(path), 200)


BIG = "x" * 5000  # more than one page: needs new disk space whatever is left

REFUSED_WRITES = [
    ("PUT", f"{RECORDS}/new", {"data": {"big": BIG}}),
    ("PUT", f"{RECORDS}/r0", {"data": {"big": BIG}}),
    ("PATCH", f"{RECORDS}/r1", {"data": {"big": BIG}}),
    ("POST", RECORDS, {"data": {"big": BIG}}),
    ("PUT", "/buckets/b/collections/c2", {"data": {"big": BIG}}),
    ("PUT", "/buckets/b2", {"data": {"big": BIG}}),
    ("PATCH", "/buckets/b", {"data": {"big": BIG}}),
    ("PUT", "/buckets/b/groups/g", {"data": {"members": [BIG]}}),
]


def assert_refused(response):
    body = assert_error(response, 507, 201)
    assert response.headers["Retry-After"] == "3"
    assert "Traceback" not in response.text and "/" not in body["message"]


def daemon_with_data(disk, start_server):
    """A daemon on ``disk`` holding fill_some_data, and the records it lists."""
    daemon = start_server(data_dir=disk.path)
    api = Api(daemon)
    fill_some_data(api)
    return daemon, api, api.get(RECORDS).json()["data"]


def assert_writes_refused(api, disk):
    """Every kind of write answers 507; the files as they were, to compare later."""
    before = snapshot(disk.path)
    for method, path, body in REFUSED_WRITES:
        assert_refused(api.request(method, path, json=body))
    return before


def test_full_disk_refuses_writes_and_recovers(disk, start_server):
    daemon, api, records_before = daemon_with_data(disk, start_server)
    disk.refuse_space()
    before = assert_writes_refused(api, disk)
    batch = api.post(
        "/batch",
        json={
            "requests": [
                {"method": "PUT", "path": f"{RECORDS}/in-batch", "body": {"data": {"big": BIG}}}
            ]
        },
    )
    assert_refused(batch)
    assert snapshot(disk.path) == before, "a refused write changed files"
    assert temp_files(disk.path) == []

    # Reads go on, from the same data.
    assert api.get(RECORDS).json()["data"] == records_before
    assert assert_status(api.get(f"{RECORDS}/r0"), 200).json()["data"]["n"] == 0
    assert_status(api.get("/buckets/b/collections"), 200)
    assert_status(api.get("/__heartbeat__"), 503)

    # A delete needs little or no new space: it either works or changes nothing.
    deleted = api.delete(f"{RECORDS}/r2")
    if deleted.status_code == 507:
        assert snapshot(disk.path) == before
        assert_status(api.get(f"{RECORDS}/r2"), 200)
    else:
        assert_status(deleted, 200)
        assert_status(api.get(f"{RECORDS}/r2"), 404)

    disk.free_space()
    assert_status(api.get("/__heartbeat__"), 200)
    assert_status(api.put(f"{RECORDS}/new", json={"data": {"big": BIG}}), 201)
    assert_status(api.patch(f"{RECORDS}/r1", json={"data": {"after": True}}), 200)

    # After a restart, exactly the acknowledged writes are there.
    daemon.stop()
    api = Api(start_server(data_dir=disk.path))
    ids = {record["id"] for record in api.get(RECORDS).json()["data"]}
    assert ids == {"new", "r0", "r1"} | ({"r2"} if deleted.status_code == 507 else set())
    assert api.get(f"{RECORDS}/r0").json()["data"] == {
        "n": 0,
        "id": "r0",
        "last_modified": records_before[-1]["last_modified"],
    }
    assert api.get(f"{RECORDS}/r1").json()["data"]["after"] is True
    assert {c["id"] for c in api.get("/buckets/b/collections").json()["data"]} == {"c"}
    assert {b["id"] for b in api.get("/buckets").json()["data"]} == {"b"}
    assert_status(api.get("/buckets/b/groups/g"), 404)
    assert temp_files(disk.path) == []


def test_read_only_disk_serves_reads(disk, start_server):
    daemon, api, records_before = daemon_with_data(disk, start_server)
    disk.make_read_only()
    before = assert_writes_refused(api, disk)
    assert_refused(api.delete(f"{RECORDS}/r2"))
    assert_refused(api.delete("/buckets/b/collections/c"))
    assert api.get(RECORDS).json()["data"] == records_before
    # A list never written has no timestamp to keep; it is still served.
    assert assert_status(api.get("/buckets/b/collections/c/records/r0"), 200)
    assert assert_status(api.get("/buckets/b/groups"), 200).json() == {"data": []}
    assert_status(api.get("/__heartbeat__"), 503)
    assert snapshot(disk.path) == before

    # A daemon in read-only mode starts on the read-only disk and serves it.
    daemon.stop()
    readonly = Api(start_server(data_dir=disk.path, readonly="true"))
    assert readonly.get(RECORDS).json()["data"] == records_before
    assert_status(readonly.get("/__heartbeat__"), 200)
    assert_error(readonly.put(f"{RECORDS}/r9", json={}), 405, 115)
    readonly.daemon.stop()

    disk.make_writable()
    api = Api(start_server(data_dir=disk.path))
    assert_status(api.put(f"{RECORDS}/r9", json={"data": {}}), 201)
    assert_status(api.delete(f"{RECORDS}/r2"), 200)
    assert {r["id"] for r in api.get(RECORDS).json()["data"]} == {"r0", "r1", "r9"}


# -- the readonly setting (protocol section 14, checked against Kinto 26.5) ---


def test_readonly_setting_is_kintos(start_server):
    daemon = start_server(readonly="true")
    api = Api(daemon)
    hello = assert_status(api.get("/"), 200)
    assert hello.headers["Cache-Control"] == "max-age=86400"
    assert "Expires" in hello.headers
    assert assert_status(api.head("/"), 200).headers["Cache-Control"] == "max-age=86400"

    for method in ("POST", "PUT", "PATCH", "DELETE", "TRACE", "FOO"):
        for path in ("/buckets", "/buckets/b", "/nothing", "/batch"):
            response = api.request(method, path, data=b"{}")
            assert_error(response, 405, 115, "Method not allowed on this endpoint.")
            assert "Allow" not in response.headers

    origin = {"Origin": "http://example.com"}
    for method in ("GET", "HEAD"):
        response = api.request(
            "OPTIONS",
            "/buckets/b",
            auth=None,
            headers={**origin, "Access-Control-Request-Method": method},
        )
        assert (
            assert_status(response, 200).headers["Access-Control-Allow-Methods"]
            == "GET,HEAD,OPTIONS"
        )
    for method in ("PUT", "DELETE", "POST"):
        response = api.request(
            "OPTIONS",
            "/buckets/b",
            auth=None,
            headers={**origin, "Access-Control-Request-Method": method},
        )
        body = assert_error(response, 400, 107)
        assert body["message"] == "Access-Control-Request-Method in header: Method not allowed"
        assert response.headers["Access-Control-Allow-Origin"] == "*"

    assert assert_status(api.get("/buckets"), 200).json() == {"data": []}
    assert_status(api.get("/__heartbeat__"), 200)

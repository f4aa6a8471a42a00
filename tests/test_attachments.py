"""The attachment plugin over HTTP, with the real kinto-http client (protocol 18).

On a daemon, not in process: kinto-http makes its own requests sessions, and
uploads (chunked ones too) go through the request gate and cheroot.  At the
end: writes the disk refuses (a small tmpfs, or the fault flag of
docs/storage.md); tests/test_attachments_vfat.py has a disk without hard links."""

import hashlib
import os
import subprocess
import sys

import kinto_http
import pytest
import requests
from conftest import ALICE, BOB, Api, Daemon, assert_error, assert_status, fill_disk, flush

MAX_SIZE = 200_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    found = Daemon(
        tmp_path_factory.mktemp("attachments") / "data",
        plugins="flush attachment history",
        attachment_max_size_bytes=MAX_SIZE,
    )
    yield found
    found.stop()


@pytest.fixture
def alice(daemon):
    flush(daemon)
    client = kinto_http.Client(
        server_url=daemon.url, auth=ALICE, bucket="b", collection="c", timeout=30
    )
    client.create_bucket(id="b")
    client.create_collection(id="c", bucket="b")
    return client


def records_folder(daemon):
    return os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")


def stored_file(daemon, record_id):
    return os.path.join(records_folder(daemon), f"{record_id}.attachment")


def write_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def download(daemon, record, auth=ALICE):
    base = requests.get(daemon.url + "/", timeout=30).json()["capabilities"]["attachments"][
        "base_url"
    ]
    return requests.get(base + record["attachment"]["location"], auth=auth, timeout=30)


def post_file(daemon, record_id, filename, content, auth=ALICE, **extra):
    url = f"{daemon.url}/buckets/b/collections/c/records/{record_id}/attachment"
    return requests.post(
        url, files={"attachment": (filename, content, "text/plain")}, auth=auth, timeout=30, **extra
    )


def test_capability_and_heartbeat(daemon, alice):
    hello = requests.get(daemon.url + "/", timeout=30).json()
    found = hello["capabilities"]["attachments"]
    assert found["base_url"] == daemon.url + "/attachments/"
    assert set(found) == {"version", "description", "url", "base_url"}
    beat = requests.get(daemon.url + "/__heartbeat__", timeout=30).json()
    assert beat["attachments"] is True


def test_add_to_new_record_read_back_replace_remove_delete(daemon, alice, tmp_path):
    content = os.urandom(50_000)
    path = write_file(tmp_path, "report.pdf", content)
    metadata = alice.add_attachment(id="r1", filepath=path, data={"title": "hi"})
    assert metadata["filename"] == "report.pdf"
    assert metadata["hash"] == hashlib.sha256(content).hexdigest()
    assert metadata["size"] == len(content)
    assert metadata["mimetype"] == "application/pdf"
    record = alice.get_record(id="r1")["data"]
    assert record["title"] == "hi" and record["attachment"] == metadata
    served = download(daemon, record)
    assert_status(served, 200)
    assert served.content == content
    assert served.headers["Content-Type"] == "application/pdf"
    assert served.headers["ETag"] == f'"{metadata["hash"]}"'
    with open(stored_file(daemon, "r1"), "rb") as f:
        assert f.read() == content
    # kinto-http's own download reads from base_url + location, without
    # credentials: it works for records everyone may read.
    alice.patch_record(id="r1", permissions={"read": ["system.Everyone"]})
    saved = alice.download_attachment(record, filepath=str(tmp_path / "out.pdf"))
    assert open(saved, "rb").read() == content

    # Replace: new content, new metadata, a normal record update.
    before = record["last_modified"]
    new_content = b"second version\n"
    alice.add_attachment(id="r1", filepath=write_file(tmp_path, "notes.txt", new_content))
    record = alice.get_record(id="r1")["data"]
    assert record["last_modified"] > before and record["title"] == "hi"
    assert record["attachment"]["filename"] == "notes.txt"
    assert download(daemon, record).content == new_content
    assert not [n for n in os.listdir(records_folder(daemon)) if n.startswith(".")]

    alice.remove_attachment(id="r1")
    record = alice.get_record(id="r1")["data"]
    assert "attachment" in record and record["attachment"] is None
    assert not os.path.exists(stored_file(daemon, "r1"))

    alice.add_attachment(id="r1", filepath=path)
    assert os.path.exists(stored_file(daemon, "r1"))
    alice.delete_record(id="r1")
    assert not os.path.exists(stored_file(daemon, "r1"))
    url = f"{daemon.url}/attachments/b/c/r1"
    assert_status(requests.get(url, auth=ALICE, timeout=30), 404)


def test_add_to_existing_record_keeps_fields_and_history(daemon, alice, tmp_path):
    alice.create_record(id="r2", data={"a": 1})
    response = post_file(daemon, "r2", "a.txt", b"hello")
    assert_status(response, 200)
    assert response.headers["Location"].endswith("/v1/buckets/b/collections/c/records/r2")
    record = alice.get_record(id="r2")
    assert record["data"]["a"] == 1 and record["data"]["attachment"]["size"] == 5
    history = alice.get_history(bucket="b")
    assert history[0]["action"] == "update" and history[0]["record_id"] == "r2"
    # New record: 201.
    assert_status(post_file(daemon, "r3", "b.txt", b"x"), 201)


def test_range_and_conditional_requests(daemon, alice, tmp_path):
    post_file(daemon, "r4", "c.txt", b"0123456789")
    record = alice.get_record(id="r4")["data"]
    partial = download(daemon, record, auth=ALICE)
    url = partial.url
    ranged = requests.get(url, auth=ALICE, headers={"Range": "bytes=2-5"}, timeout=30)
    assert_status(ranged, 206)
    assert ranged.content == b"2345"
    etag = partial.headers["ETag"]
    assert_status(requests.get(url, auth=ALICE, headers={"If-None-Match": etag}, timeout=30), 304)


def test_metadata_cannot_be_modified_but_can_be_nulled(daemon, alice):
    post_file(daemon, "r5", "d.txt", b"data")
    record = alice.get_record(id="r5")["data"]
    url = f"{daemon.url}/buckets/b/collections/c/records/r5"
    forged = dict(record["attachment"], size=1)
    response = requests.patch(url, json={"data": {"attachment": forged}}, auth=ALICE, timeout=30)
    assert_error(response, 400, 999, "Attachment metadata cannot be modified.")
    same = requests.patch(
        url, json={"data": {"attachment": record["attachment"], "x": 1}}, auth=ALICE, timeout=30
    )
    assert_status(same, 200)
    nulled = requests.patch(url, json={"data": {"attachment": None}}, auth=ALICE, timeout=30)
    assert_status(nulled, 200)


def test_hostile_file_names_are_only_metadata(daemon, alice):
    for index, name in enumerate(
        [
            "../../../../escape.txt",
            "/etc/passwd.txt",
            "..\\..\\win.txt",
            "caf\u00e9 \u202eevil\u0000.txt",
            "r6.json.txt",
        ]
    ):
        record_id = f"h{index}"
        response = post_file(daemon, record_id, name, b"payload")
        assert_status(response, 201)
        record = alice.get_record(id=record_id)["data"]
        assert record["attachment"]["location"] == f"b/c/{record_id}"
    names = sorted(os.listdir(records_folder(daemon)))
    assert all(
        n.split(".")[-1] in ("json", "acl", "attachment", "jsonl") or n == "_lock" for n in names
    ), names
    assert not os.path.exists(os.path.join(daemon.data_dir, "..", "escape.txt"))
    outside = subprocess.run(
        ["find", os.path.dirname(daemon.data_dir), "-name", "*escape*"],
        capture_output=True,
        text=True,
    ).stdout
    assert outside == ""


def test_extension_allow_list(daemon, alice):
    for name in ("evil.html", "run.exe", "noextension", "archive.tar.sh"):
        response = post_file(daemon, "x1", name, b"<script>")
        assert_error(response, 400, 107, "body: File extension is not allowed.")
    assert not os.path.exists(stored_file(daemon, "x1"))
    assert_status(
        requests.get(f"{daemon.url}/buckets/b/collections/c/records/x1", auth=ALICE, timeout=30),
        404,
    )


def test_oversized_uploads(daemon, alice):
    # Declared too large: 413 before the body is read.
    huge = requests.post(
        f"{daemon.url}/buckets/b/collections/c/records/big/attachment",
        data=b"",
        auth=ALICE,
        timeout=30,
        headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(10**12)},
    )
    assert_error(huge, 413, 113)
    # Within the form's room but over the file limit: 400 and nothing kept.
    response = post_file(daemon, "big", "big.txt", b"a" * (MAX_SIZE + 1))
    assert_error(
        response,
        400,
        107,
        f"body: File size ({MAX_SIZE + 1} bytes) exceeds the limit ({MAX_SIZE} bytes).",
    )
    assert not os.path.exists(stored_file(daemon, "big"))
    collection_folder = os.path.dirname(records_folder(daemon))
    assert not [n for n in os.listdir(collection_folder) if n.startswith(".tmp-")]

    # A chunked body with no Content-Length is cut at the same room.
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="attachment"; filename="a.txt"\r\n\r\n'
        for _ in range(200):
            yield b"b" * 65536

    chunked = requests.post(
        f"{daemon.url}/buckets/b/collections/c/records/big/attachment",
        data=chunks(),
        auth=ALICE,
        timeout=60,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert_error(chunked, 413, 113)
    assert_status(post_file(daemon, "ok", "ok.txt", b"a" * MAX_SIZE), 201)


def test_bad_forms(daemon, alice):
    url = f"{daemon.url}/buckets/b/collections/c/records/f1/attachment"
    assert_error(requests.post(url, json={"a": 1}, auth=ALICE, timeout=30), 400, 107)
    missing = requests.post(url, files={"data": (None, "{}")}, auth=ALICE, timeout=30)
    assert_error(missing, 400, 109, "Attachment missing.")
    bad_json = requests.post(
        url, files={"attachment": ("a.txt", b"x"), "data": (None, "{nope")}, auth=ALICE, timeout=30
    )
    assert_error(bad_json, 400, 109)
    extra = requests.post(
        url, files={"attachment": ("a.txt", b"x"), "foo": (None, "1")}, auth=ALICE, timeout=30
    )
    assert_error(extra, 400, 109, "body: 'foo' not in ('data', 'permissions')")
    truncated = requests.post(
        url,
        data=b'--x\r\nContent-Disposition: form-data; name="a"',
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        auth=ALICE,
        timeout=30,
    )
    assert_error(truncated, 400, 107)
    assert_error(requests.get(url, auth=ALICE, timeout=30), 405, 115)


def test_permissions(daemon, alice, tmp_path):
    bob = kinto_http.Client(server_url=daemon.url, auth=BOB, bucket="b", collection="c", timeout=30)
    bob_id = bob.server_info()["user"]["id"]
    alice.create_record(id="shared", data={}, permissions={"read": [bob_id]})
    path = write_file(tmp_path, "x.txt", b"secret")
    with pytest.raises(kinto_http.KintoException) as raised:
        bob.add_attachment(id="shared", filepath=path)
    assert raised.value.response.status_code == 403
    with pytest.raises(kinto_http.KintoException):
        bob.add_attachment(id="bobs-new", filepath=path)
    assert not os.path.exists(stored_file(daemon, "shared"))
    alice.add_attachment(id="shared", filepath=path)
    with pytest.raises(kinto_http.KintoException) as raised:
        bob.remove_attachment(id="shared")
    assert raised.value.response.status_code == 403
    record = bob.get_record(id="shared")["data"]
    assert download(daemon, record, auth=BOB).content == b"secret"
    alice.add_attachment(id="private", filepath=path)
    private = alice.get_record(id="private")["data"]
    assert_status(download(daemon, private, auth=BOB), 403)
    assert_status(download(daemon, private, auth=None), 401)


def test_cascade_check_and_backup(daemon, alice, tmp_path):
    post_file(daemon, "k1", "k.txt", b"kept")
    backup_dir = tmp_path / "backup"
    cli = [sys.executable, "-m", "kintofs"]
    done = subprocess.run(
        [*cli, "check", "--data-dir", daemon.data_dir], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    subprocess.run(
        [*cli, "backup", "--data-dir", daemon.data_dir, str(backup_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    copied = backup_dir / "buckets" / "b" / "collections" / "c" / "records" / "k1.attachment"
    assert copied.read_bytes() == b"kept"
    # An orphan (crash between the record delete and the file's) is a leftover.
    orphan = os.path.join(records_folder(daemon), "gone.attachment")
    open(orphan, "wb").close()
    done = subprocess.run(
        [*cli, "check", "--data-dir", daemon.data_dir], capture_output=True, text=True, timeout=60
    )
    assert "orphan-attachment" in done.stdout + done.stderr
    os.unlink(orphan)
    alice.delete_collection(id="c", bucket="b")
    assert not os.path.exists(stored_file(daemon, "k1"))


def test_keep_old_files(start_server, tmp_path):
    daemon = start_server(plugins="flush attachment", attachment_keep_old_files="true")
    client = kinto_http.Client(
        server_url=daemon.url, auth=ALICE, bucket="b", collection="c", timeout=30
    )
    client.create_bucket(id="b")
    client.create_collection(id="c", bucket="b")
    first = client.add_attachment(id="r", filepath=write_file(tmp_path, "a.txt", b"one"))
    client.add_attachment(id="r", filepath=write_file(tmp_path, "b.txt", b"two"))
    kept = os.path.join(records_folder(daemon), f"r.{first['hash']}.attachment")
    assert open(kept, "rb").read() == b"one"
    assert open(stored_file(daemon, "r"), "rb").read() == b"two"
    client.delete_record(id="r")
    assert not os.path.exists(stored_file(daemon, "r"))
    assert len([n for n in os.listdir(records_folder(daemon)) if n.endswith(".attachment")]) == 2


def test_default_bucket_uploads(start_server, tmp_path):
    daemon = start_server(plugins="flush attachment default_bucket")
    client = kinto_http.Client(
        server_url=daemon.url, auth=ALICE, bucket="default", collection="tasks", timeout=30
    )
    client.add_attachment(id="t1", filepath=write_file(tmp_path, "a.txt", b"mine"))
    record = client.get_record(id="t1")["data"]
    assert download(daemon, record).content == b"mine"


# -- full and read-only disks (docs/storage.md) ----------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs gives out space page by page
RECORDS = "/buckets/b/collections/c/records"


class SmallTmpfs:
    """A 2 MiB tmpfs mounted on the data directory, filled to leave a few pages."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path)
        self.ballast = os.path.join(self.path, ".ballast")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", self.path],
            capture_output=True,
        )
        if mounted.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); "
                "test_injected_disk_refusals covers the same answers"
            )

    def leave_free(self, pages):
        """Fill the disk, then free exactly ``pages`` pages."""
        fill_disk(self.ballast)
        os.truncate(self.ballast, os.path.getsize(self.ballast) - pages * PAGE)

    def free_space(self):
        os.unlink(self.ballast)

    def close(self):
        subprocess.run(["umount", "-l", self.path], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallTmpfs(tmp_path / "data")
    yield disk
    disk.close()  # after start_server's daemons stopped (fixtures end in reverse)


def daemon_with_attachment(start_server, data_dir=None):
    """A daemon whose record r1 has a file; the record as served."""
    daemon = start_server(data_dir=data_dir, plugins="flush attachment")
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    assert_status(post_file(daemon, "r1", "old.txt", b"old content"), 201)
    return daemon, api, api.get(f"{RECORDS}/r1").json()["data"]


def temp_files(root):
    return [name for _, _, names in os.walk(root) for name in names if name.startswith(".tmp-")]


def assert_refused(response):
    assert_error(response, 507, 201)
    assert "Retry-After" in response.headers


def assert_nothing_changed(daemon, api, record):
    assert temp_files(daemon.data_dir) == []
    assert api.get(f"{RECORDS}/r1").json()["data"] == record
    assert download(daemon, record).content == b"old content"
    with open(stored_file(daemon, "r1"), "rb") as f:
        assert f.read() == b"old content"
    assert_status(api.get(f"{RECORDS}/r2"), 404)
    assert not os.path.exists(stored_file(daemon, "r2"))


# Far more than the room left (refused while streaming), and a few bytes more
# (refused when the file's last buffered bytes are written out).
@pytest.mark.parametrize("pages", [64, 9])
def test_a_full_disk_refuses_an_upload_part_way(pages, small_disk, start_server):
    daemon, api, record = daemon_with_attachment(start_server, small_disk.path)
    small_disk.leave_free(pages=8)
    big = os.urandom(pages * PAGE)
    assert_refused(post_file(daemon, "r1", "new.txt", big))
    assert_refused(post_file(daemon, "r2", "new.txt", big))
    assert_nothing_changed(daemon, api, record)

    small_disk.free_space()
    assert_status(post_file(daemon, "r1", "new.txt", big), 200)
    assert download(daemon, api.get(f"{RECORDS}/r1").json()["data"]).content == big


def test_a_full_disk_refuses_the_record_write_after_the_file(small_disk, start_server):
    daemon, api, record = daemon_with_attachment(start_server, small_disk.path)
    # Room for the file exactly: it is put in place, then the record write is refused.
    small_disk.leave_free(pages=4)
    assert_refused(post_file(daemon, "r1", "new.txt", os.urandom(4 * PAGE)))
    # The record's files are staged when its commit ends (fsstore/commit.py, step 1).
    assert "in _stage_op" in daemon.logs(), "refused before the file was in place"
    assert_nothing_changed(daemon, api, record)


@pytest.mark.parametrize("refusal", ["ENOSPC", "EROFS"])
def test_injected_disk_refusals(refusal, tmp_path, monkeypatch, start_server):
    flag = tmp_path / "disk-fault"
    monkeypatch.setenv("KFS_TEST_DISK_FAULT_FILE", str(flag))  # the daemon's environment
    daemon, api, record = daemon_with_attachment(start_server)
    flag.write_text(refusal)
    assert_refused(post_file(daemon, "r1", "new.txt", b"new content"))
    assert_refused(post_file(daemon, "r2", "new.txt", b"new content"))
    # A removal needs no space but its record write does: the file comes back.
    assert_refused(api.delete(f"{RECORDS}/r1/attachment"))
    flag.unlink()
    assert_nothing_changed(daemon, api, record)


def test_a_disk_fault_at_each_step_of_an_upload_is_all_or_nothing(
    tmp_path, monkeypatch, start_server
):
    # "ENOSPC after N": N = 0, 1, 2 ... walks the fault through each step of a
    # replacement of r1's file: the upload, the record's temp files, the
    # commit log, the renames and the journal.
    flag = tmp_path / "disk-fault"
    monkeypatch.setenv("KFS_TEST_DISK_FAULT_FILE", str(flag))
    daemon, api, record = daemon_with_attachment(start_server)
    outcomes = []
    for step in range(12):
        content = f"content of step {step}".encode()
        flag.write_text(f"ENOSPC after {step}")
        response = post_file(daemon, "r1", f"step{step}.txt", content)
        flag.unlink()
        outcomes.append(response.status_code)
        if response.status_code == 507:
            assert_refused(response)
            assert api.get(f"{RECORDS}/r1").json()["data"] == record, "nothing changed"
            assert download(daemon, record).content == b"old content"
            assert temp_files(daemon.data_dir) == []
        else:
            assert_status(response, 200)
            record = api.get(f"{RECORDS}/r1").json()["data"]
            assert record["attachment"]["filename"] == f"step{step}.txt"
            assert download(daemon, record).content == content, "the file with its record"
            with open(stored_file(daemon, "r1"), "rb") as f:
                assert f.read() == content
    refused = [step for step, status in enumerate(outcomes) if status == 507]
    assert refused and refused == list(range(len(refused))), outcomes
    assert outcomes[-1] == 200, "a fault after every step is done with"
    daemon.stop()
    restarted = start_server(data_dir=daemon.data_dir, plugins="flush attachment")
    assert Api(restarted).get(f"{RECORDS}/r1").json()["data"] == record
    assert download(restarted, record).content == content


def test_the_attached_files_interface_is_documented():
    from pathlib import Path

    from kintofs.fsstore import blobs

    doc = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text("utf-8")
    names = {
        name
        for cls in (blobs.AttachedFiles, blobs.StagedFile)
        for name in vars(cls)
        if not name.startswith("_")
    }
    assert {"stage", "put", "remove", "write", "sha256", "complete"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in doc and f"`{name}(" not in doc)
    assert not missing, f"docs/plugins.md, 'Attached files', does not describe: {missing}"

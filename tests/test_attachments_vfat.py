"""Attachments on a FAT file system, as on a Raspberry Pi's USB stick or SD card.

FAT has no hard links, no permissions and no symlinks, and two names that
differ only in case are one name.  A small image made by ``mkfs.vfat``
(package dosfstools) is mounted with ``mount -o loop`` (the tests run as
root) or, where the kernel has no vfat driver (as in most containers), with
``fusefat``, a FAT driver in user space (package fusefat).  Skipped, saying
why, when neither works.  The daemon's whole data directory is on it; the
uploads, replacements and removals go through HTTP, and the files are then
read back from the mount.
"""

import contextlib
import hashlib
import io
import os
import shutil
import subprocess

import pytest
import requests
from conftest import ALICE, Api, Daemon, assert_error, assert_status

from kintofs.fsstore import FileSystemStore
from kintofs.fsstore.blobs import AttachedFiles

IMAGE_BYTES = 32 * 1024 * 1024  # FAT16: room for the tests, quick to make
RECORDS = "/buckets/b/collections/c/records"


def make_image(path):
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("mkfs.vfat not found (install the package dosfstools)")
    with open(path, "wb") as image:
        image.truncate(IMAGE_BYTES)
    subprocess.run(["mkfs.vfat", str(path)], check=True, capture_output=True)


def mount_fat(image, mountpoint):
    """Mount ``image`` on ``mountpoint`` by the kernel, else by fusefat; else skip."""
    kernel = subprocess.run(["mount", "-o", "loop", image, mountpoint], capture_output=True)
    if kernel.returncode == 0:
        return
    tried = [f"mount -o loop: {kernel.stderr.decode().strip()}"]
    if shutil.which("fusefat") is None:
        tried.append("fusefat: not installed (package fusefat)")
    else:
        fuse = subprocess.run(["fusefat", "-o", "rw+", image, mountpoint], capture_output=True)
        if fuse.returncode == 0 and os.path.ismount(mountpoint):
            return
        tried.append(f"fusefat: {fuse.stderr.decode().strip()}")
    pytest.skip("cannot mount a FAT image here: " + "; ".join(tried))


@pytest.fixture
def fat(tmp_path):
    """A mounted FAT file system (its path); unmounted after the test."""
    image, mountpoint = tmp_path / "fat.img", tmp_path / "fat"
    mountpoint.mkdir()
    make_image(image)
    mount_fat(str(image), str(mountpoint))
    yield str(mountpoint)
    subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)


@pytest.fixture
def start_on_fat(fat):
    """``start(**settings)``: a daemon whose data directory is on the FAT mount."""
    started = []

    def start(**settings):
        data_dir = os.path.join(fat, f"data{len(started)}")
        daemon = Daemon(data_dir, plugins="flush attachment", **settings)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()  # before the unmount: no open file may keep it busy


def records_folder(daemon):
    return os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")


def disk_files(daemon):
    """``{name: bytes}`` of the attachment files in the records folder."""
    folder = records_folder(daemon)
    return {
        name: open(os.path.join(folder, name), "rb").read()
        for name in os.listdir(folder)
        if name.endswith(".attachment")
    }


def leftovers(daemon):
    return [
        os.path.join(folder, name)
        for folder, _, names in os.walk(daemon.data_dir)
        for name in names
        if name.startswith(".")
    ]


def collection(daemon, **data):
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c", json={"data": data}), 201)
    return api


def upload(daemon, record_id, filename, content, data=None):
    files = {"attachment": (filename, content, "text/plain")}
    if data is not None:
        files["data"] = (None, data)
    return requests.post(
        f"{daemon.url}{RECORDS}/{record_id}/attachment", files=files, auth=ALICE, timeout=30
    )


def served(daemon, record_id):
    return requests.get(f"{daemon.url}/attachments/b/c/{record_id}", auth=ALICE, timeout=30)


def test_the_mount_has_no_hard_links(fat):
    # What the tests below rely on: every replace takes the copy fallback.
    source = os.path.join(fat, "a.txt")
    open(source, "wb").close()
    with pytest.raises(OSError):
        os.link(source, os.path.join(fat, "b.txt"))


def test_upload_replace_remove_and_delete(start_on_fat):
    daemon = start_on_fat()
    api = collection(daemon)
    first, second = os.urandom(300_000), b"second version\n"

    assert_status(upload(daemon, "r1", "photo.jpg", first), 201)
    assert served(daemon, "r1").content == first
    assert disk_files(daemon) == {"r1.attachment": first}

    replaced = assert_status(upload(daemon, "r1", "notes.txt", second), 200).json()
    assert replaced["hash"] == hashlib.sha256(second).hexdigest()
    assert served(daemon, "r1").content == second
    assert disk_files(daemon) == {"r1.attachment": second}
    assert leftovers(daemon) == []

    assert_status(api.delete(f"{RECORDS}/r1/attachment"), 204)
    assert api.get(f"{RECORDS}/r1").json()["data"]["attachment"] is None
    assert_status(served(daemon, "r1"), 404)
    assert disk_files(daemon) == {}

    assert_status(upload(daemon, "r1", "again.txt", first), 200)
    assert disk_files(daemon) == {"r1.attachment": first}
    assert_status(api.delete(f"{RECORDS}/r1"), 200)
    assert disk_files(daemon) == {}
    assert leftovers(daemon) == []


def test_old_versions_are_kept(start_on_fat):
    daemon = start_on_fat(attachment_keep_old_files="true")
    api = collection(daemon)
    first, second = b"one\n", b"two\n"
    assert_status(upload(daemon, "r", "a.txt", first), 201)
    assert_status(upload(daemon, "r", "b.txt", second), 200)
    kept = f"r.{hashlib.sha256(first).hexdigest()}.attachment"
    assert disk_files(daemon) == {"r.attachment": second, kept: first}
    assert_status(api.delete(f"{RECORDS}/r/attachment"), 204)
    kept_too = f"r.{hashlib.sha256(second).hexdigest()}.attachment"
    assert disk_files(daemon) == {kept: first, kept_too: second}
    assert leftovers(daemon) == []


def test_a_refused_record_write_puts_the_old_file_back(start_on_fat):
    daemon = start_on_fat(experimental_collection_schema_validation="true")
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    api = collection(daemon, schema=schema)
    assert_status(upload(daemon, "r1", "a.txt", b"kept", data='{"title": "ok"}'), 201)
    before = api.get(f"{RECORDS}/r1").json()["data"]

    # The new file is in place when the record write is refused: it goes back.
    refused = upload(daemon, "r1", "b.txt", b"refused", data='{"title": 5}')
    assert_error(refused, 400, 107)
    assert api.get(f"{RECORDS}/r1").json()["data"] == before
    assert served(daemon, "r1").content == b"kept"
    assert disk_files(daemon) == {"r1.attachment": b"kept"}
    assert leftovers(daemon) == []


def test_the_storage_api_undoes_on_fat(fat):
    # Beside the daemon: the public storage API itself (kintofs/fsstore/blobs.py).
    store = FileSystemStore(os.path.join(fat, "data"))
    records = store.list((("bucket", "b"), ("collection", "c")), "record")
    os.makedirs(records.folder)
    files = AttachedFiles(records)

    def stage(content):
        staged = files.stage()
        staged.copy_from(io.BytesIO(content))
        return staged

    class Refused(Exception):
        pass

    def change(write, *, refused=False):
        with contextlib.suppress(Refused), records.transaction() as writer:
            write(writer)
            writer.put("r", {"v": 1}, {})  # the object's write the file goes with
            if refused:
                raise Refused()

    change(lambda writer: files.put(writer, "r", stage(b"old")))
    change(lambda writer: files.put(writer, "r", stage(b"new")), refused=True)
    assert open(files.path("r"), "rb").read() == b"old"
    change(lambda writer: files.remove(writer, "r"), refused=True)
    assert open(files.path("r"), "rb").read() == b"old"
    change(lambda writer: files.put(writer, "r", stage(b"new")))
    assert open(files.path("r"), "rb").read() == b"new"
    change(lambda writer: files.remove(writer, "r"))
    assert files.path("r") is None
    store.close()  # its commit log, which would keep the file system busy
    names = os.listdir(os.path.dirname(records.folder)) + os.listdir(records.folder)
    assert [name for name in names if name.startswith(".")] == []

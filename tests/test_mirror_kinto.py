"""``kintofs push`` and ``kintofs pull`` against a real Kinto 26.5.0 on a real PostgreSQL.

Both are started by tests/kinto_pg.py (skipped, with the reason, without
PostgreSQL; .ci/run installs it).  The kintofs side is a real daemon on the
data directory while the commands run, as a user would have it.
"""

import os
import re
import signal
import subprocess
import sys
import time

import kinto_http
import pytest
import requests
from conftest import ALICE, BOB, basicauth_id, file_tree, free_port, settings_environment
from kinto_pg import KintoServer, PostgresCluster, kinto_venv

from kintofs.fsstore import FileSystemStore

KINTO_SECRET = "kinto-side-secret"  # not kintofs's: every basicauth id differs
MIRROR = ("mirror", "mirror-pw")  # the account the commands use on Kinto
RECORDS = 5000
# buckets, groups, collections, records (one comment, three with files, the bulk)
OBJECTS = 3 + 2 + 3 + 1 + 3 + RECORDS

LOCAL = {user: basicauth_id(user) for user in (ALICE, BOB)}
REMOTE = {user: basicauth_id(user, KINTO_SECRET) for user in (ALICE, BOB)}
MAPPING = [f"--map-principal={LOCAL[u]}={REMOTE[u]}" for u in (ALICE, BOB)]
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}}

SUMMARY = re.compile(
    r"(\d+) written, (\d+) deleted, (\d+) unchanged, (\d+) conflicts, (\d+) failed"
)


@pytest.fixture(scope="module")
def kinto(request, tmp_path_factory):
    bin_dir = kinto_venv(request.config.cache)
    cluster = PostgresCluster()
    try:
        server = KintoServer(bin_dir, cluster.url, tmp_path_factory.mktemp("kinto"), KINTO_SECRET)
    except BaseException:
        cluster.stop()
        raise
    yield server
    server.stop()
    cluster.stop()


@pytest.fixture
def remote(kinto):
    kinto.flush()
    return kinto


def mirror_command(command, url, data_dir, *extra):
    return [
        sys.executable,
        "-m",
        "kintofs",
        command,
        url,
        "--auth",
        ":".join(MIRROR),
        "--data-dir",
        str(data_dir),
        "--config",
        os.devnull,
        *MAPPING,
        *extra,
    ]


def run_mirror(command, url, data_dir, *extra):
    env = {**os.environ, **settings_environment({})}
    done = subprocess.run(
        mirror_command(command, url, data_dir, *extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done


def totals(done):
    """The summary line's counts: written, deleted, unchanged, conflicts, failed."""
    last = done.stdout.strip().splitlines()[-1]
    return tuple(int(n) for n in SUMMARY.search(last).groups())


def build_dataset(daemon, records=RECORDS):
    """Three buckets, groups, schemas, permissions, three attached files, ``records`` records."""
    alice = kinto_http.Client(server_url=daemon.url, auth=ALICE)
    alice.create_bucket(id="blog", permissions={"read": ["system.Everyone"]})
    alice.create_group(id="editors", bucket="blog", data={"members": [LOCAL[ALICE], LOCAL[BOB]]})
    alice.create_group(id="readers", bucket="blog", data={"members": ["system.Authenticated"]})
    alice.create_collection(id="articles", bucket="blog", data={"schema": SCHEMA})
    alice.create_collection(
        id="comments",
        bucket="blog",
        permissions={"record:create": ["/buckets/blog/groups/editors"]},
    )
    alice.create_record(id="c1", bucket="blog", collection="comments", data={"text": "é ünïcode ✓"})
    alice.create_bucket(id="shop", data={"note": "prices in €"})
    alice.create_collection(id="items", bucket="shop", data={"schema": SCHEMA, "cache_expires": 60})
    alice.create_bucket(id="archive")
    folder = os.path.join(os.path.dirname(daemon.data_dir), "files")
    os.makedirs(folder, exist_ok=True)
    for n in range(3):
        path = os.path.join(folder, f"photo-{n}.txt")
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * (n + 1))
        alice.add_attachment(
            id=f"a{n}",
            filepath=path,
            bucket="blog",
            collection="articles",
            data={"title": f"article {n}"},
            permissions={"read": [LOCAL[BOB]]},
        )
    # The bulk goes through the store, as another process writing beside the daemon.
    store = FileSystemStore(daemon.data_dir, fsync=False)
    path = (("bucket", "shop"), ("collection", "items"))
    with store.list(path, "record").transaction() as writer:
        for i in range(records):
            acl = {"read": [LOCAL[BOB]]} if i % 7 == 0 else {}
            acl["write"] = [LOCAL[ALICE]]  # in the API's order (sorted names)
            data = {"title": f"item {i}", "price": i * 1.5, "tags": ["a", str(i % 10)]}
            writer.put(f"item-{i:05d}", {**data, "nested": {"n": i, "none": None}}, acl)
    store.close()


def objects_of(data_dir):
    """``{(path, kind, id): (data, acl)}`` of every bucket, group, collection and record."""
    store = FileSystemStore(data_dir, fsync=False)
    found = {}
    pending = [((), "bucket")]
    while pending:
        path, kind = pending.pop()
        for object_id, stored in store.list(path, kind).objects().items():
            found[path, kind, object_id] = (stored.data, stored.acl)
            inner = (*path, (kind, object_id))
            if kind == "bucket":
                pending += [(inner, "group"), (inner, "collection")]
            elif kind == "collection":
                pending.append((inner, "record"))
    store.close()
    return found


def acl_and_files(data_dir):
    return file_tree(data_dir, ignore=lambda name: not name.endswith((".acl", ".attachment")))


def kinto_records(url, auth, bucket, collection):
    client = kinto_http.Client(server_url=url, auth=auth)
    found = client.get_records(bucket=bucket, collection=collection)
    return sorted(found, key=lambda record: record["id"])


def without_location(records):
    """Records as a client compares them: each server has its own URL for a file."""
    result = []
    for record in records:
        record = dict(record)
        if isinstance(record.get("attachment"), dict):
            record["attachment"] = {
                k: v for k, v in record["attachment"].items() if k != "location"
            }
        result.append(record)
    return result


def killed_then_resumed(url, data_dir):
    """Push, SIGKILL the push once a quarter of the bulk is there, push again."""
    records_url = f"{url}/buckets/shop/collections/items/records"
    env = {**os.environ, **settings_environment({})}
    process = subprocess.Popen(
        mirror_command("push", url, data_dir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        count = 0
        while count < RECORDS // 4 and process.poll() is None:
            time.sleep(0.2)
            found = requests.get(records_url, auth=MIRROR, timeout=30)
            count = len(found.json().get("data", []))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert RECORDS // 4 <= count < RECORDS, "the push was not killed half-way"

    resumed = run_mirror("push", url, data_dir)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    written, deleted, unchanged, conflicts, failed = totals(resumed)
    assert (deleted, conflicts, failed) == (0, 0, 0)
    assert unchanged >= count  # what the killed run sent is not sent again
    # Lists copied in full before the kill kept their cursors: only the bulk is compared.
    assert written + unchanged == RECORDS
    there = requests.get(records_url, auth=MIRROR, timeout=30).json()["data"]
    assert len(there) == len({r["id"] for r in there}) == RECORDS


def test_moving_house_and_back(start_server, remote, tmp_path):
    """One story, so that the 5,000 records cross once each way (one test: one
    xdist worker): a push killed half-way and resumed, kinto-http reading the
    same on both servers, a pull into a fresh data directory identical to the
    first, then a second push that sends exactly 50 edits and 10 deletions."""
    source = start_server(plugins="flush attachment")
    build_dataset(source)
    killed_then_resumed(remote.url, source.data_dir)

    # kinto-http reads from Kinto what it read from kintofs (alice's view, on each server).
    for bucket, collection in (("shop", "items"), ("blog", "articles"), ("blog", "comments")):
        here = kinto_records(source.url, ALICE, bucket, collection)
        there = kinto_records(remote.url, ALICE, bucket, collection)
        assert len(here) == len(there) > 0
        assert without_location(here) == without_location(there)
    theirs = kinto_http.Client(server_url=remote.url, auth=ALICE)
    editors = theirs.get_group(id="editors", bucket="blog")
    assert sorted(editors["data"]["members"]) == sorted([REMOTE[ALICE], REMOTE[BOB]])
    assert theirs.get_collection(id="articles", bucket="blog")["data"]["schema"] == SCHEMA
    record = theirs.get_record(id="a1", bucket="blog", collection="articles")
    assert REMOTE[BOB] in record["permissions"]["read"]
    downloaded = requests.get(record["data"]["attachment"]["location"], timeout=30)
    assert downloaded.content == bytes(range(256)) * 2

    back = tmp_path / "back"
    pulled = run_mirror("pull", remote.url, back)
    assert pulled.returncode == 0, pulled.stderr + pulled.stdout
    assert totals(pulled) == (OBJECTS, 0, 0, 0, 0)
    assert objects_of(back) == objects_of(source.data_dir)
    assert acl_and_files(back) == acl_and_files(source.data_dir)
    # Nothing changed anywhere: both directions find nothing to send.
    assert totals(run_mirror("push", remote.url, source.data_dir)) == (0, 0, 0, 0, 0)
    assert totals(run_mirror("pull", remote.url, back)) == (0, 0, 0, 0, 0)

    records_url = f"{remote.url}/buckets/shop/collections/items/records"
    before = requests.get(records_url, auth=MIRROR, params={"_limit": 1}, timeout=30)
    since = before.headers["ETag"].strip('"')
    alice = kinto_http.Client(server_url=source.url, auth=ALICE, bucket="shop", collection="items")
    with alice.batch() as batch:
        for i in range(50):
            batch.patch_record(id=f"item-{i * 3:05d}", data={"price": -i})
        for i in range(10):
            batch.delete_record(id=f"item-{4000 + i:05d}")

    dry = run_mirror("push", remote.url, source.data_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert len([line for line in dry.stdout.splitlines() if line.startswith("would ")]) == 60
    again = run_mirror("push", remote.url, source.data_dir)
    assert again.returncode == 0, again.stderr + again.stdout
    assert totals(again) == (50, 10, 0, 0, 0)
    changes = requests.get(records_url, auth=MIRROR, params={"_since": since}, timeout=30)
    changed = changes.json()["data"]
    assert len(changed) == 60
    assert sum(1 for record in changed if record.get("deleted")) == 10
    assert {r["id"]: r["price"] for r in changed if not r.get("deleted")} == {
        f"item-{i * 3:05d}": -i for i in range(50)
    }
    assert totals(run_mirror("push", remote.url, source.data_dir)) == (0, 0, 0, 0, 0)


def test_conflict_is_reported_then_resolved_by_choice(start_server, remote):
    daemon = start_server(plugins="flush attachment")
    build_dataset(daemon, records=20)
    assert run_mirror("push", remote.url, daemon.data_dir).returncode == 0
    ours = kinto_http.Client(server_url=daemon.url, auth=ALICE, bucket="shop", collection="items")
    theirs = kinto_http.Client(server_url=remote.url, auth=ALICE, bucket="shop", collection="items")
    ours.patch_record(id="item-00001", data={"title": "ours"})
    theirs.patch_record(id="item-00001", data={"title": "theirs"})
    ours.patch_record(id="item-00002", data={"title": "only ours"})

    reported = run_mirror("push", remote.url, daemon.data_dir)
    assert reported.returncode == 1
    assert "CONFLICT buckets/shop/collections/items/records/item-00001" in reported.stdout
    assert totals(reported) == (1, 0, 0, 1, 0)  # the other change still goes
    assert theirs.get_record(id="item-00001")["data"]["title"] == "theirs"
    assert ours.get_record(id="item-00001")["data"]["title"] == "ours"
    assert theirs.get_record(id="item-00002")["data"]["title"] == "only ours"
    # Reported again until chosen: the cursors did not move past it.
    assert run_mirror("push", remote.url, daemon.data_dir).returncode == 1

    chosen = run_mirror("push", remote.url, daemon.data_dir, "--prefer", "local")
    assert chosen.returncode == 0, chosen.stdout
    assert theirs.get_record(id="item-00001")["data"]["title"] == "ours"
    pulled = run_mirror("pull", remote.url, daemon.data_dir)
    assert pulled.returncode == 0, pulled.stdout
    assert totals(pulled)[3] == 0
    assert ours.get_record(id="item-00001")["data"]["title"] == "ours"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--auth", "no-colon"], "--auth wants USER:PASSWORD"),
        (["--collection", "c"], "--collection needs --bucket"),
        (["--map-principal", "nothing"], "expected LOCAL=REMOTE"),
    ],
)
def test_bad_usage_is_one_line(tmp_path, extra, message):
    command = [sys.executable, "-m", "kintofs", "pull", "http://127.0.0.1:9/v1"]
    done = subprocess.run(
        [*command, "--data-dir", str(tmp_path), "--config", os.devnull, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()  # one line, no traceback
    assert line.startswith("kintofs pull: ") and line.endswith(message)


def test_unreachable_server_and_missing_data_dir(tmp_path):
    port = free_port()  # nothing listens there
    done = run_mirror("pull", f"http://127.0.0.1:{port}/v1", tmp_path / "data")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "Connection refused" in done.stderr
    done = run_mirror("push", f"http://127.0.0.1:{port}/v1", tmp_path / "nowhere")
    assert done.returncode == 2
    assert "is not a kintofs data directory" in done.stderr

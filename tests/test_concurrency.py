"""Two kintofs processes on one data directory, written to at the same time.

Each daemon keeps its own in-memory index; the ``_lock`` file and the
journal are all they share.  Afterwards the data directory must read as if
the writes had happened one after the other: every acknowledged write
present, last writer (highest ``last_modified``) wins, journals ordered and
in agreement with the files, both daemons answering the same.
"""

import json
import os
import random
import signal
import threading
import time
from collections import defaultdict

import pytest
import requests
from conftest import ALICE, Daemon

BUCKET, COLLECTION = "race", "things"
RECORDS = f"/buckets/{BUCKET}/collections/{COLLECTION}/records"
SHARED_IDS = [f"shared{i}" for i in range(4)]
CONTAINER_KINDS = {"buckets": "bucket", "collections": "collection"}
LEAF_KINDS = {"groups": "group", "records": "record", "accounts": "account"}


# -- daemons ---------------------------------------------------------------


@pytest.fixture
def start_daemons(tmp_path):
    """``start(n)``: n daemons on one data directory; all stopped together."""
    started = []

    def start(count, **settings):
        data_dir = tmp_path / "data"
        for _ in range(count):
            started.append(Daemon(data_dir, **settings))
        return started[-count:]

    yield start
    stop_all(started)


def stop_all(daemons, grace=2):
    """SIGTERM every daemon at once, SIGKILL whatever is left after ``grace``."""
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for daemon in daemons:
        try:
            daemon.process.wait(max(0.0, deadline - time.monotonic()))
        except Exception:
            daemon.process.kill()
            daemon.process.wait()
        daemon.stop()  # closes the log


def session():
    s = requests.Session()
    s.auth = ALICE
    return s


def put(s, daemon, path, data):
    return s.put(daemon.url + path, json={"data": data}, timeout=30)


def setup_collection(daemon):
    s = session()
    assert put(s, daemon, f"/buckets/{BUCKET}", {}).status_code == 201
    assert put(s, daemon, f"/buckets/{BUCKET}/collections/{COLLECTION}", {}).status_code == 201


# -- what was acknowledged -------------------------------------------------


class Acks:
    """Every 2xx write, as ``id -> [(last_modified, data or None)]``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes = defaultdict(list)
        self.failures = []

    def record(self, label, status, body):
        with self.lock:
            if not 200 <= status < 300:
                self.failures.append((label, status, str(body)[:300]))
                return
            data = body["data"]
            if data.get("deleted") is True:
                self.writes[data["id"]].append((data["last_modified"], None))
            else:
                self.writes[data["id"]].append((data["last_modified"], data))

    def all_timestamps(self):
        return [ts for writes in self.writes.values() for ts, _ in writes]

    def expected_live(self):
        """The winner of every id: the write with the highest last_modified."""
        live = {}
        for object_id, writes in self.writes.items():
            ts, data = max(writes, key=lambda w: w[0])
            if data is not None:
                live[object_id] = data
        return live

    def journal_entries(self):
        return {
            (("put" if data is not None else "delete"), object_id, ts)
            for object_id, writes in self.writes.items()
            for ts, data in writes
        }


def worker(daemon, tag, seed, writes, acks, barrier):
    try:
        write_randomly(daemon, tag, seed, writes, acks, barrier)
    except Exception as error:  # a dead writer must fail the test, not shrink it
        with acks.lock:
            acks.failures.append((tag, "exception", repr(error)))


def write_randomly(daemon, tag, seed, writes, acks, barrier):
    rng = random.Random(seed)
    s = session()
    own_live = []
    counter = 0

    def new_id():
        nonlocal counter
        counter += 1
        return f"{tag}-{counter}"

    def track(label, response):
        body = response.json() if response.content else {}
        acks.record(label, response.status_code, body)
        return response

    barrier.wait()
    done = 0
    while done < writes:
        roll = rng.random()
        if roll < 0.35:  # create with PUT on a fresh id
            rid = new_id()
            r = track(f"create {rid}", put(s, daemon, f"{RECORDS}/{rid}", {"by": tag, "n": done}))
            if r.status_code == 201:
                own_live.append(rid)
            done += 1
        elif roll < 0.6:  # replace a record every thread writes
            rid = rng.choice(SHARED_IDS)
            track(f"update {rid}", put(s, daemon, f"{RECORDS}/{rid}", {"by": tag, "n": done}))
            done += 1
        elif roll < 0.7:  # patch a shared record
            rid = rng.choice(SHARED_IDS)
            track(
                f"patch {rid}",
                s.patch(
                    daemon.url + f"{RECORDS}/{rid}",
                    json={"data": {"patched_by": tag, "p": done}},
                    timeout=30,
                ),
            )
            done += 1
        elif roll < 0.8 and own_live:  # delete one of ours
            rid = own_live.pop(rng.randrange(len(own_live)))
            track(f"delete {rid}", s.delete(daemon.url + f"{RECORDS}/{rid}", timeout=30))
            done += 1
        elif roll < 0.92:  # a batch: two creates, a shared update, maybe a delete
            subs = []
            created = [new_id(), new_id()]
            for rid in created:
                subs.append(
                    {
                        "method": "PUT",
                        "path": f"{RECORDS}/{rid}",
                        "body": {"data": {"by": tag, "batch": True}},
                    }
                )
            subs.append(
                {
                    "method": "PUT",
                    "path": f"{RECORDS}/{rng.choice(SHARED_IDS)}",
                    "body": {"data": {"by": tag, "batch": True, "n": done}},
                }
            )
            if own_live:
                victim = own_live.pop(rng.randrange(len(own_live)))
                subs.append({"method": "DELETE", "path": f"{RECORDS}/{victim}"})
            r = s.post(daemon.url + "/batch", json={"requests": subs}, timeout=30)
            if r.status_code != 200:
                acks.record("batch", r.status_code, r.text)
            else:
                for sub, response in zip(subs, r.json()["responses"], strict=True):
                    acks.record(
                        f"batch {sub['method']} {sub['path']}", response["status"], response["body"]
                    )
            own_live.extend(created)
            done += len(subs)
        else:  # a read in the middle of it all
            r = s.get(daemon.url + RECORDS, timeout=30)
            if r.status_code != 200:
                acks.record("list", r.status_code, r.text)


def run_workers(daemons, threads_per_daemon, writes, acks, seed=0):
    barrier = threading.Barrier(len(daemons) * threads_per_daemon)
    threads = [
        threading.Thread(
            target=worker, args=(daemon, f"d{d}t{t}", seed + d * 100 + t, writes, acks, barrier)
        )
        for d, daemon in enumerate(daemons)
        for t in range(threads_per_daemon)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"


# -- what is on disk -------------------------------------------------------


def read_journal(path):
    """The entries of ``path``; every line complete, JSON, ts strictly increasing."""
    with open(path, "rb") as f:
        content = f.read()
    assert content.endswith(b"\n"), f"{path}: torn last line"
    entries = [json.loads(line) for line in content.splitlines()]
    stamps = [entry["ts"] for entry in entries]
    for before, after in zip(stamps, stamps[1:], strict=False):
        assert after > before, f"{path}: ts {after} after {before}"
    return entries


def object_file(folder, object_id):
    plural = os.path.basename(folder)
    if plural in CONTAINER_KINDS:
        return os.path.join(folder, object_id, f"_{CONTAINER_KINDS[plural]}.json")
    return os.path.join(folder, f"{object_id}.json")


def object_ids_on_disk(folder):
    plural = os.path.basename(folder)
    names = os.listdir(folder)
    if plural in CONTAINER_KINDS:
        return {n for n in names if os.path.isfile(object_file(folder, n))}
    return {n[: -len(".json")] for n in names if n.endswith(".json")}


def check_every_journal_against_files(root):
    """In each list folder, the journal's latest word on an id is the file's truth."""
    journals = []
    for folder, _, files in os.walk(root):
        if "_journal.jsonl" not in files:
            continue
        journals.append(folder)
        latest = {}
        for entry in read_journal(os.path.join(folder, "_journal.jsonl")):
            if entry["op"] in ("put", "delete"):
                latest[entry["id"]] = entry
        for object_id, entry in latest.items():
            path = object_file(folder, object_id)
            if entry["op"] == "delete":
                assert not os.path.exists(path), f"{path}: deleted at {entry['ts']} but present"
            else:
                assert os.path.isfile(path), f"{path}: journaled put {entry['ts']} but missing"
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                assert data["id"] == object_id
                assert data["last_modified"] == entry["ts"], path
        live = {i for i, e in latest.items() if e["op"] == "put"}
        assert object_ids_on_disk(folder) == live, folder
    return journals


def leftovers(root):
    return [
        os.path.join(folder, name)
        for folder, dirs, files in os.walk(root)
        for name in files + dirs
        if name.startswith((".tmp-", ".trash-"))
    ]


def records_journal(daemon):
    return os.path.join(
        daemon.data_dir, "buckets", BUCKET, "collections", COLLECTION, "records", "_journal.jsonl"
    )


# -- tests -----------------------------------------------------------------


@pytest.mark.slow  # a random write load: soak-style
def test_two_daemons_writing_one_collection_lose_nothing(start_daemons):
    daemons = start_daemons(2)
    assert daemons[0].data_dir == daemons[1].data_dir
    setup_collection(daemons[0])
    acks = Acks()
    s = session()
    for rid in SHARED_IDS:  # created through the *other* daemon
        r = put(s, daemons[1], f"{RECORDS}/{rid}", {"seed": True})
        acks.record(f"seed {rid}", r.status_code, r.json())

    run_workers(daemons, threads_per_daemon=4, writes=60, acks=acks)

    assert acks.failures == []
    stamps = acks.all_timestamps()
    assert len(stamps) >= 2 * 4 * 60
    assert len(set(stamps)) == len(stamps), "two writes got the same last_modified"
    for rid in SHARED_IDS:
        assert len(acks.writes[rid]) > 10, "the same records were written concurrently"

    # Both daemons answer with exactly the acknowledged winners, and one ETag.
    expected = acks.expected_live()
    listings, etags = [], []
    for daemon in daemons:
        r = s.get(daemon.url + RECORDS, timeout=30)
        assert r.status_code == 200
        listings.append({record["id"]: record for record in r.json()["data"]})
        etags.append(r.headers["ETag"])
        for rid in SHARED_IDS:
            one = s.get(daemon.url + f"{RECORDS}/{rid}", timeout=30)
            assert one.json()["data"] == expected[rid]
    assert listings[0] == listings[1]
    assert listings[0] == expected
    assert etags[0] == etags[1] == f'"{max(stamps)}"'

    # The records journal is exactly the acknowledged writes, in order.
    entries = read_journal(records_journal(daemons[0]))
    journaled = {(e["op"], e["id"], e["ts"]) for e in entries if e["op"] != "init"}
    assert journaled == acks.journal_entries()
    assert entries[-1]["ts"] == max(stamps)

    journals = check_every_journal_against_files(daemons[0].data_dir)
    assert len(journals) >= 3  # buckets, collections, records
    assert leftovers(daemons[0].data_dir) == []
    for daemon in daemons:
        assert daemon.process.poll() is None, "a daemon died"
        assert "Traceback" not in daemon.logs()
        assert "journal repaired" not in daemon.logs(), "files and journal disagreed"


def test_same_millisecond_writes_from_two_daemons_get_distinct_timestamps(start_daemons):
    """Writes whose clock reading is not past the list timestamp get ``list_ts + 1``.

    Real writes here take a few ms each, so true same-millisecond collisions
    are rare; a record stamped ten minutes ahead (protocol 2.3, rule 4)
    puts every later write in that situation: their clock says "before the
    list timestamp", so each must get the next integer, across processes.
    """
    daemons = start_daemons(2)
    setup_collection(daemons[1])
    s = session()
    timestamps = []
    failures = []
    guard = threading.Lock()
    subs = [{"method": "POST", "path": RECORDS, "body": {"data": {"i": i}}} for i in range(25)]

    def burst(daemon, barrier):
        s = session()
        barrier.wait()
        for _ in range(2):
            r = s.post(daemon.url + "/batch", json={"requests": subs}, timeout=30)
            with guard:
                if r.status_code != 200:
                    failures.append(r.text)
                    continue
                for response in r.json()["responses"]:
                    if response["status"] != 201:
                        failures.append(response)
                    else:
                        timestamps.append(response["body"]["data"]["last_modified"])

    def run_bursts():
        barrier = threading.Barrier(6)
        threads = [
            threading.Thread(target=burst, args=(daemon, barrier))
            for daemon in daemons
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []

    # 1. Plain concurrent bursts: every timestamp distinct.
    run_bursts()
    assert len(timestamps) == 6 * 2 * 25
    assert len(set(timestamps)) == len(timestamps), "two records share a last_modified"
    natural = list(timestamps)

    # 2. The clock now lags the list timestamp: each write must take the next integer.
    future = int(time.time() * 1000) + 10 * 60 * 1000
    r = put(s, daemons[0], f"{RECORDS}/ahead", {"last_modified": future})
    assert r.status_code == 201 and r.json()["data"]["last_modified"] == future
    timestamps.clear()
    run_bursts()
    assert sorted(timestamps) == list(range(future + 1, future + 1 + 6 * 2 * 25))

    entries = read_journal(records_journal(daemons[0]))  # strictly increasing
    assert sorted(e["ts"] for e in entries if e["op"] == "put") == sorted(
        natural + [future] + timestamps
    )
    listed = [s.get(d.url + RECORDS, timeout=30) for d in daemons]
    assert listed[0].headers["ETag"] == listed[1].headers["ETag"] == f'"{max(timestamps)}"'
    assert len(listed[0].json()["data"]) == len(natural) + 1 + len(timestamps)
    assert listed[0].json()["data"] == listed[1].json()["data"]
    for daemon in daemons:
        assert "Traceback" not in daemon.logs()


@pytest.mark.slow  # over a thousand updates
def test_journal_compaction_by_one_daemon_is_seen_by_the_other(start_daemons):
    """Over a thousand updates of a few records make the journal compact itself
    (it is rewritten, a new inode); the other daemon must notice and reload."""
    daemons = start_daemons(2)
    setup_collection(daemons[0])
    acks = Acks()
    ids = ["a", "b"]

    def hammer(daemon, tag):
        s = session()
        for n in range(22):
            subs = [
                {
                    "method": "PUT",
                    "path": f"{RECORDS}/{ids[i % 2]}",
                    "body": {"data": {"by": tag, "n": n, "i": i}},
                }
                for i in range(25)
            ]
            r = s.post(daemon.url + "/batch", json={"requests": subs}, timeout=30)
            if r.status_code != 200:
                acks.record("batch", r.status_code, r.text)
                return
            for response in r.json()["responses"]:
                acks.record(f"{tag} PUT", response["status"], response["body"])

    threads = [threading.Thread(target=hammer, args=(d, f"d{k}")) for k, d in enumerate(daemons)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert acks.failures == []
    stamps = acks.all_timestamps()
    assert len(stamps) == 2 * 22 * 25 and len(set(stamps)) == len(stamps)
    entries = read_journal(records_journal(daemons[0]))  # ordered, even after compaction
    assert len(entries) < len(stamps), "the journal was never compacted"
    latest = {e["id"]: e["ts"] for e in entries if e["op"] == "put"}
    assert latest == {rid: max(ts for ts, _ in acks.writes[rid]) for rid in ids}
    expected = acks.expected_live()
    s = session()
    for daemon in daemons:
        r = s.get(daemon.url + RECORDS, timeout=30)
        assert {record["id"]: record for record in r.json()["data"]} == expected
        assert r.headers["ETag"] == f'"{max(stamps)}"'
        assert "Traceback" not in daemon.logs()
    check_every_journal_against_files(daemons[0].data_dir)
    assert leftovers(daemons[0].data_dir) == []


def test_sigterm_stops_a_daemon_promptly(start_daemons):
    [daemon] = start_daemons(1)
    setup_collection(daemon)
    daemon.process.send_signal(signal.SIGTERM)
    try:
        code = daemon.process.wait(3)
    except Exception:
        code = None
        daemon.process.kill()
    assert code == 0

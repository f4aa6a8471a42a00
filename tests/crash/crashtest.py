"""Crash test: SIGKILL a busy kintofs at random moments, and lose nothing acknowledged.

Run by hand (figures are printed at the end)::

    python tests/crash/crashtest.py --cycles 50 --seconds 120 [--threads 4] [--seed N]

tests/test_crash.py runs it in CI with modest counts.  Every cycle:

1. start the daemon (``fsync`` on) on the same data directory; it must
   answer, and accept a write at once: no lock left by the killed daemon
   may block it (with ``flock`` none can: the kernel drops a dead process's
   locks);
2. compare every object the writers ever touched with what the daemon
   serves (the rules below), then take what it serves as the new truth;
3. writer threads write (record creates, updates, patches, deletes,
   batches; collection creates and deletes) until SIGKILL hits the daemon
   at a random moment;
4. open the data directory as the next process would (which replays the
   dead daemon's commit log, fsstore/commit.py), then verify it offline
   (kintofs.fsstore.verify): no damage at all, every JSON file parses,
   journals parse and agree with the files (the log completed any commit
   the kill cut), leftovers (temp files, trash) are counted.

At the end the daemon gets SIGTERM (it must exit 0), ``kintofs check
--repair`` must leave the directory clean, and a last daemon must serve
exactly what the writers expect.

What "nothing lost" means, for each object (each object is written by one
writer thread only, one request at a time, so at most one of its writes is
in flight when the daemon dies):

* if no write to it was in flight: the daemon serves exactly the state of
  its last acknowledged (2xx) write, ``last_modified`` included (absent for
  a delete, or when its collection's delete was acknowledged);
* if a write was in flight (sent, no response read): either that, or the
  in-flight write's result: same content apart from ``last_modified``,
  which must be newer than the acknowledged one; absent for a delete;
* the writes of a batch in flight landed all together or not at all (one
  commit);
* nothing else exists: no object that no writer sent.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from conftest import ALICE, Daemon  # noqa: E402

from kintofs.fsstore import FileSystemStore  # noqa: E402
from kintofs.fsstore.verify import verify  # noqa: E402

BUCKET = "/buckets/crash"
SHARED = f"{BUCKET}/collections/shared"
ABSENT = None
FIRST_WRITE_LIMIT_SECONDS = 5  # a stale lock would hold a write for 30 s


# -- what the writers know ---------------------------------------------------


@dataclass
class Known:
    """One object: the state of its last acknowledged write, and the one in flight."""

    acked: object = ABSENT  # dict (as served) or ABSENT
    pending: object = "none"  # "none", or the in-flight write's result (dict without ts, or ABSENT)
    batch: tuple = ()  # (batch number, position) when the in-flight write is in a batch


@dataclass
class Figures:
    cycles: int = 0
    writes_sent: int = 0
    writes_acknowledged: int = 0
    in_flight_at_kill: int = 0
    in_flight_landed: int = 0
    objects_checked: int = 0
    batches_cut_by_kill: int = 0
    replayed: int = 0  # writes the recovery found missing from the files
    leftovers: Counter = field(default_factory=Counter)  # distinct ones, by problem
    seen_leftovers: set = field(default_factory=set)
    max_restart_ms: float = 0.0
    max_first_write_ms: float = 0.0
    failures: list = field(default_factory=list)

    def as_dict(self):
        figures = dict(self.__dict__)
        del figures["seen_leftovers"]
        figures["leftovers"] = dict(self.leftovers)
        figures["failures"] = self.failures[:20]
        return figures


class Model:
    def __init__(self):
        self.lock = threading.Lock()
        self.objects = {}  # uri -> Known
        self.counters = Counter()
        self.batches = 0

    def new_id(self, owner, prefix):
        with self.lock:
            self.counters[owner] += 1
            return f"{owner}-{prefix}{self.counters[owner]}"

    def new_batch(self):
        with self.lock:
            self.batches += 1
            return self.batches

    def known(self, uri):
        with self.lock:
            return self.objects.setdefault(uri, Known())

    def live(self, owner, parent):
        """Uris of ``owner``'s objects directly under ``parent`` that are live."""
        prefix = f"{parent}/"
        with self.lock:
            return sorted(
                uri
                for uri, known in self.objects.items()
                if uri.startswith(prefix)
                and "/" not in uri[len(prefix) :]
                and uri[len(prefix) :].startswith(f"{owner}-")
                and known.acked is not ABSENT
            )


# -- writers -------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes its own objects, one request at a time, until the daemon dies."""

    def __init__(self, owner, daemon, model, figures, rng):
        super().__init__(name=f"writer-{owner}", daemon=True)
        self.owner, self.daemon, self.model, self.figures, self.rng = (
            owner,
            daemon,
            model,
            figures,
            rng,
        )
        self.session = requests.Session()
        self.session.auth = ALICE

    def run(self):
        try:
            while True:
                self.write_once()
        except requests.RequestException:
            return  # the daemon was killed: the write in flight stays pending

    def write_once(self):
        roll = self.rng.random()
        records = self.model.live(self.owner, f"{SHARED}/records")
        scratch = self.model.live(self.owner, f"{BUCKET}/collections")
        if roll < 0.3 or not records:
            self.put(f"{SHARED}/records/{self.model.new_id(self.owner, 'r')}")
        elif roll < 0.5:
            self.put(self.rng.choice(records))
        elif roll < 0.6:
            self.patch(self.rng.choice(records))
        elif roll < 0.7:
            self.delete(self.rng.choice(records))
        elif roll < 0.88:
            self.batch(records)
        elif roll < 0.95 or not scratch:
            self.new_scratch_collection()
        else:
            self.delete(self.rng.choice(scratch))

    # each write: note what it would leave, send it, note what was acknowledged

    def put(self, uri):
        data = {"nonce": self.rng.getrandbits(48), "by": self.owner}
        self.expect(uri, data)
        self.acknowledge(uri, self.send("PUT", uri, {"data": data}))

    def patch(self, uri):
        change = {"patched": self.rng.getrandbits(48)}
        before = self.model.known(uri).acked
        self.expect(uri, dict(_without_ts(before), **change))
        self.acknowledge(uri, self.send("PATCH", uri, {"data": change}))

    def delete(self, uri):
        self.expect(uri, ABSENT)
        self.acknowledge(uri, self.send("DELETE", uri))

    def new_scratch_collection(self):
        uri = f"{BUCKET}/collections/{self.model.new_id(self.owner, 'c')}"
        self.put(uri)
        self.batch([], parent=uri, creates=3)

    def batch(self, records, parent=SHARED, creates=None):
        number = self.model.new_batch()
        subs, uris = [], []
        chosen = self.rng.sample(records, min(len(records), self.rng.randint(0, 3)))
        for _ in range(creates if creates is not None else self.rng.randint(1, 3)):
            chosen.append(f"{parent}/records/{self.model.new_id(self.owner, 'r')}")
        self.rng.shuffle(chosen)
        for position, uri in enumerate(chosen):
            known = self.model.known(uri)
            if known.acked is not ABSENT and self.rng.random() < 0.4:
                result, sub = ABSENT, {"method": "DELETE", "path": uri}
            else:
                data = {"nonce": self.rng.getrandbits(48), "by": self.owner, "batch": number}
                result, sub = data, {"method": "PUT", "path": uri, "body": {"data": data}}
            self.expect(uri, result, (number, position))
            subs.append(sub)
            uris.append(uri)
        response = self.send("POST", "/batch", {"requests": subs})
        if response.status_code != 200:
            return self.fail(f"batch answered {response.status_code}: {response.text[:200]}")
        for uri, sub_response in zip(uris, response.json()["responses"], strict=True):
            self.acknowledge(uri, _FakeResponse(sub_response))

    def expect(self, uri, result, batch=()):
        known = self.model.known(uri)
        with self.model.lock:
            known.pending, known.batch = result, batch
            self.figures.writes_sent += 1

    def send(self, method, uri, body=None):
        return self.session.request(method, self.daemon.url + uri, json=body, timeout=30)

    def acknowledge(self, uri, response):
        if not 200 <= response.status_code < 300:
            return self.fail(f"{uri}: {response.status_code} {str(response.json())[:200]}")
        data = response.json()["data"]
        known = self.model.known(uri)
        with self.model.lock:
            known.acked = ABSENT if data.get("deleted") else data
            known.pending, known.batch = "none", ()
            self.figures.writes_acknowledged += 1

    def fail(self, message):
        with self.model.lock:
            self.figures.failures.append(message)
        raise requests.RequestException(message)  # stop this writer


class _FakeResponse:
    """A batch sub-response seen as a response."""

    def __init__(self, sub):
        self.status_code, self.body = sub["status"], sub["body"]

    def json(self):
        return self.body


def _without_ts(data):
    """The content a writer chose: what the server adds (id, last_modified) left out."""
    return {k: v for k, v in (data or {}).items() if k not in ("id", "last_modified")}


# -- checks --------------------------------------------------------------------


def served_objects(daemon):
    """``{uri: data}`` of every collection and record the daemon serves in the bucket."""
    session = requests.Session()
    session.auth = ALICE
    served = {}
    response = session.get(f"{daemon.url}{BUCKET}/collections", timeout=30)
    assert response.status_code == 200, response.text
    for collection in response.json()["data"]:
        uri = f"{BUCKET}/collections/{collection['id']}"
        served[uri] = collection
        records = session.get(f"{daemon.url}{uri}/records", timeout=30)
        assert records.status_code == 200, records.text
        for record in records.json()["data"]:
            served[f"{uri}/records/{record['id']}"] = record
    return served


def check_served(daemon, model, figures):
    """Judge every known object against what the daemon serves; adopt it as the truth."""
    served = served_objects(daemon)
    gone = {
        uri for uri, known in model.objects.items() if "/records/" not in uri and uri not in served
    }
    landed_in_batches = {}
    for uri, known in sorted(model.objects.items()):
        state = served.get(uri, ABSENT)
        parent = uri.split("/records/")[0] if "/records/" in uri else None
        verdict = judge(known, state, parent_gone=parent in gone)
        figures.objects_checked += 1
        if verdict is None:
            figures.failures.append(
                f"{uri}: served {state}, acknowledged {known.acked}, in flight {known.pending}"
            )
        if known.pending != "none":
            figures.in_flight_at_kill += 1
            figures.in_flight_landed += verdict == "landed"
        if known.batch:
            number, position = known.batch
            landed_in_batches.setdefault(number, {})[position] = verdict == "landed"
        known.acked, known.pending, known.batch = state, "none", ()
    for uri in served.keys() - model.objects.keys():
        figures.failures.append(f"{uri}: served, but no writer ever sent it")
    check_batches_landed_whole(landed_in_batches, figures)


def judge(known, state, parent_gone):
    """ "acked", "landed", or None when ``state`` breaks the rules."""
    if state == known.acked or (state is ABSENT and parent_gone):
        return "acked"
    if known.pending == "none":
        return None
    if known.pending is ABSENT:
        return "landed" if state is ABSENT else None
    newer = known.acked is ABSENT or (
        state and state["last_modified"] > known.acked["last_modified"]
    )
    if state is not ABSENT and _without_ts(state) == _without_ts(known.pending) and newer:
        return "landed"
    return None


def check_batches_landed_whole(landed_in_batches, figures):
    for number, landed in landed_in_batches.items():
        flags = [landed[position] for position in sorted(landed)]
        figures.batches_cut_by_kill += 1
        if len(set(flags)) > 1:
            figures.failures.append(f"batch {number}: landed {flags}, not all or nothing")


def check_on_disk(data_dir, figures):
    """After the kill and the recovery: no damage, no write half done."""
    figures.replayed += FileSystemStore(data_dir, fsync=True).replayed
    report = verify(data_dir)
    for finding in report.findings:
        if finding.damage or finding.problem in ("unjournaled", "missing-file", "stale-file"):
            figures.failures.append(f"after kill: {finding.describe(data_dir)}")
        elif (finding.problem, finding.path) not in figures.seen_leftovers:
            figures.seen_leftovers.add((finding.problem, finding.path))
            figures.leftovers[finding.problem] += 1


# -- the cycle -------------------------------------------------------------------


def start_daemon(data_dir, figures):
    started = time.monotonic()
    daemon = Daemon(data_dir, fsync="true", access_log="")
    figures.max_restart_ms = max(figures.max_restart_ms, (time.monotonic() - started) * 1000)
    started = time.monotonic()
    response = requests.put(f"{daemon.url}{BUCKET}", json={"data": {}}, auth=ALICE, timeout=60)
    took = time.monotonic() - started
    figures.max_first_write_ms = max(figures.max_first_write_ms, took * 1000)
    if response.status_code not in (200, 201) or took > FIRST_WRITE_LIMIT_SECONDS:
        figures.failures.append(f"first write after restart: {response.status_code} in {took:.1f}s")
    return daemon


def run(data_dir, *, cycles, seconds, threads=4, seed=None, kill_after=(0.1, 1.2), log=print):
    """Run up to ``cycles`` kill cycles within about ``seconds``; returns :class:`Figures`."""
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    log(f"crash test: seed {seed}, data in {data_dir}")
    model, figures = Model(), Figures()
    deadline = time.monotonic() + seconds
    daemon = start_daemon(data_dir, figures)
    shared = requests.put(f"{daemon.url}{SHARED}", json={"data": {}}, auth=ALICE, timeout=30)
    assert shared.status_code in (200, 201), shared.text
    model.known(SHARED).acked = shared.json()["data"]
    while figures.cycles < cycles and time.monotonic() < deadline and not figures.failures:
        check_served(daemon, model, figures)
        writers = [
            Writer(f"t{n}", daemon, model, figures, random.Random(rng.getrandbits(64)))
            for n in range(threads)
        ]
        for writer in writers:
            writer.start()
        time.sleep(rng.uniform(*kill_after))
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
        daemon.stop()
        for writer in writers:
            writer.join(60)
        figures.cycles += 1
        check_on_disk(data_dir, figures)
        daemon = start_daemon(data_dir, figures)
    check_served(daemon, model, figures)
    finish(daemon, data_dir, model, figures)
    return figures


def finish(daemon, data_dir, model, figures):
    """SIGTERM, repair what the kills left, and serve everything once more."""
    daemon.process.send_signal(signal.SIGTERM)
    if daemon.process.wait(30) != 0:
        figures.failures.append(f"SIGTERM: exit code {daemon.process.returncode}")
    daemon.stop()
    repaired = kintofs_cli("check", "--repair", "--data-dir", data_dir)
    if repaired.returncode != 0 or "DAMAGE" in repaired.stdout:
        figures.failures.append(f"kintofs check --repair: {repaired.stdout[-1000:]}")
    clean = kintofs_cli("check", "--data-dir", data_dir)
    if clean.returncode != 0:
        figures.failures.append(f"kintofs check after repair: {clean.stdout[-1000:]}")
    daemon = Daemon(data_dir, fsync="true", access_log="")
    try:
        before = figures.objects_checked
        check_served(daemon, model, figures)
        figures.objects_checked = before  # the last look is not a new check
    finally:
        daemon.stop()


def kintofs_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "kintofs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, KINTOFS_FSYNC="true"),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-dir", help="default: a new temporary folder")
    args = parser.parse_args(argv)
    import tempfile

    data_dir = args.data_dir or os.path.join(tempfile.mkdtemp(prefix="kintofs-crash-"), "data")
    figures = run(
        data_dir, cycles=args.cycles, seconds=args.seconds, threads=args.threads, seed=args.seed
    )
    print(json.dumps(figures.as_dict(), indent=2))
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Side-by-side latency of kintofs and real Kinto on big collections (opt-in, not a test).

Starts both servers on 127.0.0.1 (Kinto with its memory backend, from the
virtualenv given by --kinto-venv), loads N records per size with batch
requests, restarts kintofs with fsync on (as in production; loading runs with
fsync off unless --load-fsync: loading is not what is measured), then times:

  (a) filtered, sorted, paginated list: ?in_status=a,b&_sort=-score,title&_limit=50
  (b) _since poll with few changes:     ?_since=<ETag before 5 updates>
  (c) default-order first page:         ?_limit=50

and, before those, the first read of each collection after a restart, with
the index snapshots deleted and with them kept (fsstore/snapshot.py).  It
prints median and p90 latency per server, with the ratio Kinto / kintofs
(above 1: kintofs is faster).  Every request stays on this machine.

    python bench/benchmark.py                      # 1k, 10k and 100k records
    python bench/benchmark.py --sizes 1000,10000   # pick sizes
    python bench/benchmark.py --quick              # 1k records, few requests
"""

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kintofs.fsstore.layout import SNAPSHOT_NAME  # noqa: E402

AUTH = ("bench", "bench-pw")
BATCH_SIZE = 500
UPDATES_BEFORE_POLL = 5
QUERIES = {
    "a: filter+sort+page": {"in_status": "a,b", "_sort": "-score,title", "_limit": "50"},
    "b: _since poll": None,  # built per size from the ETag before a few updates
    "c: first page": {"_limit": "50"},
}
KINTO_INI = """\
[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = %(http_port)s

[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.memory
kinto.storage_url =
kinto.cache_backend = kinto.core.cache.memory
kinto.cache_url =
kinto.permission_backend = kinto.core.permission.memory
kinto.permission_url =
kinto.userid_hmac_secret = bench-secret
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated
kinto.batch_max_requests = {batch}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = plain

[formatter_plain]
format = %(asctime)s %(levelname)s %(name)s %(message)s
"""


# -- servers -------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name, command, port, env=None, log_path=None):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log = open(log_path, "wb")
        # As installed (pip compiles at install): with bytecode caches, which the
        # first start writes where the environment says not to.
        env = dict(os.environ if env is None else env)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.session = requests.Session()
        self.session.auth = AUTH
        self._wait_ready()

    def _wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited; see {self.log.name}")
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        sys.exit(f"{self.name} did not start in {timeout}s; see {self.log.name}")

    def rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_kintofs(workdir, fsync=True, server_class=Server, fsync_delay_ms=0):
    """``fsync_delay_ms``: every fsync of the daemon that much slower (slow_fsync.py)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update(
        {
            "KINTOFS_FSYNC": str(fsync).lower(),
            "KINTOFS_USERID_HMAC_SECRET": "bench-secret",
            "KINTOFS_BATCH_MAX_REQUESTS": str(BATCH_SIZE),
        }
    )
    program = ["-m", "kintofs"]
    if fsync_delay_ms:
        slow_fsync = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_fsync.py")
        program = [slow_fsync, str(fsync_delay_ms)]
    command = [
        sys.executable,
        *program,
        "serve",
        "--port",
        str(port),
        "--data-dir",
        os.path.join(workdir, "data"),
        "--config",
        os.devnull,
    ]
    return server_class("kintofs", command, port, env, os.path.join(workdir, "kintofs.log"))


def start_kinto(workdir, venv, server_class=Server, ini_text=KINTO_INI):
    kinto = os.path.join(venv, "bin", "kinto")
    if not os.path.exists(kinto):
        sys.exit(f"no Kinto in {venv}: give its virtualenv with --kinto-venv")
    ini = os.path.join(workdir, "kinto.ini")
    with open(ini, "w") as f:
        f.write(ini_text.replace("{batch}", str(BATCH_SIZE)))
    port = free_port()
    command = [kinto, "start", "--ini", ini, "--port", str(port)]
    return server_class("kinto", command, port, log_path=os.path.join(workdir, "kinto.log"))


# -- data ----------------------------------------------------------------------


def make_record(rng, i):
    """About 200 bytes of JSON: a title, a status, a score and some text."""
    return {
        "title": f"title {rng.randrange(10**6):06d}",
        "status": rng.choice("abc"),
        "score": rng.randrange(1000),
        "done": rng.random() < 0.5,
        "body": "".join(rng.choice("abcdefghij klmnop") for _ in range(120)),
    }


def load(server, collection, size, seed=0):
    """PUT `size` records in batches; seconds taken."""
    rng = random.Random(seed)
    records = f"/buckets/bench/collections/{collection}/records"
    server.session.put(f"{server.url}/buckets/bench").raise_for_status()
    server.session.put(f"{server.url}/buckets/bench/collections/{collection}").raise_for_status()
    started = time.monotonic()
    for start in range(0, size, BATCH_SIZE):
        batch = [
            {"method": "PUT", "path": f"{records}/r{i:07d}", "body": {"data": make_record(rng, i)}}
            for i in range(start, min(size, start + BATCH_SIZE))
        ]
        response = server.session.post(f"{server.url}/batch", json={"requests": batch})
        response.raise_for_status()
        statuses = {sub["status"] for sub in response.json()["responses"]}
        if statuses - {200, 201}:
            sys.exit(f"{server.name}: batch failed with statuses {statuses}")
    return time.monotonic() - started


def prepare_since_poll(server, collection):
    """Update a few records after taking the ETag: the poll then sees only those."""
    records = f"{server.url}/buckets/bench/collections/{collection}/records"
    etag = server.session.get(records, params={"_limit": "1"}).headers["ETag"].strip('"')
    for i in range(UPDATES_BEFORE_POLL):
        server.session.patch(f"{records}/r{i:07d}", json={"data": {"polled": True}})
    return {"_since": etag}


# -- timing --------------------------------------------------------------------


def first_read_seconds(server, collection):
    """Time of the first list read after a start (kintofs then loads the index)."""
    url = f"{server.url}/buckets/bench/collections/{collection}/records"
    started = time.monotonic()
    server.session.get(url, params={"_limit": "1"}).raise_for_status()
    return time.monotonic() - started


def delete_index_snapshots(data_dir):
    for folder, _dirs, names in os.walk(data_dir):
        if SNAPSHOT_NAME in names:
            os.remove(os.path.join(folder, SNAPSHOT_NAME))


def time_query(server, collection, params, count):
    """Median and p90 of `count` sequential GETs (after two warm-ups), in ms."""
    url = f"{server.url}/buckets/bench/collections/{collection}/records"
    for _ in range(2):
        server.session.get(url, params=params).raise_for_status()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = server.session.get(url, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.9))]


def result_size(server, collection, params):
    url = f"{server.url}/buckets/bench/collections/{collection}/records"
    return len(server.session.get(url, params=params).json()["data"])


def servers_for(servers, size, args):
    """Kinto's memory backend loads in quadratic time (its permission backend
    scans every ACE on each write), so big sizes may run for kintofs alone."""
    return [server for server in servers if server.name == "kintofs" or size <= args.kinto_max_size]


def run(args):
    workdir = tempfile.mkdtemp(prefix="kintofs-bench-")
    servers = []
    rows = []
    try:
        servers = [
            start_kintofs(workdir, fsync=args.load_fsync),
            start_kinto(workdir, args.kinto_venv),
        ]
        for size in args.sizes:
            for server in servers_for(servers, size, args):
                seconds = load(server, f"c{size}", size)
                print(
                    f"loaded {size:>7} records into {server.name:<7} in {seconds:7.1f} s "
                    f"(RSS now {server.rss_mib():.0f} MiB)",
                    flush=True,
                )
        # Restarted twice: without the index snapshots (each big list's first
        # read then parses every file and writes its snapshot), then with them.
        for snapshots in ("deleted", "kept"):
            servers[0].stop()
            if snapshots == "deleted":
                delete_index_snapshots(os.path.join(workdir, "data"))
            servers[0] = start_kintofs(workdir, fsync=True)
            for size in args.sizes:
                seconds = first_read_seconds(servers[0], f"c{size}")
                print(
                    f"kintofs restarted with fsync on, index snapshots {snapshots}: first read "
                    f"of {size:>7} records (index load) {seconds:6.2f} s; "
                    f"RSS now {servers[0].rss_mib():.0f} MiB",
                    flush=True,
                )
        for size in args.sizes:
            collection = f"c{size}"
            measured = servers_for(servers, size, args)
            since = {server.name: prepare_since_poll(server, collection) for server in measured}
            for label, params in QUERIES.items():
                timings = {}
                for server in measured:
                    query = params if params is not None else since[server.name]
                    timings[server.name] = time_query(server, collection, query, args.requests)
                    found = result_size(server, collection, query)
                    timings[server.name] += (found,)
                rows.append((size, label, timings))
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, args.requests)


def print_table(rows, count):
    print()
    print(
        f"Latency in ms over {count} sequential requests (median / p90); "
        "ratio = Kinto median / kintofs median"
    )
    header = (
        f"{'records':>8}  {'query':<20} {'n':>3}  {'kintofs med':>11} {'p90':>7}  "
        f"{'kinto med':>9} {'p90':>7}  {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for size, label, timings in rows:
        ours = timings["kintofs"]
        line = f"{size:>8}  {label:<20} {ours[2]:>3}  {ours[0]:>11.1f} {ours[1]:>7.1f}  "
        if "kinto" in timings:
            theirs = timings["kinto"]
            line += f"{theirs[0]:>9.1f} {theirs[1]:>7.1f}  {theirs[0] / ours[0]:>6.2f}"
        else:
            line += f"{'(not run)':>9} {'':>7}  {'':>6}"
        print(line)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--kinto-venv",
        default="/tmp/kintovenv",
        help="virtualenv holding Kinto (default: /tmp/kintovenv)",
    )
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="comma-separated collection sizes (default: 1000,10000,100000)",
    )
    parser.add_argument(
        "--requests", type=int, default=30, help="timed requests per query and size (default: 30)"
    )
    parser.add_argument(
        "--kinto-max-size",
        type=int,
        default=10000,
        help="largest size also loaded into Kinto (default: 10000; Kinto's "
        "memory backend needs about an hour for 100000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1000 records and 10 requests per query"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and the logs")
    parser.add_argument(
        "--load-fsync",
        action="store_true",
        help="load kintofs with fsync on too (slow: three fsyncs per record)",
    )
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if args.quick:
        args.sizes, args.requests = [1000], 10
    return args


if __name__ == "__main__":
    run(parse_args())

#!/usr/bin/env python3
"""Side-by-side throughput of kintofs and real Kinto, with targets (opt-in, not a test).

In one run, on 127.0.0.1 only:

  * the fsync micro-benchmark: one durable small-file write (temp file, write,
    fsync, rename, fsync folder), serial, new files and overwrites;
  * kintofs's start-up time to a first 200 and its idle RSS, empty data dir;
  * the bare ceiling: a Bottle app on cheroot (kintofs's thread count)
    answering a small JSON hello;
  * kintofs (fsync on, data on the real disk) and Kinto 26.5.0 (memory
    backend; with --postgresql also on a PostgreSQL started here), each
    preloaded with --records records, under N keep-alive connections for
    --duration seconds per scenario: hello, read one record, list with
    filter+sort+_limit=50, _since with 5 changes, create, update, batch of 25
    creations; then, kintofs only, read latency with and without 8 writers.

After each write scenario the records are listed back: every acknowledged
create or update must be there.  Prints a table against the targets of the
speed issue and writes every figure to a JSON file (--json).  The server runs
on one core, the load generator on another.

    python bench/throughput.py                 # 10,000 records, 5 s per scenario
    python bench/throughput.py --quick         # 1,000 records, 2 s per scenario
    python bench/throughput.py --postgresql    # also Kinto on PostgreSQL
    python bench/throughput.py --read-only     # the read target alone, ceiling and kintofs in turns
"""

import argparse
import base64
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from urllib.parse import urlencode

import slow_fsync
from benchmark import (
    AUTH,
    BATCH_SIZE,
    KINTO_INI,
    QUERIES,
    Server,
    first_read_seconds,
    free_port,
    load,
    make_record,
    prepare_since_poll,
    result_size,
    start_kinto,
    start_kintofs,
)

from kintofs.config import DEFAULTS

KINTO_VERSION = "26.5.0"
DEFAULT_KINTO_VENV = os.path.expanduser(f"~/.cache/kintofs-bench/kinto-{KINTO_VERSION}")
THREADS = DEFAULTS["threads"]  # the ceiling serves with kintofs's own thread count
AUTH_HEADER = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
BATCH_CREATES = 25
READ_COLLECTION = "read"
LIST_QUERY = QUERIES["a: filter+sort+page"]
MIXED_READERS = 1
STARTUP_RUNS = 3
COUNT_PAGE = 1000
OTHERS_NOTE_PCT = 10  # others above this share of a core: say the machine was shared


# -- cores -------------------------------------------------------------------


def core_plan():
    """(server cores, load-generator cores), or (None, None) on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[0]}, {cores[1]}


def pin_process(pid, cores):
    """Pin every thread of `pid`; threads it starts later inherit the mask."""
    if not cores:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU time all processes of the machine used, summed over its cores.
    Interrupt time is left out: loopback traffic of this run is counted there."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = f.readline().split()[1:9]
    return sum(int(ticks) for ticks in (user, nice, system, steal)) / os.sysconf("SC_CLK_TCK")


def own_seconds():
    """CPU time of this process and of its children that have ended."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def load_average():
    with open("/proc/loadavg") as f:
        return [float(value) for value in f.read().split()[:3]]


# -- servers -----------------------------------------------------------------


class PinnedServer(Server):
    """benchmark.Server pinned to the server core as soon as it is spawned,
    timing its start-up to the first 200 of GET /v1/ at a 5 ms resolution."""

    cores = None

    def __init__(self, *args, **kwargs):
        self.started = time.monotonic()
        self.startup_seconds = None
        super().__init__(*args, **kwargs)

    def _wait_ready(self, timeout=60):
        pin_process(self.process.pid, self.cores)  # still one thread: all inherit
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited; see {self.log.name}")
            if hello_status(self.port) == 200:
                self.startup_seconds = time.monotonic() - self.started
                return
            time.sleep(0.005)
        sys.exit(f"{self.name} did not start in {timeout}s; see {self.log.name}")


def hello_status(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/v1/")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def serve_ceiling(port):
    """The bare ceiling: Bottle on plain cheroot, nothing else."""
    import bottle
    from cheroot import wsgi

    app = bottle.Bottle()

    @app.get("/v1/")
    def hello():
        bottle.response.content_type = "application/json"
        return json.dumps({"project_name": "ceiling", "url": "http://127.0.0.1/v1/"})

    wsgi.Server(("127.0.0.1", port), app, numthreads=THREADS).safe_start()


def start_ceiling(workdir):
    port = free_port()
    command = [sys.executable, os.path.abspath(__file__), "--serve-ceiling", str(port)]
    return PinnedServer("ceiling", command, port, log_path=os.path.join(workdir, "ceiling.log"))


def subfolder(workdir, name):
    path = os.path.join(workdir, name)
    os.makedirs(path, exist_ok=True)
    return path


# -- Kinto's virtualenv ------------------------------------------------------


def venv_has(venv, module):
    python = os.path.join(venv, "bin", "python")
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def ensure_kinto(venv, postgresql):
    """Kinto KINTO_VERSION in `venv`, installed there once when missing."""
    if not os.path.exists(os.path.join(venv, "bin", "kinto")):
        print(f"installing Kinto {KINTO_VERSION} into {venv} (once)", flush=True)
        subprocess.run(["python3", "-m", "venv", venv], check=True)
        pip_install(venv, f"kinto=={KINTO_VERSION}")
    if postgresql and not venv_has(venv, "psycopg2"):
        print(f"installing Kinto's PostgreSQL extras into {venv}", flush=True)
        pip_install(venv, f"kinto[postgresql]=={KINTO_VERSION}")
    return kinto_version(venv)


def pip_install(venv, requirement):
    pip = os.path.join(venv, "bin", "pip")
    subprocess.run([pip, "install", "--quiet", requirement], check=True)


def kinto_version(venv):
    python = os.path.join(venv, "bin", "python")
    code = "import importlib.metadata as m; print(m.version('kinto'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


# -- PostgreSQL (--postgresql) -----------------------------------------------


def postgres_bin():
    """The folder of pg_ctl/initdb, installing PostgreSQL with apt when missing."""
    found = shutil.which("pg_ctl")
    if not found:
        print("installing postgresql with apt-get", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True)
        candidates = sorted(os.listdir("/usr/lib/postgresql"))
        return os.path.join("/usr/lib/postgresql", candidates[-1], "bin")
    return os.path.dirname(os.path.realpath(found))


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1, durable (fsync) as shipped,
    on the server core: the server side of Kinto gets one core, as kintofs does."""

    def __init__(self, base_dir, cores):
        self.cores = cores
        self.bin = postgres_bin()
        self.folder = tempfile.mkdtemp(prefix="kintofs-bench-pg-", dir=base_dir)
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")  # it refuses to run as root
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = os.path.join(self.folder, "log")
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", log, "-w", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "kinto")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/kinto"

    def _run(self, tool, *args):
        command = [os.path.join(self.bin, tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, preexec_fn=self._pin)

    def _pin(self):
        if self.cores:
            os.sched_setaffinity(0, self.cores)

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def kinto_postgresql_ini(url):
    ini = KINTO_INI
    for backend in ("storage", "permission"):
        ini = ini.replace(
            f"kinto.{backend}_backend = kinto.core.{backend}.memory\nkinto.{backend}_url =\n",
            f"kinto.{backend}_backend = kinto.core.{backend}.postgresql\n"
            f"kinto.{backend}_url = {url}\n",
        )
    return ini


def start_kinto_postgresql(workdir, venv, postgres):
    folder = subfolder(workdir, "kinto-pg")
    ini_text = kinto_postgresql_ini(postgres.url)
    ini = os.path.join(folder, "kinto.ini")
    with open(ini, "w") as f:
        f.write(ini_text.replace("{batch}", str(BATCH_SIZE)))
    migrate = [os.path.join(venv, "bin", "kinto"), "migrate", "--ini", ini]
    subprocess.run(migrate, check=True, capture_output=True)
    server = start_kinto(folder, venv, PinnedServer, ini_text)
    server.name = "kinto-pg"
    return server


# -- the fsync micro-benchmark -----------------------------------------------


def durable_write(folder, name, payload):
    """What a durable small write costs at least: file, rename, folder."""
    temp = os.path.join(folder, f".tmp-{name}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, os.path.join(folder, name))
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def fsync_rate(folder, seconds, overwrite):
    payload = json.dumps(make_record(random.Random(0), 0)).encode()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        name = "same.json" if overwrite else f"r{len(samples):07d}.json"
        started = time.perf_counter()
        durable_write(folder, name, payload)
        samples.append(time.perf_counter() - started)
    total = sum(samples)
    return {
        "ops": len(samples),
        "ms_per_op": total / len(samples) * 1000,
        "ops_per_s": len(samples) / total,
        "p99_ms": percentile(samples, 99) * 1000,
    }


def fsync_benchmark(workdir, seconds, run):
    folder = subfolder(workdir, f"fsync-{run}")
    return {
        "new_file": fsync_rate(folder, seconds, overwrite=False),
        "overwrite": fsync_rate(folder, seconds, overwrite=True),
    }


def best_fsync(runs):
    """The faster run of each kind: what this disk can do when others let it,
    so the reference of the write targets is the harder one to meet."""
    return {
        kind: max((run[kind] for run in runs), key=lambda figures: figures["ops_per_s"])
        for kind in ("new_file", "overwrite")
    }


# -- the load generator ------------------------------------------------------


def percentile(samples, pct):
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class Connection:
    """One keep-alive connection; opens a new one after a failure."""

    def __init__(self, port):
        self.port = port
        self.http = None

    def request(self, method, path, body=None):
        if self.http is None:
            self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": AUTH_HEADER}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.http.request(method, path, body=body, headers=headers)
            response = self.http.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None, b""

    def close(self):
        if self.http is not None:
            self.http.close()
            self.http = None


class Tally:
    """One worker's counts, for the requests that ended inside the window."""

    def __init__(self):
        self.ok = 0
        self.errors = Counter()
        self.latencies = []
        self.longest = 0.0  # of every request, in the window or not: shows stalls

    def add(self, status, expected, seconds):
        self.latencies.append(seconds)
        if status == expected:
            self.ok += 1
        else:
            self.errors[str(status)] += 1


class Window:
    """When counting starts and stops; all workers start together, and the
    times are set by the barrier's action, before any worker passes it."""

    def __init__(self, workers, warmup, duration):
        self.warmup, self.duration = warmup, duration
        self.barrier = threading.Barrier(workers + 1, action=self._open)

    def _open(self):
        self.start = time.perf_counter() + self.warmup
        self.end = self.start + self.duration


def work(window, port, workload, worker, tally):
    connection = Connection(port)
    rng = random.Random(worker)
    window.barrier.wait()
    while time.perf_counter() < window.end:
        started = time.perf_counter()
        status = workload.step(connection, worker, rng)
        ended = time.perf_counter()
        tally.longest = max(tally.longest, ended - started)
        # Counting the requests that end in the window keeps slow ones
        # (a batch can take seconds) from inflating or vanishing from the rate.
        if window.start <= ended <= window.end:
            tally.add(status, workload.expected, ended - started)
    connection.close()


def run_load(server, groups, args):
    """Run each group {name: (connections, workload)} at once; figures per group."""
    workers = sum(count for count, _ in groups.values())
    window = Window(workers, min(1.0, args.duration / 5), args.duration)
    tallies = {name: [Tally() for _ in range(count)] for name, (count, _) in groups.items()}
    threads = []
    for name, (count, workload) in groups.items():
        for worker in range(count):
            worker_args = (window, server.port, workload, worker, tallies[name][worker])
            threads.append(threading.Thread(target=work, args=worker_args, daemon=True))
    for thread in threads:
        thread.start()
    window.barrier.wait()
    usage = measure_cpu(server, window)
    for thread in threads:
        thread.join()
    return {name: summarize(tallies[name], args.duration, usage) for name in groups}


def measure_cpu(server, window):
    """Share of a core used by the server, by this load generator and by the
    machine's other processes (the machine may be shared), in %."""
    time.sleep(max(0.0, window.start - time.perf_counter()))
    before = cpu_snapshot(server)
    time.sleep(max(0.0, window.end - time.perf_counter()))
    after = cpu_snapshot(server)
    server_pct, client_pct, machine_pct = (
        (end - start) / window.duration * 100 for start, end in zip(before, after, strict=True)
    )
    return {
        "server_cpu_pct": server_pct,
        "client_cpu_pct": client_pct,
        "others_cpu_pct": max(0.0, machine_pct - server_pct - client_pct),
    }


def cpu_snapshot(server):
    return cpu_seconds(server.process.pid), time.process_time(), machine_busy_seconds()


def milliseconds(seconds):
    return None if seconds is None else seconds * 1000


def summarize(tallies, seconds, usage):
    latencies = [sample for tally in tallies for sample in tally.latencies]
    errors = sum((tally.errors for tally in tallies), Counter())
    ok = sum(tally.ok for tally in tallies)
    return {
        "connections": len(tallies),
        "requests": ok + sum(errors.values()),
        "ok": ok,
        "errors": sum(errors.values()),
        "errors_by_status": dict(errors),
        "seconds": seconds,
        "rate_per_s": ok / seconds,
        "p50_ms": milliseconds(percentile(latencies, 50)),
        "p99_ms": milliseconds(percentile(latencies, 99)),
        "longest_ms": milliseconds(max(tally.longest for tally in tallies)),
        **usage,
    }


# -- workloads ---------------------------------------------------------------


def records_path(collection):
    return f"/v1/buckets/bench/collections/{collection}/records"


def record_id(index):
    return f"r{index:07d}"  # the ids benchmark.load gives


def bodies(seed, count=64):
    """Record bodies made in advance, so the client spends its time sending."""
    rng = random.Random(seed)
    return [json.dumps({"data": make_record(rng, i)}).encode() for i in range(count)]


class Get:
    expected = 200

    def __init__(self, path):
        self.path = path

    def step(self, connection, worker, rng):
        return connection.request("GET", self.path)[0]


class ReadOne:
    """GET of a random preloaded record."""

    expected = 200

    def __init__(self, collection, count):
        self.prefix = records_path(collection) + "/"
        self.count = count

    def step(self, connection, worker, rng):
        path = self.prefix + record_id(rng.randrange(self.count))
        return connection.request("GET", path)[0]


class Creates:
    """POST of new records; remembers the id of every acknowledged create."""

    expected = 201

    def __init__(self, collection):
        self.collection = collection
        self.path = records_path(collection)
        self.bodies = bodies(seed=1)
        self.acked = []  # list.append is atomic: no lock needed

    def step(self, connection, worker, rng):
        status, body = connection.request("POST", self.path, rng.choice(self.bodies))
        if status == self.expected:
            self.acked.append(json.loads(body)["data"]["id"])
        return status

    def check(self, server):
        listed = listed_records(server, self.collection)
        return lost_report(self.acked, listed, lost=len(set(self.acked) - set(listed)))


class Updates:
    """PATCH of preloaded records, each owned by one worker with a rising
    counter, so the last acknowledged value of each is known."""

    expected = 200

    def __init__(self, collection, count, workers):
        self.collection, self.count, self.workers = collection, count, workers
        self.prefix = records_path(collection) + "/"
        self.acked = {}
        self.counters = [0] * workers

    def step(self, connection, worker, rng):
        self.counters[worker] += 1
        n = self.counters[worker]
        index = rng.randrange(worker, self.count, self.workers)
        body = json.dumps({"data": {"n": n}}).encode()
        status = connection.request("PATCH", self.prefix + record_id(index), body)[0]
        if status == self.expected:
            self.acked[record_id(index)] = n
        return status

    def check(self, server):
        listed = listed_records(server, self.collection, field="n")
        lost = sum(1 for rid, n in self.acked.items() if (listed.get(rid) or 0) < n)
        return lost_report(self.acked, listed, lost)


class Batches:
    """POST /v1/batch of BATCH_CREATES creations; every sub-request must be 201."""

    expected = 200

    def __init__(self, collection):
        self.creates = Creates(collection)
        self.defaults = {"method": "POST", "path": records_path(collection)[len("/v1") :]}

    def step(self, connection, worker, rng):
        subs = [{"body": json.loads(rng.choice(self.creates.bodies))} for _ in range(BATCH_CREATES)]
        payload = json.dumps({"defaults": self.defaults, "requests": subs}).encode()
        status, body = connection.request("POST", "/v1/batch", payload)
        if status != 200:
            return status
        responses = json.loads(body)["responses"]
        created = [sub["body"]["data"]["id"] for sub in responses if sub["status"] == 201]
        self.creates.acked.extend(created)
        return 200 if len(created) == BATCH_CREATES else "batch-sub-error"

    def check(self, server):
        return self.creates.check(server)


def listed_records(server, collection, field=None):
    """{id: field value} of every record, page by page, as the server lists them."""
    params = {"_limit": str(COUNT_PAGE)}
    if field:
        params["_fields"] = field
    url = f"{server.url}/buckets/bench/collections/{collection}/records?{urlencode(params)}"
    listed = {}
    while url:
        response = server.session.get(url)
        response.raise_for_status()
        for record in response.json()["data"]:
            listed[record["id"]] = record.get(field) if field else True
        url = response.headers.get("Next-Page")
    return listed


def lost_report(acked, listed, lost):
    return {"acknowledged": len(acked), "counted": len(listed), "lost": lost}


# -- scenarios ---------------------------------------------------------------


def create_collection(server, name):
    server.session.put(f"{server.url}/buckets/bench/collections/{name}").raise_for_status()


def measure(server, name, workload, args):
    result = run_load(server, {name: (args.connections, workload)}, args)[name]
    if hasattr(workload, "check"):
        result.update(workload.check(server))
    print(f"  {server.name:<8} {name:<14} {brief(result)}", flush=True)
    return result


def brief(result):
    line = (
        f"{result['rate_per_s']:8.1f}/s  p50 {number(result['p50_ms'], 6, 1)} ms  "
        f"p99 {number(result['p99_ms'], 6, 1)} ms  errors {result['errors']}"
    )
    if "lost" in result:
        line += f"  lost {result['lost']}"
    return line


def read_scenarios(server, args):
    records = records_path(READ_COLLECTION)
    first_read = first_read_seconds(server, READ_COLLECTION)  # kintofs loads its index
    print(f"  {server.name:<8} first list read {first_read:.2f} s", flush=True)
    results = {
        "first_read_s": first_read,
        "hello": measure(server, "hello", Get("/v1/"), args),
        "read": measure(server, "read", ReadOne(READ_COLLECTION, args.records), args),
        "list": measure(server, "list", Get(f"{records}?{urlencode(LIST_QUERY)}"), args),
    }
    results["list"]["found"] = result_size(server, READ_COLLECTION, LIST_QUERY)
    since = prepare_since_poll(server, READ_COLLECTION)
    results["since"] = measure(server, "since", Get(f"{records}?{urlencode(since)}"), args)
    results["since"]["found"] = result_size(server, READ_COLLECTION, since)
    return results


def write_scenarios(server, args):
    # Not "batches": Kinto refuses any sub-request whose path holds "/batch".
    for name in ("creates", "bulk"):
        create_collection(server, name)
    updates = Updates(READ_COLLECTION, args.records, args.connections)
    return {
        "create": measure(server, "create", Creates("creates"), args),
        "update": measure(server, "update", updates, args),
        "batch": measure(server, "batch", Batches("bulk"), args),
    }


def reads_while_writing(server, args):
    """Read latency of one client, alone and while `connections` clients create
    records in the very collection it reads (the case that contends most)."""
    reads = ReadOne(READ_COLLECTION, args.records)
    alone = run_load(server, {"reads": (MIXED_READERS, reads)}, args)["reads"]
    writes = Creates(READ_COLLECTION)
    groups = {"reads": (MIXED_READERS, reads), "writes": (args.connections, writes)}
    mixed = run_load(server, groups, args)
    mixed["writes"].update(writes.check(server))
    result = {
        "reads_alone": alone,
        "reads_with_writers": mixed["reads"],
        "writers": mixed["writes"],
    }
    for name, figures in result.items():
        print(f"  {server.name:<8} {name:<18} {brief(figures)}", flush=True)
    return result


def preload(server, args):
    seconds = load(server, READ_COLLECTION, args.records)
    print(f"  {server.name:<8} loaded {args.records} records in {seconds:.1f} s", flush=True)


# -- runs per server ---------------------------------------------------------


def kintofs_startup(workdir):
    """Start-up to a first 200 and idle RSS, each start on an empty data dir."""
    runs = []
    for run in range(STARTUP_RUNS):
        server = start_kintofs(subfolder(workdir, f"start-{run}"), True, PinnedServer)
        time.sleep(1.0)  # idle: whatever start-up leaves running has settled
        runs.append({"startup_s": server.startup_seconds, "idle_rss_mib": server.rss_mib()})
        server.stop()
    return {
        "runs": runs,
        "startup_s": statistics.median(run["startup_s"] for run in runs),
        "idle_rss_mib": statistics.median(run["idle_rss_mib"] for run in runs),
    }


def run_ceiling(workdir, args):
    server = start_ceiling(workdir)
    try:
        return {"hello": measure(server, "hello", Get("/v1/"), args)}
    finally:
        server.stop()


def run_kintofs(workdir, args):
    """Preload with fsync off (three fsyncs per record would take minutes),
    then measure a restarted daemon with fsync on, as in production."""
    folder = subfolder(workdir, "kintofs")
    loader = start_kintofs(folder, False, PinnedServer)
    preload(loader, args)
    loader.stop()
    server = start_kintofs(folder, True, PinnedServer, fsync_delay_ms=args.fsync_delay_ms)
    try:
        results = read_scenarios(server, args)
        results.update(write_scenarios(server, args))
        results["reads_while_writing"] = reads_while_writing(server, args)
        results["rss_after_mib"] = server.rss_mib()
        return results
    finally:
        server.stop()


def run_kinto(server, args):
    try:
        results = {"startup_s": server.startup_seconds, "idle_rss_mib": server.rss_mib()}
        preload(server, args)
        results.update(read_scenarios(server, args))
        results.update(write_scenarios(server, args))
        results["rss_after_mib"] = server.rss_mib()
        return results
    finally:
        server.stop()


def run_kinto_postgresql(workdir, args):
    postgres = Postgres(os.path.dirname(workdir), PinnedServer.cores)
    try:
        return run_kinto(start_kinto_postgresql(workdir, args.kinto_venv, postgres), args)
    finally:
        postgres.stop()


# -- targets and report ------------------------------------------------------


def row(label, unit, ours, kinto, reference=None, target=None):
    """One line of the table; target = (text, met or None)."""
    ratio = ours / kinto if ours is not None and kinto else None
    text, met = target or ("", None)
    return {
        "label": label,
        "unit": unit,
        "kintofs": ours,
        "kinto_memory": kinto,
        "ratio": ratio,
        "reference": reference,
        "target": text,
        "met": met,
    }


def rate(figures, name):
    return figures[name]["rate_per_s"]


def compared(results, name, label, unit, reference=None, minimum=None):
    """A row comparing scenario `name`; minimum = (bound, text) for kintofs."""
    ours, kinto = rate(results["kintofs"], name), rate(results["kinto_memory"], name)
    return row(label, unit, ours, kinto, reference, minimum and at_least(ours, *minimum))


def scenario_rows(results):
    ceiling = rate(results["ceiling"], "hello")
    new_file = results["fsync"]["new_file"]["ops_per_s"]
    overwrite = results["fsync"]["overwrite"]["ops_per_s"]
    kinto_creates = rate(results["kinto_memory"], "create")
    return [
        compared(results, "hello", "hello GET /v1/", "req/s", ceiling),
        compared(
            results, "read", "read one record (GET)", "req/s", ceiling,
            (0.45 * ceiling, ">= 45% of ceiling"),
        ),
        compared(
            results, "create", "create (POST, 8 writers)", "rec/s", new_file,
            (0.5 * new_file, ">= 50% of fsync rate"),
        ),
        compared(
            results, "create", "create vs Kinto memory", "rec/s", None,
            (4 * kinto_creates, ">= 4x Kinto memory"),
        ),
        compared(
            results, "update", "update (PATCH, 8 writers)", "rec/s", overwrite,
            (0.5 * overwrite, ">= 50% of fsync overwrite"),
        ),
        compared(results, "batch", "batch of 25 creations", "batch/s", None, (40, None)),
        compared(results, "list", "list filter+sort+_limit=50", "req/s"),
        compared(results, "since", "_since, 5 changes", "req/s"),
    ]  # fmt: skip


def other_rows(results):
    ours, kinto, startup = results["kintofs"], results["kinto_memory"], results["kintofs_startup"]
    mixed = ours["reads_while_writing"]
    alone, busy = mixed["reads_alone"]["p99_ms"], mixed["reads_with_writers"]["p99_ms"]
    rss, start_s = startup["idle_rss_mib"], startup["startup_s"]
    errors, lost = total(ours, "errors"), total(ours, "lost")
    return [
        row(
            "read p99 while 8 write", "ms", busy, None, alone,
            at_most(busy, 2 * alone, f"<= 2x p99 alone ({2 * alone:.3g})"),
        ),
        row(
            "idle RSS, empty data dir", "MiB", rss, kinto["idle_rss_mib"], None,
            at_most(rss, 30, "<= 30 MiB"),
        ),
        row(
            "start-up to first 200", "s", start_s, kinto["startup_s"], None,
            at_most(start_s, 0.3, "<= 0.3 s"),
        ),
        row("errors, all scenarios", "", errors, total(kinto, "errors"), None, at_most(errors, 0)),
        row("lost records, all writes", "", lost, total(kinto, "lost"), None, at_most(lost, 0)),
    ]  # fmt: skip


def at_least(value, bound, text=None):
    """A relative target names what its bound is made of; a fixed one is the bound."""
    return (f"{text} ({bound:.4g})" if text else f">= {bound:g}"), value >= bound


def at_most(value, bound, text=None):
    return text or str(bound), value <= bound


def total(results, key):
    """Sum of `key` over every load run of one server."""
    return sum(figures.get(key, 0) for _, figures in load_runs(results))


def number(value, width, decimals):
    """`value` right-aligned, or a dash when there is none (no request ended)."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{decimals}f}"


def cell(value, width):
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, int) or (isinstance(value, float) and value >= 100):
        return f"{value:>{width}.0f}"
    return f"{value:>{width}.2f}"


def print_table(rows, title):
    print(f"\n{title}")
    header = (
        f"{'scenario':<27} {'unit':<7} {'kintofs':>9} {'Kinto mem':>9} {'ratio':>6} "
        f"{'ceiling':>8}  {'target':<34} met"
    )
    print(header)
    print("-" * len(header))
    for line in rows:
        met = {True: "met", False: "NOT MET", None: ""}[line["met"]]
        print(
            f"{line['label']:<27} {line['unit']:<7} {cell(line['kintofs'], 9)} "
            f"{cell(line['kinto_memory'], 9)} {cell(line['ratio'], 6)} "
            f"{cell(line['reference'], 8)}  {line['target']:<34} {met}"
        )


def print_details(results):
    print(
        "\nPer scenario and server (CPU in % of one core; cli = this load generator, "
        "others = the machine's other processes; max = longest request, in the window or not)"
    )
    header = (
        f"{'server':<16} {'scenario':<18} {'conn':>4} {'ok/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'errors':>6} {'lost':>5} {'srv cpu':>7} {'cli cpu':>7} "
        f"{'others':>6}"
    )
    print(header)
    print("-" * len(header))
    for server, name, figures in every_load_run(results):
        print(
            f"{server:<16} {name:<18} {figures['connections']:>4} {figures['rate_per_s']:>8.1f} "
            f"{number(figures['p50_ms'], 7, 2)} {number(figures['p99_ms'], 7, 2)} "
            f"{number(figures['longest_ms'], 7, 0)} {figures['errors']:>6} "
            f"{figures.get('lost', ''):>5} {figures['server_cpu_pct']:>7.0f} "
            f"{figures['client_cpu_pct']:>7.0f} {figures['others_cpu_pct']:>6.0f}"
        )


def every_load_run(results):
    """(server, scenario, figures) of every load run of the whole benchmark."""
    for server in ("ceiling", "kintofs", "kinto_memory", "kinto_postgresql"):
        for name, figures in load_runs(results.get(server, {})):
            yield server, name, figures


def load_runs(server_results):
    """(scenario, figures) of one server's load runs; the reads-while-writing
    runs sit one level down, under their own names."""
    for name, figures in server_results.items():
        if not isinstance(figures, dict):
            continue
        if "rate_per_s" in figures:
            yield name, figures
        else:
            yield from load_runs(figures)


def print_fsync(fsync, workdir_fs):
    print(f"\nDurable small-file write, serial, on {workdir_fs} (the faster of two runs):")
    for name in ("new_file", "overwrite"):
        figures = fsync[name]
        print(
            f"  {name:<9} {figures['ms_per_op']:6.2f} ms/op  {figures['ops_per_s']:7.1f} ops/s  "
            f"p99 {figures['p99_ms']:6.2f} ms  ({figures['ops']} ops)"
        )


def print_postgresql(results):
    pg, kinto = results.get("kinto_postgresql"), results["kinto_memory"]
    if not pg:
        return
    print("\nKinto on PostgreSQL (durable) vs Kinto memory, ok/s:")
    for name in ("hello", "read", "list", "since", "create", "update", "batch"):
        print(
            f"  {name:<8} {pg[name]['rate_per_s']:8.1f}  (memory {kinto[name]['rate_per_s']:8.1f})"
        )
    print(f"  errors {total(pg, 'errors')}, lost records {total(pg, 'lost')}")
    if pg["batch"].get("lost"):
        # Kinto's batch view: a sub-request's 409 aborts the whole transaction,
        # yet the sub-responses before it were already answered 201.
        print("  (Kinto aborts a batch's transaction on a 409 after answering 201 to earlier subs)")


# -- the run -----------------------------------------------------------------


def filesystem_of(path):
    """(type, mount point) of the file system holding `path`."""
    best = ("?", "")
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, fstype = line.split()[:3]
            if (path + "/").startswith(mount.rstrip("/") + "/") and len(mount) >= len(best[1]):
                best = (fstype, mount)
    return best


def real_disk_workdir(base):
    """A temp folder on a real disk: tmpfs would make fsync free."""
    base = base or tempfile.gettempdir()
    if filesystem_of(base)[0] in ("tmpfs", "ramfs"):
        base = os.path.expanduser("~/.cache/kintofs-bench")
        os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="kintofs-throughput-", dir=base)


def meta(args, workdir, server_cores, client_cores):
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores_online": os.cpu_count(),
        "server_cores": sorted(server_cores or []),
        "client_cores": sorted(client_cores or []),
        "load_average_before": load_average(),
        "workdir": workdir,
        "workdir_fs": "{} on {}".format(*filesystem_of(workdir)),
        "kinto_version": args.kinto_version,
        "records": args.records,
        "duration_s": args.duration,
        "connections": args.connections,
        "fsync_delay_ms": args.fsync_delay_ms,
        "threads": THREADS,
    }


def run(args):
    server_cores, client_cores = core_plan()
    PinnedServer.cores = server_cores
    if client_cores:
        os.sched_setaffinity(0, client_cores)  # threads started from here inherit it
    sys.setswitchinterval(0.0005)  # a busy client thread must not skew another's timing
    if args.read_only:
        return run_read_only(args)
    if args.fsync_delay_ms:
        slow_fsync.install(args.fsync_delay_ms)  # the micro-benchmark's fsyncs, as kintofs's
    args.kinto_version = ensure_kinto(args.kinto_venv, args.postgresql)
    workdir = real_disk_workdir(args.workdir)
    results = {"meta": meta(args, workdir, server_cores, client_cores)}
    started = time.monotonic(), machine_busy_seconds(), own_seconds()
    try:
        measure_all(results, workdir, args)
        results["meta"]["others_cpu_pct"] = others_share(started)
    finally:
        if args.keep:
            print(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, args)


# -- --read-only: the read target alone -------------------------------------


def run_read_only(args):
    """The ceiling and kintofs (fsync on) started once each, then measured in
    turns, --rounds times: on a shared machine the rounds show the noise, and
    the median ratio is the figure.  Also gives each server's CPU time per
    request, which other processes disturb less than its rate."""
    args.kinto_version = None
    workdir = real_disk_workdir(args.workdir)
    results = {"meta": meta(args, workdir, PinnedServer.cores, None), "rounds": []}
    folder = subfolder(workdir, "kintofs")
    try:
        loader = start_kintofs(folder, False, PinnedServer)
        preload(loader, args)
        loader.stop()
        servers = {
            "ceiling": start_ceiling(workdir),
            "kintofs": start_kintofs(folder, True, PinnedServer),
        }
        first_read_seconds(servers["kintofs"], READ_COLLECTION)
        scenarios = {
            "ceiling": ("hello", Get("/v1/")),
            "kintofs": ("read", ReadOne(READ_COLLECTION, args.records)),
        }
        try:
            for _ in range(args.rounds):
                results["rounds"].append(
                    {
                        name: measure(server, *scenarios[name], args)
                        for name, server in servers.items()
                    }
                )
        finally:
            for server in servers.values():
                server.stop()
    finally:
        if args.keep:
            print(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report_read_only(results, args)


def cpu_per_request_us(figures):
    return figures["server_cpu_pct"] / 100 * figures["seconds"] / max(1, figures["ok"]) * 1e6


def report_read_only(results, args):
    print(
        f"\nread one record vs the bare ceiling, {args.connections} connections, "
        f"{args.duration:g} s per run (cpu µs: the server's CPU time per request)"
    )
    header = (
        f"{'round':>5} {'ceiling/s':>10} {'cpu µs':>7} {'read/s':>8} {'cpu µs':>7} "
        f"{'ratio':>6} {'others':>6}"
    )
    print(header)
    print("-" * len(header))
    ratios = []
    for number, run in enumerate(results["rounds"]):
        ceiling, read = run["ceiling"], run["kintofs"]
        ratios.append(read["rate_per_s"] / ceiling["rate_per_s"])
        print(
            f"{number:>5} {ceiling['rate_per_s']:>10.1f} {cpu_per_request_us(ceiling):>7.0f} "
            f"{read['rate_per_s']:>8.1f} {cpu_per_request_us(read):>7.0f} {ratios[-1]:>6.3f} "
            f"{read['others_cpu_pct']:>5.0f}%"
        )
    ratio = statistics.median(ratios)
    results["median_ratio"] = ratio
    met = "met" if ratio >= 0.45 else "NOT MET"
    print(f"median ratio {ratio:.3f}: read one record >= 45% of the ceiling {met}")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"all figures in {args.json}")


def measure_all(results, workdir, args):
    fsync_seconds = max(1.0, args.duration / 2)
    print(f"fsync micro-benchmark in {workdir}", flush=True)
    fsync_runs = [fsync_benchmark(workdir, fsync_seconds, "start")]
    print("kintofs start-up on an empty data dir", flush=True)
    results["kintofs_startup"] = kintofs_startup(workdir)
    print("bare Bottle + cheroot ceiling", flush=True)
    results["ceiling"] = run_ceiling(workdir, args)
    print("kintofs (fsync on)", flush=True)
    results["kintofs"] = run_kintofs(workdir, args)
    print(f"Kinto {args.kinto_version} (memory backend)", flush=True)
    kinto = start_kinto(subfolder(workdir, "kinto"), args.kinto_venv, PinnedServer)
    results["kinto_memory"] = run_kinto(kinto, args)
    if args.postgresql:
        print(f"Kinto {args.kinto_version} (PostgreSQL)", flush=True)
        results["kinto_postgresql"] = run_kinto_postgresql(workdir, args)
    print("fsync micro-benchmark again", flush=True)
    fsync_runs.append(fsync_benchmark(workdir, fsync_seconds, "end"))
    results["fsync"] = {**best_fsync(fsync_runs), "runs": fsync_runs}


def others_share(started):
    """Mean share of a core that processes other than this run's used."""
    wall, machine, own = started
    seconds = time.monotonic() - wall
    others = (machine_busy_seconds() - machine) - (own_seconds() - own)
    return max(0.0, others / seconds * 100)


def report(results, args):
    results["rows"] = scenario_rows(results) + other_rows(results)
    print_fsync(results["fsync"], results["meta"]["workdir_fs"])
    print_details(results)
    print_postgresql(results)
    title = (
        f"kintofs vs Kinto {args.kinto_version} (memory): {args.records} records, "
        f"{args.connections} connections, {args.duration:g} s per scenario; "
        "ratio = kintofs / Kinto; ceiling column = the target's reference"
        + (
            f"; every fsync {args.fsync_delay_ms:g} ms slower (slow_fsync.py)"
            if args.fsync_delay_ms
            else ""
        )
    )
    print_table(results["rows"], title)
    info = results["meta"]
    print(
        f"\nload average before the run {info['load_average_before']}; other processes "
        f"used {info['others_cpu_pct']:.0f}% of a core on average during it"
    )
    if info["others_cpu_pct"] > OTHERS_NOTE_PCT:
        print("note: the machine was shared with other busy processes during the run")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"all figures in {args.json}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--kinto-venv",
        default=DEFAULT_KINTO_VENV,
        help=f"virtualenv holding Kinto, made there when missing (default: {DEFAULT_KINTO_VENV})",
    )
    parser.add_argument("--records", type=int, default=10000, help="preloaded (default: 10000)")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per scenario (default: 5)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="keep-alive clients (default: 8)"
    )
    parser.add_argument("--quick", action="store_true", help="1000 records, 2 s per scenario")
    parser.add_argument(
        "--postgresql", action="store_true", help="also Kinto on a PostgreSQL started here"
    )
    parser.add_argument("--json", help="where to write every figure (default: a temp file)")
    parser.add_argument("--workdir", help="parent of the temp data folder (a real disk)")
    parser.add_argument("--keep", action="store_true", help="keep the data and the logs")
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="only the read target: the ceiling and kintofs measured in turns (--rounds)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns of --read-only (default: 5)")
    parser.add_argument(
        "--fsync-delay-ms",
        type=float,
        default=0,
        help="make every fsync of kintofs and of the micro-benchmark this much slower,"
        " as on a slow SD card (slow_fsync.py)",
    )
    parser.add_argument("--serve-ceiling", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.duration = 1000, 2.0
    if not args.json:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.json = os.path.join(tempfile.gettempdir(), f"kintofs-throughput-{stamp}.json")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_ceiling:
        serve_ceiling(arguments.serve_ceiling)
    else:
        run(arguments)

#!/usr/bin/env python3
"""What each part of a read costs: GET of one record, part by part (opt-in, not a test).

Two measures, on one preloaded collection of --records records:

  * the daemon: the server's CPU time per request (its CPU seconds over the
    requests of a run) under throughput.py's read load, for kintofs and for
    variants of it with a part taken out: a stub app answering the very bytes
    of a real read (no bottle, no kintofs code), then without the request
    gate (plain cheroot), then without the access log; and the bare ceiling.
    Each variant is the daemon started through this script (--serve), which
    swaps the part out before `kintofs serve` runs: no kintofs file changes.
    All are started once, then measured in turns (--rounds) on the server
    core; the medians are printed.  A part costs the difference between two
    rows.
  * the app, in this process: the WSGI app as `kintofs serve` builds it
    (access log on a stream, as its default "-" is) serving GETs of random records in a loop, the
    functions of each part wrapped in timers (the time of nested parts
    subtracted).  The timers add about half a microsecond per call: read
    these as shares of the app.

  * with --instructions N, the daemon again, each variant under valgrind's
    callgrind: the user-space instructions of every thread per request, over
    N reads (instrumentation on around them only).  Deterministic within 1%,
    where CPU times vary by 10-15% from one run to another on a shared
    machine; blind to the kernel's work and to cache misses.

    python bench/read_costs.py                  # 10,000 records, 5 rounds of 3 s
    python bench/read_costs.py --rounds 9 --records 1000
    python bench/read_costs.py --instructions 1000   # also callgrind (apt-get install valgrind)
"""

import argparse
import base64
import glob
import http.client
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from benchmark import AUTH, free_port, start_kintofs
from throughput import (
    READ_COLLECTION,
    Get,
    PinnedServer,
    ReadOne,
    core_plan,
    first_read_seconds,
    preload,
    real_disk_workdir,
    record_id,
    run_load,
    start_ceiling,
    subfolder,
)

AUTH_HEADER = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()

# name -> (parts taken out, what the row is)
VARIANTS = {
    "kintofs": ((), "kintofs as shipped: read one record"),
    "stub": (("app",), "stub app: gate, access log, cheroot"),
    "stub-nogate": (("app", "gate"), "stub app, no gate: access log, cheroot"),
    "stub-nogate-nolog": (("app", "gate", "log"), "stub app alone: cheroot and the kernel"),
}


# -- the daemon's variants (this script, run with --serve) ---------------------


def serve_variant(name, serve_args):
    """`kintofs serve serve_args...` with the parts of VARIANTS[name] swapped out."""
    from cheroot import wsgi

    import kintofs.server as server
    from kintofs.cli import main

    removed = VARIANTS[name][0]
    if "gate" in removed:

        class PlainServer(wsgi.Server):
            def __init__(self, bind_addr, app, limits, **kwargs):
                kwargs.setdefault("request_queue_size", 1024)  # as GatedServer
                super().__init__(bind_addr, app, **kwargs)

        server.GatedServer = PlainServer
    if "log" in removed:
        server.with_access_log = lambda app, destination: app
    if "app" in removed:
        build_app = server.build_app

        def stub_app(settings):
            app, service = build_app(settings)
            status, headers, body = one_read(app, f"{records_path()}/{record_id(0)}")

            def stub(environ, start_response):
                start_response(status, list(headers))
                return [body]

            return stub, service

        server.build_app = stub_app
    return main(["serve", *serve_args])


def records_path():
    return f"/v1/buckets/bench/collections/{READ_COLLECTION}/records"


def environ_of(path):
    """A GET as cheroot hands it to the app."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8888",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8888",
        "HTTP_ACCEPT_ENCODING": "identity",
        "HTTP_AUTHORIZATION": AUTH_HEADER,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def one_read(app, path):
    """(status, headers, body) of one GET through the WSGI app."""
    answer = []
    chunks = app(
        environ_of(path), lambda status, headers, exc_info=None: answer.extend([status, headers])
    )
    body = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return answer[0], answer[1], body


def start_variant(name, folder):
    """A daemon of VARIANTS[name] on the data of `folder` (fsync on, as shipped)."""
    if name == "kintofs":
        return start_kintofs(folder, True, PinnedServer)
    port = free_port()
    command, env = variant_command(name, folder, port)
    return PinnedServer(name, command, port, env, os.path.join(folder, f"{name}.log"))


def variant_command(name, folder, port):
    """(command, environment) of a daemon of VARIANTS[name], or of the ceiling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update({"KINTOFS_FSYNC": "true", "KINTOFS_USERID_HMAC_SECRET": "bench-secret"})
    if name == "ceiling":
        throughput = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")
        return [sys.executable, throughput, "--serve-ceiling", str(port)], env
    data = os.path.join(folder, "data")
    serve = ["--port", str(port), "--data-dir", data, "--config", os.devnull]
    if name == "kintofs":
        return [sys.executable, "-m", "kintofs", "serve", *serve], env
    return [sys.executable, os.path.abspath(__file__), "--serve", name, *serve], env


def cpu_us(figures):
    """The server's CPU time per request of a run, in µs."""
    return figures["server_cpu_pct"] / 100 * figures["seconds"] / max(1, figures["ok"]) * 1e6


def measure_daemons(folder, workdir, args):
    servers = {"ceiling": start_ceiling(workdir)}
    for name in VARIANTS:
        servers[name] = start_variant(name, folder)
        first_read_seconds(servers[name], READ_COLLECTION)
    runs = {name: [] for name in servers}
    try:
        for number in range(args.rounds):
            for name, server in servers.items():
                workload = (
                    Get("/v1/") if name == "ceiling" else ReadOne(READ_COLLECTION, args.records)
                )
                figures = run_load(server, {name: (args.connections, workload)}, args)[name]
                runs[name].append(figures)
                print(
                    f"  round {number} {name:<18} {figures['rate_per_s']:8.1f}/s  "
                    f"cpu {cpu_us(figures):5.0f} µs/request  others {figures['others_cpu_pct']:3.0f}%",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
    return {
        name: {
            "rate_per_s": statistics.median(f["rate_per_s"] for f in figures),
            "cpu_us": statistics.median(cpu_us(f) for f in figures),
            "errors": sum(f["errors"] for f in figures),
        }
        for name, figures in runs.items()
    }


def print_daemons(medians):
    print("\nThe daemon, medians of the rounds (cpu: the server's CPU time per request)")
    for name, label in [("ceiling", "bare ceiling: Bottle hello on cheroot")] + [
        (name, label) for name, (_, label) in VARIANTS.items()
    ]:
        row = medians[name]
        print(f"  {label:<44} {row['rate_per_s']:8.1f}/s  {row['cpu_us']:5.0f} µs")
    cpu = {name: row["cpu_us"] for name, row in medians.items()}
    print("  so, per read:")
    for label, value in (
        ("cheroot and the kernel (stub app alone)", cpu["stub-nogate-nolog"]),
        ("access log", cpu["stub-nogate"] - cpu["stub-nogate-nolog"]),
        ("request gate", cpu["stub"] - cpu["stub-nogate"]),
        ("app: edge, bottle, kintofs", cpu["kintofs"] - cpu["stub"]),
    ):
        print(f"    {label:<42} {value:5.0f} µs")
    ratio = medians["kintofs"]["rate_per_s"] / medians["ceiling"]["rate_per_s"]
    print(f"  read one record / ceiling: {ratio:.3f} (target >= 0.45)")


# -- the daemon's instructions (--instructions) -------------------------------


def count_instructions(name, folder, requests, connections):
    """User-space instructions per request of one daemon under callgrind."""
    port = free_port()
    command, env = variant_command(name, folder, port)
    out = os.path.join(folder, f"callgrind-{name}.out")
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    with open(out + ".log", "wb") as log:
        process = subprocess.Popen(valgrind + command, env=env, stdout=log, stderr=log)
    path = "/v1/" if name == "ceiling" else None
    try:
        wait_for(port, process)
        send_reads(port, 400, connections, path)  # warm-up: the index loaded, every path taken
        control = ["callgrind_control", "-i"]
        subprocess.run([*control, "on", str(process.pid)], capture_output=True, check=True)
        send_reads(port, requests, connections, path)
        subprocess.run([*control, "off", str(process.pid)], capture_output=True, check=True)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    total = 0
    for part in glob.glob(out + "*"):  # one file per thread or dump
        if not part.endswith(".log"):
            with open(part) as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
    return total / requests


def wait_for(port, process, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"a daemon under valgrind exited ({process.args[-1]})")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            connection.request("GET", "/v1/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.5)
        finally:
            connection.close()
    sys.exit("a daemon under valgrind did not start")


def send_reads(port, count, connections, path=None):
    """`count` GETs (random records, or `path`) over keep-alive connections; all must be 200."""

    def work(seed):
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            for _ in range(count // connections):
                target = path or f"{records_path()}/{record_id(rng.randrange(records_count))}"
                connection.request("GET", target, headers={"Authorization": AUTH_HEADER})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(response.status)
        finally:
            connection.close()

    failures = []
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"reads under valgrind failed: {sorted(set(failures))}")


records_count = 10000  # set by run()


def measure_instructions(folder, args):
    counts = {}
    for name in ["ceiling", *VARIANTS]:
        counts[name] = count_instructions(name, folder, args.instructions, args.connections)
        print(f"  {name:<18} {counts[name]:>12,.0f} instructions per request", flush=True)
    print("  so, per read:")
    for label, value in (
        ("cheroot (stub app alone)", counts["stub-nogate-nolog"]),
        ("access log", counts["stub-nogate"] - counts["stub-nogate-nolog"]),
        ("request gate", counts["stub"] - counts["stub-nogate"]),
        ("app: edge, bottle, kintofs", counts["kintofs"] - counts["stub"]),
    ):
        print(f"    {label:<42} {value:>12,.0f}")
    return counts


# -- the app, in process ---------------------------------------------------------

# (module, attribute, function) -> part; every function a part is timed, its
# callees in other parts subtracted.
APP_PARTS = {
    "access log": [("kintofs.web.accesslog", "AccessLog", "__call__"),
                   ("kintofs.web.accesslog", "AccessLog", "_write")],
    "edge: version, redirects, common headers": [
        ("kintofs.web.app", "EdgeMiddleware", "__call__"),
        ("kintofs.web.app", "EdgeMiddleware", "_early_response"),
        ("kintofs.web.app", "EdgeMiddleware", "_with_common_headers"),
        ("kintofs.web.app", None, "refused_origin")],
    "bottle: request and response objects, plugins": [("bottle", "Bottle", "__call__")],
    "routing (bottle's router)": [("bottle", "Router", "match")],
    "request state (query string)": [("kintofs.web.app", "RequestState", "__init__")],
    "authentication (Basic, user id)": [("kintofs.web.ratelimit", None, "refuse_if_blocked"),
                                        ("kintofs.web.app", None, "authenticate"),
                                        ("kintofs.web.app", None, "note_userid")],
    "permission check": [("kintofs.acl.membership", "MembershipIndex", "groups_of"),
                         ("kintofs.web.authorizer", "Authorizer", "settings_allow"),
                         ("kintofs.web.authorizer", "Authorizer", "allowed"),
                         ("kintofs.web.authorizer", "Authorizer", "require"),
                         ("kintofs.web.authorizer", "Authorizer", "path_acls"),
                         ("kintofs.web.app", "RequestState", "grants"),
                         ("kintofs.acl.rules", None, "allowed")],
    "index lookups (bucket, collection, record)": [
        ("kintofs.fsstore.store", "FileSystemStore", "get"),
        ("kintofs.fsstore.store", "FileSystemStore", "list")],
    "view logic (ids, preconditions, _fields)": [
        ("kintofs.web.app", "RequestState", "stored"),
        ("kintofs.web.resource", "ResourceView", "__init__"),
        ("kintofs.web.resource", "ResourceView", "object"),
        ("kintofs.web.resource", "ResourceView", "read"),
        ("kintofs.web.resource", "ResourceView", "get"),
        ("kintofs.web.resource", "ResourceView", "_check_path_ids"),
        ("kintofs.web.resource", "ResourceView", "_check_preconditions"),
        ("kintofs.web.request", None, "check_accept"),
        ("kintofs.query", None, "parse_fields")],
    "response headers (ETag, Last-Modified, cache)": [
        ("kintofs.web.resource", None, "timestamp_headers"),
        ("kintofs.web.resource", "ResourceView", "_cache_headers")],
    "JSON body and response object": [
        ("kintofs.web.resource", "ResourceView", "_object_response"),
        ("kintofs.web.errors", None, "json_response")],
}  # fmt: skip


class PartTimer:
    """Exclusive time per part: a stack of running timers, children subtracted."""

    def __init__(self):
        self.totals, self._stack = {}, []

    def wrap(self, owner, name, part):
        original = getattr(owner, name, None)
        if original is None:
            return  # not in this version of kintofs

        def timed(*args, **kwargs):
            started = time.perf_counter()
            self._stack.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                inner = self._stack.pop()
                spent = time.perf_counter() - started
                self.totals[part] = self.totals.get(part, 0.0) + spent - inner
                if self._stack:
                    self._stack[-1] += spent

        setattr(owner, name, timed)


def measure_app(folder, args):
    import importlib

    from kintofs.config import load_settings
    from kintofs.server import build_app
    from kintofs.web.accesslog import with_access_log

    timer = PartTimer()
    for part, functions in APP_PARTS.items():
        for module, owner, name in functions:
            target = importlib.import_module(module)
            timer.wrap(getattr(target, owner) if owner else target, name, part)
    import kintofs.acl as acl
    import kintofs.acl.rules as rules

    acl.allowed = rules.allowed  # the name the authorizer calls
    overrides = {"data_dir": os.path.join(folder, "data"), "userid_hmac_secret": "bench-secret"}
    app, service = build_app(load_settings(os.devnull, overrides=overrides, environ={}))
    # The access log as the daemon writes it by default: to stderr, here a file.
    stderr, sys.stderr = sys.stderr, open(os.path.join(folder, "access.log"), "w")
    try:
        app = with_access_log(app, "-")
    finally:
        sys.stderr = stderr
    rng = random.Random(0)
    paths = [f"{records_path()}/{record_id(rng.randrange(args.records))}" for _ in range(2000)]
    for path in paths:  # warm-up: the index is loaded, every code path taken
        one_read(app, path)
    rounds = []
    for _ in range(args.rounds):
        timer.totals.clear()
        started = time.perf_counter()
        for path in paths:
            one_read(app, path)
        total = (time.perf_counter() - started) / len(paths) * 1e6
        rounds.append(
            ({part: spent / len(paths) * 1e6 for part, spent in timer.totals.items()}, total)
        )
    service.store.close()
    medians = {part: statistics.median(r[0].get(part, 0.0) for r in rounds) for part in APP_PARTS}
    medians["total, the timers included"] = statistics.median(r[1] for r in rounds)
    print(
        f"\nThe app in this process, µs per read (medians of {args.rounds} rounds of {len(paths)})"
    )
    for part, value in medians.items():
        print(f"  {part:<46} {value:6.1f}")
    return medians


# -- the run -----------------------------------------------------------------


def run(args):
    global records_count
    records_count = args.records
    server_cores, client_cores = core_plan()
    PinnedServer.cores = server_cores
    if client_cores:
        os.sched_setaffinity(0, client_cores)
    sys.setswitchinterval(0.0005)
    workdir = real_disk_workdir(args.workdir)
    folder = subfolder(workdir, "kintofs")
    try:
        loader = start_kintofs(folder, False, PinnedServer)
        preload(loader, args)
        loader.stop()
        results = {"daemon": measure_daemons(folder, workdir, args)}
        print_daemons(results["daemon"])
        if client_cores:
            os.sched_setaffinity(0, server_cores)  # the app alone, on the server core
        results["app"] = measure_app(folder, args)
        if args.instructions:
            print(f"\nThe daemon under callgrind, {args.instructions} reads each")
            results["instructions"] = measure_instructions(folder, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"all figures in {args.json}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10000, help="preloaded (default: 10000)")
    parser.add_argument("--rounds", type=int, default=5, help="turns of each (default: 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (default: 3)")
    parser.add_argument("--connections", type=int, default=8, help="clients (default: 8)")
    parser.add_argument("--workdir", help="parent of the temp data folder (a real disk)")
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count instructions per request under callgrind, over N reads",
    )
    parser.add_argument("--json", help="where to write every figure")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sys.exit(serve_variant(sys.argv[2], sys.argv[3:]))
    run(parse_args())

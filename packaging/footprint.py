#!/usr/bin/env python3
"""Measure kintofs's footprint: start-up time and resident memory.

    python3 packaging/footprint.py [--pyz dist/kintofs.pyz] [--threads N] [--records N]

Starts a daemon on 127.0.0.1 with an empty temporary data directory, then
reports:

* start-up: from spawning the process to the first answer of
  ``/v1/__heartbeat__``;
* VmRSS idle, after that first answer and one ``GET /v1/``;
* the time to load ``--records`` records (default 10,000) into one
  collection with ``POST /v1/batch`` (``batch_max_requests`` per batch);
* VmRSS after reading them all back once (which builds the list's index);
* VmHWM, the peak resident memory.

Memory comes from ``/proc/<pid>/status`` (Linux only). Only the standard
library is used, so the script runs on the small machine itself. Extra
settings: ``--setting name=value`` (as ``KINTOFS_<NAME>`` variables).
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

AUTH = "Basic " + base64.b64encode(b"footprint:footprint").decode()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kib(pid, field):
    """A ``Vm*`` line of /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class Client:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}/v1"

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": AUTH, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def wait_ready(self, process, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"kintofs exited with {process.returncode}")
            try:
                self.call("GET", "/__heartbeat__")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.01)
        raise RuntimeError("kintofs did not answer in time")


def start_daemon(command, data_dir, port, settings):
    env = {name: value for name, value in os.environ.items() if not name.startswith("KINTOFS_")}
    env.update({f"KINTOFS_{name.upper()}": value for name, value in settings.items()})
    # Without a pyz, run the source tree next to this script, with its
    # bytecode compiled as an installed kintofs has it (see main).
    env["PYTHONPATH"] = REPO
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.Popen(
        [*command, "serve", "--config", os.devnull, "--port", str(port), "--data-dir", data_dir],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def load_records(client, count, per_batch):
    client.call("PUT", "/buckets/footprint")
    client.call("PUT", "/buckets/footprint/collections/items")
    path = "/buckets/footprint/collections/items/records"
    for start in range(0, count, per_batch):
        requests = [
            {
                "method": "POST",
                "path": path,
                "body": {"data": {"title": f"item {n}", "done": n % 2 == 0, "rank": n}},
            }
            for n in range(start, min(start + per_batch, count))
        ]
        responses = client.call("POST", "/batch", {"requests": requests})["responses"]
        failed = [r for r in responses if r["status"] != 201]
        if failed:
            raise RuntimeError(f"batch sub-request failed: {failed[0]}")
    listed = client.call("GET", path + f"?_limit={count}")["data"]
    if len(listed) != count:
        raise RuntimeError(f"read back {len(listed)} records, expected {count}")


def measure(command, records, settings):
    port = free_port()
    client = Client(port)
    with tempfile.TemporaryDirectory(prefix="kintofs-footprint-") as temp:
        started = time.monotonic()
        process = start_daemon(command, os.path.join(temp, "data"), port, settings)
        try:
            client.wait_ready(process)
            startup = time.monotonic() - started
            client.call("GET", "/")
            idle = memory_kib(process.pid, "VmRSS")
            per_batch = client.call("GET", "/")["settings"]["batch_max_requests"]
            started = time.monotonic()
            load_records(client, records, per_batch)
            loading = time.monotonic() - started
            return {
                "startup_s": round(startup, 3),
                "rss_idle_mib": round(idle / 1024, 1),
                "records": records,
                "load_s": round(loading, 1),
                "rss_loaded_mib": round(memory_kib(process.pid, "VmRSS") / 1024, 1),
                "peak_mib": round(memory_kib(process.pid, "VmHWM") / 1024, 1),
            }
        finally:
            process.terminate()
            process.wait(30)


def parse_setting(text):
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    return name, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", help="run this kintofs.pyz (default: the source tree)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run kintofs with")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--threads", type=int, help="the threads setting")
    parser.add_argument("--no-fsync", action="store_true", help="fsync = false (faster load)")
    parser.add_argument(
        "--setting",
        type=parse_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other setting, repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    command = [args.python, "-I", args.pyz] if args.pyz else [args.python, "-m", "kintofs"]
    settings = dict(args.setting)
    if args.threads is not None:
        settings["threads"] = str(args.threads)
    if args.no_fsync:
        settings["fsync"] = "false"
    if not args.pyz:
        # pip compiles a package's modules at install; without their caches a
        # start spends about 0.2 s compiling kintofs (where the environment
        # sets PYTHONDONTWRITEBYTECODE, every start would).
        subprocess.run([args.python, "-m", "compileall", "-q", os.path.join(REPO, "kintofs")])
    result = measure(command, args.records, settings)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>15}: {value}")


if __name__ == "__main__":
    main()

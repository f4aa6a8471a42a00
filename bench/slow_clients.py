#!/usr/bin/env python3
"""Latency of honest requests while slow clients hold connections (opt-in, not a test).

Starts kintofs on 127.0.0.1 (fsync on, default deadlines, 10 worker threads),
stores one record, then times ``GET /v1/`` and a record GET from one honest
client, first with no other connection open, then with ``--slow`` slow
connections open: a third send headers that never end, a third a declared
body one byte at a time, a third an endless chunked body, each trickling a
few bytes every second (within every deadline while measuring). Prints
p50 and p99 per case, the daemon's threads and RSS. Every request stays on
this machine.

    python bench/slow_clients.py               # 600 slow connections
    python bench/slow_clients.py --slow 1500 --requests 2000
"""

import argparse
import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

AUTH = ("bench", "bench-pw")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(data_dir, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update({"KINTOFS_USERID_HMAC_SECRET": "bench", "KINTOFS_ACCESS_LOG": ""})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kintofs",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            data_dir,
            "--config",
            os.devnull,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            requests.get(url + "/__lbheartbeat__", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("kintofs did not start")


def status_of(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return "?"


class SlowClients:
    def __init__(self, port, count):
        auth = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
        path = "/v1/buckets/bench/collections/c/records"
        openings = [
            (b"GET /v1/ HTTP/1.1\r\nHost: x\r\n", b"X"),
            (
                f"PUT {path}/slow HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{".encode(),
                b" ",
            ),
            (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
                b"1\r\n \r\n",
            ),
        ]
        self.sockets = []
        for index in range(count):
            opening, trickle = openings[index % 3]
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(opening)
            self.sockets.append((sock, trickle))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self):
        while not self._stop.wait(1):
            for sock, piece in self.sockets:
                try:
                    sock.send(piece)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._thread.join()
        for sock, _ in self.sockets:
            sock.close()


def measure(session, url, count):
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url, auth=AUTH, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", type=int, default=600, help="slow connections (default 600)")
    parser.add_argument("--requests", type=int, default=1000, help="honest requests per case")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="kintofs-slow-bench-")
    port = free_port()
    process, url = start_daemon(os.path.join(folder, "data"), port)
    try:
        session = requests.Session()
        session.put(url + "/buckets/bench", auth=AUTH, timeout=10).raise_for_status()
        session.put(url + "/buckets/bench/collections/c", auth=AUTH, timeout=10).raise_for_status()
        record = url + "/buckets/bench/collections/c/records/r1"
        session.put(
            record, json={"data": {"title": "hello"}}, auth=AUTH, timeout=10
        ).raise_for_status()
        targets = {"GET /v1/": url + "/", "record GET": record}
        rows = []
        for label, slow_count in (("none open", 0), (f"{args.slow} slow open", args.slow)):
            slow = SlowClients(port, slow_count) if slow_count else None
            try:
                time.sleep(1)  # every slow client has begun
                for name, target in targets.items():
                    started = time.monotonic()
                    p50, p99 = measure(session, target, args.requests)
                    rows.append((label, name, p50, p99, time.monotonic() - started))
                rows.append(
                    (
                        label,
                        "daemon",
                        status_of(process.pid, "Threads"),
                        status_of(process.pid, "VmRSS"),
                        None,
                    )
                )
            finally:
                if slow:
                    slow.close()
        print(f"{'case':<18} {'request':<12} {'p50 ms':>8} {'p99 ms':>8}")
        for label, name, p50, p99, elapsed in rows:
            if elapsed is None:
                print(f"{label:<18} {name:<12} threads {p50}, RSS {int(p99) / 1024:.1f} MiB")
            else:
                print(f"{label:<18} {name:<12} {p50:8.2f} {p99:8.2f}")
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

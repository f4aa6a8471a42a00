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
import shutil
import socket
import statistics
import tempfile
import threading
import time

from benchmark import AUTH, start_kintofs  # the side-by-side benchmark's daemon


def threads_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("Threads:"))


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
    server = start_kintofs(folder)  # fsync on, default deadlines, 10 worker threads
    try:
        url, session = server.url, server.session
        session.put(url + "/buckets/bench", timeout=10).raise_for_status()
        session.put(url + "/buckets/bench/collections/c", timeout=10).raise_for_status()
        record = url + "/buckets/bench/collections/c/records/r1"
        session.put(record, json={"data": {"title": "hello"}}, timeout=10).raise_for_status()
        print(f"{'case':<18} {'request':<12} {'p50 ms':>8} {'p99 ms':>8}")
        for label, slow_count in (("none open", 0), (f"{args.slow} slow open", args.slow)):
            slow = SlowClients(server.port, slow_count) if slow_count else None
            try:
                time.sleep(1)  # every slow client has begun
                for name, target in (("GET /v1/", url + "/"), ("record GET", record)):
                    p50, p99 = measure(session, target, args.requests)
                    print(f"{label:<18} {name:<12} {p50:8.2f} {p99:8.2f}")
                print(
                    f"{label:<18} {'daemon':<12} threads {threads_of(server.process.pid)}, "
                    f"RSS {server.rss_mib():.1f} MiB"
                )
            finally:
                if slow:
                    slow.close()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

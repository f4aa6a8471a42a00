#!/usr/bin/env python3
"""Time ``kintofs push`` and ``kintofs pull`` against Kinto 26.5.0 on PostgreSQL (opt-in).

Starts a private PostgreSQL and Kinto (tests/kinto_pg.py: the test suite's
own fixtures; the Kinto venv is built once in .pytest_cache), writes N
records into one collection of a fresh data directory, pushes it to Kinto,
pulls it into another fresh data directory, and prints the seconds and
records/s of each way, for each N:

    .venv/bin/python bench/mirror.py                  # 5,000 and 50,000 records
    .venv/bin/python bench/mirror.py --records 1000
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from kinto_pg import KintoServer, PostgresCluster, kinto_venv  # noqa: E402

from kintofs.fsstore import FileSystemStore  # noqa: E402

AUTH = "mirror:mirror-pw"


class Cache:
    """What kinto_venv asks of pytest's ``config.cache``: a folder under .pytest_cache/d."""

    def mkdir(self, name):
        folder = Path(HERE, "..", ".pytest_cache", "d", name).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def fill(data_dir, records):
    store = FileSystemStore(data_dir, fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("bench", {}, {"write": ["system.Authenticated"]})
    with store.list((("bucket", "bench"),), "collection").transaction() as writer:
        writer.put("items", {}, {})
    path = (("bucket", "bench"), ("collection", "items"))
    with store.list(path, "record").transaction() as writer:
        for i in range(records):
            data = {"title": f"item {i}", "price": i * 1.5, "tags": ["a", str(i % 10)]}
            writer.put(f"r{i:06d}", data, {"read": ["system.Everyone"]})
    store.close()


def timed(command, url, data_dir):
    env = {**os.environ, "KINTOFS_FSYNC": "true"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kintofs", command, url, "--auth", AUTH, "--data-dir", data_dir]
        + ["--config", os.devnull],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{command} failed: {done.stderr}{done.stdout}")
    return seconds, done.stdout.strip().splitlines()[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, action="append", help="(repeatable)")
    args = parser.parse_args()
    sizes = args.records or [5000, 50000]
    cluster = PostgresCluster()
    work = tempfile.mkdtemp(prefix="kintofs-bench-mirror-")
    kinto = KintoServer(kinto_venv(Cache()), cluster.url, work, "bench-secret")
    try:
        print(f"{'records':>8} {'way':>5} {'seconds':>8} {'records/s':>10}")
        for size in sizes:
            kinto.flush()
            source, back = os.path.join(work, f"src-{size}"), os.path.join(work, f"back-{size}")
            fill(source, size)
            for command, data_dir in (("push", source), ("pull", back)):
                seconds, summary = timed(command, kinto.url, data_dir)
                print(f"{size:>8} {command:>5} {seconds:>8.1f} {size / seconds:>10.0f}   {summary}")
    finally:
        kinto.stop()
        cluster.stop()


if __name__ == "__main__":
    main()

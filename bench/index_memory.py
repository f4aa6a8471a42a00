#!/usr/bin/env python3
"""What a list's in-memory index costs, against FileList.memory_estimate (opt-in, not a test).

Builds lists in a temporary data directory, loads them in a fresh store and
measures, with tracemalloc, the bytes each part of the index takes:

  * a list with no object (LIST_BYTES);
  * one live object, for several shapes of data (OBJECT_BYTES, and the
    per-"," and per-"{" parts of the JSON estimate, fitted by least squares);
  * one tombstone, one stale change pair, one signature of our own write;

then, in a fresh child process each, the resident memory (RSS) that loading
5,000 small lists (one record each, as a bucket's collections or a
collection's records) adds, and that one big list per shape adds, next to
the estimates.  The constants in kintofs/fsstore/listing.py
come from this script; rerun it after changing the index.

    python bench/index_memory.py             # 5,000 objects per shape
    python bench/index_memory.py --n 20000
"""

import argparse
import gc
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kintofs.fsstore import (
    FileSystemStore,  # noqa: E402
    listing,  # noqa: E402
)

PRINCIPAL = "basicauth:" + "a" * 64
RECORDS = ((("bucket", "b"), ("collection", "c")), "record")


def text(rnd, n):
    return "".join(rnd.choice(string.ascii_letters + " ") for _ in range(n))


def shapes():
    rnd = random.Random(1)
    return {
        "tiny": lambda i: {"n": i},
        "note-200B": lambda i: {
            "title": text(rnd, 20),
            "text": text(rnd, 120),
            "done": i % 2 == 0,
            "n": i,
            "tags": ["a", "b"],
        },
        "text-2KB": lambda i: {"text": text(rnd, 2000)},
        "ints-100": lambda i: {"values": list(range(i, i + 100))},
        "floats-50": lambda i: {"values": [i + 0.5 + k for k in range(50)]},
        "nested": lambda i: {"a": {"b": {"c": [{"x": k, "y": str(k)} for k in range(10)]}}},
        "keys-30": lambda i: {f"field{k}": k * i for k in range(30)},
        "words-20": lambda i: {"words": [text(rnd, 8) for _ in range(20)]},
    }


def build(data_dir, n, make, *, lists=1):
    store = FileSystemStore(data_dir, fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {"write": [PRINCIPAL]})
    with store.list((("bucket", "b"),), "collection").transaction() as writer:
        for c in range(lists):
            writer.put("c" if lists == 1 else f"c{c}", {}, {"write": [PRINCIPAL]})
    for c in range(lists):
        records = store.list(
            (("bucket", "b"), ("collection", "c" if lists == 1 else f"c{c}")), "record"
        )
        with records.transaction() as writer:
            writer.timestamp()
            for i in range(n):
                writer.put(f"r{i}", make(i), {"write": [PRINCIPAL]})


def traced(action):
    """Bytes still allocated after ``action()`` (its result is kept alive)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = action()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def json_features(stored):
    text = json.dumps(stored.data, separators=(",", ":")) + json.dumps(
        stored.acl, separators=(",", ":")
    )
    return len(text), text.count(","), text.count("{")


def solve(rows, targets):
    """Least squares by the normal equations (no numpy needed)."""
    k = len(rows[0])
    a = [
        [sum(r[i] * r[j] for r in rows) for j in range(k)]
        + [sum(r[i] * t for r, t in zip(rows, targets, strict=True))]
        for i in range(k)
    ]
    for i in range(k):
        pivot = max(range(i, k), key=lambda r: abs(a[r][i]))
        a[i], a[pivot] = a[pivot], a[i]
        for r in range(k):
            if r != i:
                f = a[r][i] / a[i][i]
                a[r] = [x - f * y for x, y in zip(a[r], a[i], strict=True)]
    return [a[i][k] / a[i][i] for i in range(k)]


def per_list(root, lists):
    data = os.path.join(root, "lists")
    build(data, 0, None, lists=lists)
    store = FileSystemStore(data, fsync=False)
    store.list((("bucket", "b"),), "collection").timestamp()
    size, _ = traced(
        lambda: [
            store.list((("bucket", "b"), ("collection", f"c{c}")), "record").timestamp()
            for c in range(lists)
        ]
    )
    return size / lists


def per_object(root, n):
    """Per shape: traced bytes, JSON features and estimate per object (pair included)."""
    results = {}
    for name, make in shapes().items():
        data = os.path.join(root, name)
        build(data, n, make)
        store = FileSystemStore(data, fsync=False)
        records = store.list(*RECORDS)
        empty = records.memory_estimate
        size, _ = traced(records.timestamp)
        features = [
            sum(f) / n for f in zip(*(json_features(s) for s in records.live()), strict=True)
        ]
        estimate = (records.memory_estimate - empty) / n
        results[name] = (size / n, features, estimate)
    return results


def per_tombstone(root, n):
    data = os.path.join(root, "tombstones")
    build(data, n, lambda i: {})
    store = FileSystemStore(data, fsync=False)
    with store.list(*RECORDS).transaction() as writer:
        for i in range(n):
            writer.delete(f"r{i}")
    records = FileSystemStore(data, fsync=False).list(*RECORDS)
    size, _ = traced(records.timestamp)
    return size / n - listing.PAIR_BYTES  # the pair is counted apart


def per_stale_pair_and_signature(root, n):
    data = os.path.join(root, "stale")
    build(data, n, lambda i: {"n": i})
    records = FileSystemStore(data, fsync=False).list(*RECORDS)
    records.timestamp()

    def rewrite_each():
        with records.transaction() as writer:
            for i in range(n):
                writer.put(f"r{i}", {"n": i}, {"write": [PRINCIPAL]})

    size, _ = traced(rewrite_each)  # n stale pairs and n signatures, same objects
    return size / n


def rss_child(data, n):
    """Run in a fresh child: RSS added by loading the list built in ``data``, and the estimate."""
    store = FileSystemStore(data, fsync=False)
    records = store.list(*RECORDS)
    before = rss_bytes()
    records.timestamp()
    gc.collect()
    grown = rss_bytes() - before
    print(json.dumps([grown / n, (records.memory_estimate - listing.LIST_BYTES) / n]))


def rss_lists_child(data, lists):
    """Run in a fresh child: RSS per small list loaded from ``data``, and the estimate."""
    store = FileSystemStore(data, fsync=False)
    store.list((("bucket", "b"),), "collection").timestamp()
    before, estimate = rss_bytes(), store.memory_estimate
    for c in range(lists):
        store.list((("bucket", "b"), ("collection", f"c{c}")), "record").timestamp()
    gc.collect()
    print(json.dumps([(rss_bytes() - before) / lists, (store.memory_estimate - estimate) / lists]))


def child(*args):
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="objects per shape")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-lists-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.n)
        return
    if args.rss_lists_child:
        rss_lists_child(args.rss_lists_child, 5000)
        return
    root = tempfile.mkdtemp(prefix="kintofs-index-memory-")
    try:
        print(
            f"list with no object: {per_list(root, 2000):7.0f} B traced "
            f"(LIST_BYTES = {listing.LIST_BYTES})"
        )
        small = os.path.join(root, "small-lists")
        build(small, 1, lambda i: {"n": i}, lists=5000)
        rss, estimate = child("--rss-lists-child", small)
        print(f"small list (one record) loaded: {rss:7.0f} B RSS, estimate {estimate:7.0f} B")
        print(
            f"tombstone:           {per_tombstone(root, args.n):7.0f} B traced "
            f"(TOMBSTONE_BYTES = {listing.TOMBSTONE_BYTES})"
        )
        print(
            f"stale pair + signature of a rewritten object: "
            f"{per_stale_pair_and_signature(root, args.n):7.0f} B traced "
            f"(PAIR_BYTES + SIGNATURE_BYTES = {listing.PAIR_BYTES + listing.SIGNATURE_BYTES})"
        )
        objects = per_object(root, args.n)
        rows = [[1, f[0], f[1], f[2]] for _, f, _ in objects.values()]
        fit = solve(rows, [size for size, _, _ in objects.values()])
        print(
            "per object with its change pair, fitted: {:.0f} B + {:.2f} x JSON length"
            " + {:.1f} per ',' + {:.1f} per '{{'".format(*fit)
        )
        print(
            f"(estimate: OBJECT_BYTES + PAIR_BYTES = {listing.OBJECT_BYTES + listing.PAIR_BYTES} B"
            f" + JSON length + {listing.JSON_COMMA_BYTES} per ',' + {listing.JSON_BRACE_BYTES} per '{{')"
        )
        print(f"{'shape':10} {'JSON':>6} {'traced':>7} {'RSS':>7} {'estimate':>9}  estimate/RSS")
        for name, (size, features, estimate) in objects.items():
            rss, estimate = child("--n", str(args.n), "--rss-child", os.path.join(root, name))
            print(
                f"{name:10} {features[0]:6.0f} {size:7.0f} {rss:7.0f} {estimate:9.0f}  {estimate / rss:6.2f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

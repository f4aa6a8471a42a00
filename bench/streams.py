#!/usr/bin/env python3
"""Push streams (Server-Sent Events) under load, against the targets of issue 14 (opt-in, not a test).

In one run, on 127.0.0.1 only, kintofs with fsync and the file watcher on
(as shipped), its data on a real disk, every thread on one core:

  1. read latency (GET of one record over --readers keep-alive connections)
     with no stream open, with --streams idle streams open, and again once
     they are closed;
  2. the daemon's RSS (VmRSS) with none and with --streams idle streams;
  3. HTTP write -> event at one subscriber, over --changes serial PUTs
     (from just before the PUT is sent to the event's bytes at the client);
  4. file saved by hand (temp file + rename, as editors do) -> event at one
     subscriber, over --changes saves (from the rename's return); then the
     same against a daemon whose watcher is patched to read an edit at once
     (a diagnostic: the part of the latency that is not the watcher's wait);
  5. an event fan-out to --streams streams: serial writes, each waited for
     at every stream (latency, and the daemon's CPU per write), then one
     write every 1/--fanout-rate s while readers read, against the same load
     with no stream open; then more idle streams (--limit-steps), and a
     daemon whose open-file limit is --low-nofile asked for 100 more streams
     than that, to show what happens at the limit.

The streams are held by one child process of this script (non-blocking
sockets and epoll: a connection costs it a socket, no thread), on the
load generator's core.  Latencies between processes are on one clock
(CLOCK_MONOTONIC).  Prints a table against the targets and writes every
figure to a JSON file (--json).

    python bench/streams.py                  # 1,000 streams, 100 changes (3-4 min)
    python bench/streams.py --quick          # fewer changes, shorter phases, no limit search
    python bench/streams.py --profile        # also py-spy on the daemon during the fan-out
"""

import argparse
import errno
import http.client
import json
import multiprocessing
import os
import platform
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from types import SimpleNamespace

from benchmark import BATCH_SIZE, free_port, load
from throughput import (
    AUTH_HEADER,
    Connection,
    PinnedServer,
    ReadOne,
    core_plan,
    cpu_seconds,
    filesystem_of,
    load_average,
    machine_busy_seconds,
    others_share,
    own_seconds,
    percentile,
    real_disk_workdir,
    records_path,
    run_load,
)

BUCKET = "bench"
READ_COLLECTION = "read"  # preloaded, what the readers read
LIVE_COLLECTION = "live"  # one subscriber: write -> event, file save -> event
FAN_COLLECTION = "fan"  # the many streams follow it; the fan-out writes go there
LIVE_RECORDS = 10  # the write and save latencies rotate over this many records
WARMUP_CHANGES = 5  # not counted
EVENT_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 15.0  # connect + response head of one stream
OPEN_IN_FLIGHT = 64  # streams being opened at once
HOLDER_NOFILE = (
    65536  # the holder's open-file limit, where it may raise it (the daemon's is its own)
)
SERIAL_SPACING_S = 0.5  # between two writes of the serial fan-outs: the watcher's read is done
SEQ = re.compile(rb'"seq":(\d+)')

# The daemon, started as `python -m kintofs serve` unless an experiment needs
# a different open-file limit or watcher settle time: then this launcher,
# which changes no kintofs file (and imports nothing of this script).
LAUNCHER = """\
import resource, sys
nofile, settle = int(sys.argv[1]), float(sys.argv[2])
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
if settle >= 0:  # the watcher's longest wait (and its quiet time, where there is one)
    import kintofs.fsstore.watch as watch
    watch.SETTLE_SECONDS = settle
    watch.QUIET_SECONDS = min(getattr(watch, "QUIET_SECONDS", settle), settle)
from kintofs.cli import main
sys.exit(main(sys.argv[3:]))
"""


# -- the stream holder (a child process) -------------------------------------


class Held:
    """One stream, as the holder sees it."""

    __slots__ = ("sock", "state", "buffer", "started", "events")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"  # then "head", "open", "closed"
        self.buffer = bytearray()
        self.started = time.monotonic()
        self.events = 0


class StreamHolder:
    """Holds many SSE streams on one thread: epoll, non-blocking sockets.

    Commands come over a pipe; every event's arrival is timestamped with
    time.monotonic() at the recv() that brought it, keyed by the ``seq``
    number in its data."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.selector = selectors.DefaultSelector()
        self.selector.register(pipe.fileno(), selectors.EVENT_READ, None)
        self.streams = {}  # fd -> Held
        self.arrivals = defaultdict(list)  # seq -> [monotonic times]
        self.ended = Counter()  # why streams that were open ended
        self.heartbeats = 0
        self.resyncs = 0
        self.nofile = None

    # commands

    def serve(self):
        self.nofile = raise_nofile(HOLDER_NOFILE)
        while True:
            if self._pump(None):
                command, *args = self.pipe.recv()
                if command == "quit":
                    self.close_all()
                    self.pipe.send("bye")
                    return
                self.pipe.send(getattr(self, command)(*args))

    def open(self, port, path, count, timeout=OPEN_TIMEOUT_S):
        """Open ``count`` more streams; (opened, failed reasons, seconds)."""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: {AUTH_HEADER}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        started = time.monotonic()
        failed = Counter()
        opened, to_start = 0, count
        pending = {}
        while to_start or pending:
            while to_start and len(pending) < OPEN_IN_FLIGHT:
                to_start -= 1
                try:
                    held = self._connect(port)
                except OSError as error:
                    failed[f"client {errno.errorcode.get(error.errno, error)}"] += 1
                    if error.errno == errno.EMFILE:
                        failed["client EMFILE"] += to_start
                        to_start = 0
                    continue
                held.buffer = bytearray(request)  # what to send, until it is sent
                pending[held.sock.fileno()] = held
            self._pump(0.05)
            now = time.monotonic()
            for fd, held in list(pending.items()):
                if held.state == "open":
                    opened += 1
                    del pending[fd]
                elif held.state == "closed":
                    failed[held.buffer.decode("latin-1") or "closed"] += 1
                    del pending[fd]
                elif now - held.started > timeout:
                    failed[f"no answer in {timeout:g} s ({held.state})"] += 1
                    self._drop(held)
                    del pending[fd]
        return {"opened": opened, "failed": dict(failed), "seconds": time.monotonic() - started}

    def status(self):
        states = Counter(held.state for held in self.streams.values())
        return {
            "nofile": self.nofile,
            "open": states["open"],
            "ended": dict(self.ended),
            "heartbeats": self.heartbeats,
            "resyncs": self.resyncs,
        }

    def await_seq(self, seq, count, timeout=EVENT_TIMEOUT_S):
        """Wait until ``count`` streams got the event of ``seq``; its arrival times."""
        deadline = time.monotonic() + timeout
        while len(self.arrivals.get(seq, ())) < count and time.monotonic() < deadline:
            self._pump(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.arrivals.pop(seq, [])

    def collect(self, settle=0.0):
        """Every arrival recorded since the last collect, after ``settle`` seconds more."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            self._pump(max(0.0, deadline - time.monotonic()))
        arrivals, self.arrivals = dict(self.arrivals), defaultdict(list)
        return arrivals

    def close_all(self):
        count = 0
        for held in list(self.streams.values()):
            if held.state != "closed":
                count += 1
            self._drop(held)
        self.arrivals.clear()
        self.ended.clear()
        return count

    # the loop

    def _connect(self, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, os.strerror(code))
        held = Held(sock)
        self.streams[sock.fileno()] = held
        self.selector.register(sock, selectors.EVENT_WRITE, held)
        return held

    def _pump(self, timeout):
        """One round of the selector; True if a command is waiting."""
        command = False
        for key, _ in self.selector.select(timeout):
            held = key.data
            if held is None:
                command = True
            elif held.state == "connecting":
                self._connected(held)
            else:
                self._readable(held)
        return command

    def _connected(self, held):
        error = held.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._fail(held, f"connect {errno.errorcode.get(error, error)}")
            return
        try:
            held.sock.send(held.buffer)  # a few hundred bytes: fits an empty socket buffer
        except OSError as problem:
            self._fail(held, f"send {errno.errorcode.get(problem.errno, problem)}")
            return
        held.buffer = bytearray()
        held.state = "head"
        self.selector.modify(held.sock, selectors.EVENT_READ, held)

    def _readable(self, held):
        try:
            data = held.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as problem:
            data, why = b"", f"recv {errno.errorcode.get(problem.errno, problem)}"
        else:
            why = "closed by the server"
        arrived = time.monotonic()
        if not data:
            if held.state == "open":
                self.ended[why] += 1
                self._fail(held, f"{why} after opening")
            else:
                self._fail(held, why if held.state != "head" else f"{why} before its head")
            return
        held.buffer += data
        if held.state == "head":
            end = held.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(held.buffer[: held.buffer.find(b"\r\n")])
            if not status.startswith(b"HTTP/1.1 200"):
                self._fail(held, f"answered {status.decode('latin-1')}")
                return
            del held.buffer[: end + 4]
            held.state = "open"
        self._events(held, arrived)

    def _events(self, held, arrived):
        buffer = held.buffer
        while (end := buffer.find(b"\n\n")) >= 0:
            block = bytes(buffer[:end])
            del buffer[: end + 2]
            if block.startswith(b":"):
                self.heartbeats += 1
            elif block.startswith(b"retry:"):
                pass
            else:
                held.events += 1
                if b"event: resync" in block:
                    self.resyncs += 1
                found = SEQ.search(block)
                if found:
                    self.arrivals[int(found.group(1))].append(arrived)

    def _fail(self, held, why):
        """A stream that never opened: its reason is kept in its buffer."""
        self._drop(held)
        held.buffer = bytearray(why.encode("latin-1", "replace"))

    def _drop(self, held):
        if held.state == "closed":
            return
        held.state = "closed"
        fd = held.sock.fileno()
        self.streams.pop(fd, None)
        try:
            self.selector.unregister(held.sock)
        except (KeyError, ValueError):
            pass
        held.sock.close()


def hold_streams(pipe):
    StreamHolder(pipe).serve()


class Holder:
    """The main process's handle on the stream holder."""

    def __init__(self):
        context = multiprocessing.get_context("fork")  # before any thread is started
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=hold_streams, args=(child,), daemon=True)
        self.process.start()

    def call(self, command, *args):
        self.pipe.send((command, *args))
        return self.pipe.recv()

    def open(self, server, path, count, timeout=OPEN_TIMEOUT_S):
        return self.call("open", server.port, path, count, timeout)

    def stop(self):
        try:
            self.call("quit")
        except (OSError, EOFError):
            pass
        self.process.join(10)


def raise_nofile(wanted=0):
    """As many file descriptors as this user may have (the client holds one per
    stream), or ``wanted`` when more and allowed (root may raise its hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the daemon --------------------------------------------------------------


def start_daemon(folder, fsync=True, nofile=0, settle=None, name="kintofs"):
    """kintofs as shipped (fsync, watcher, access log), pinned to the server core."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env.update(
        {
            "KINTOFS_FSYNC": str(fsync).lower(),
            "KINTOFS_USERID_HMAC_SECRET": "bench-secret",
            "KINTOFS_BATCH_MAX_REQUESTS": str(BATCH_SIZE),
        }
    )
    serve = ["serve", "--port", str(port), "--data-dir", os.path.join(folder, "data")]
    serve += ["--config", os.devnull]
    if nofile or settle is not None:
        settle_arg = "-1" if settle is None else str(settle)
        command = [sys.executable, "-c", LAUNCHER, str(nofile), settle_arg, *serve]
    else:
        command = [sys.executable, "-m", "kintofs", *serve]
    log = os.path.join(folder, f"{name}.log")
    return PinnedServer(name, command, port, env, log)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def nofile_of(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def daemon_state(server):
    pid = server.process.pid
    return {
        "rss_kb": rss_kb(pid),
        "fds": open_fds(pid),
        "threads": thread_count(pid),
        "nofile": nofile_of(pid),
    }


def idle_cpu_pct(server, seconds):
    """The daemon's CPU while nothing is asked of it, in % of one core."""
    before = cpu_seconds(server.process.pid)
    time.sleep(seconds)
    return (cpu_seconds(server.process.pid) - before) / seconds * 100


def stream_path(collection):
    return f"/v1/events/buckets/{BUCKET}/collections/{collection}"


def record_path(collection, record_id):
    return f"{records_path(collection)}/{record_id}"


def settle_rss(server, seconds=1.0):
    time.sleep(seconds)  # what the opening left (requests in flight, garbage) is done
    return rss_kb(server.process.pid)


# -- figures -----------------------------------------------------------------


def ms(seconds):
    return None if seconds is None else seconds * 1000


def spread(samples):
    """p50, p90, p99, max and count of latencies in seconds, as ms."""
    if not samples:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(samples),
        "p50_ms": ms(statistics.median(samples)),
        "p90_ms": ms(percentile(samples, 90)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)),
    }


def text_ms(figures):
    def one(value):
        return "-" if value is None else f"{value:.1f}"

    return (
        f"p50 {one(figures['p50_ms'])} ms  p99 {one(figures['p99_ms'])} ms  "
        f"max {one(figures['max_ms'])} ms  (n={figures['count']})"
    )


class Seqs:
    """The numbers that tie a change to its event (a ``seq`` field in its data)."""

    def __init__(self):
        self.last = 0
        self.lock = threading.Lock()

    def __next__(self):
        with self.lock:
            self.last += 1
            return self.last


# -- 3. HTTP write -> event ---------------------------------------------------


def write_to_event(server, holder, seqs, changes, gap):
    """Serial PUTs of records a subscriber follows: t0 just before the request
    is sent, t1 when its response is read, t2 when the event's bytes arrive."""
    connection = Connection(server.port)
    opened = holder.open(server, stream_path(LIVE_COLLECTION), 1)
    assert opened["opened"] == 1, opened
    to_event, to_response, response_to_event, missed, statuses = [], [], [], 0, Counter()
    for i in range(WARMUP_CHANGES + changes):
        seq = next(seqs)
        body = json.dumps({"data": {"title": f"change {i}", "seq": seq}}).encode()
        path = record_path(LIVE_COLLECTION, f"w{i % LIVE_RECORDS}")
        t0 = time.monotonic()
        status, _ = connection.request("PUT", path, body)
        t1 = time.monotonic()
        arrivals = holder.call("await_seq", seq, 1)
        if i < WARMUP_CHANGES:
            continue
        statuses[status] += 1
        if not arrivals:
            missed += 1
            continue
        t2 = arrivals[0]
        to_event.append(t2 - t0)
        to_response.append(t1 - t0)
        response_to_event.append(t2 - t1)
        time.sleep(gap)
    holder.call("close_all")
    connection.close()
    return {
        "changes": changes,
        "statuses": {str(k): v for k, v in statuses.items()},
        "missed": missed,
        "write_to_event": spread(to_event),
        "put_response": spread(to_response),
        # negative when the event arrived before the PUT's response
        "response_to_event_p50_ms": ms(statistics.median(response_to_event))
        if response_to_event
        else None,
        "event_before_response": sum(1 for d in response_to_event if d < 0),
    }


# -- 4. file saved by hand -> event ---------------------------------------------


def records_folder(server_folder, collection):
    return os.path.join(
        server_folder, "data", "buckets", BUCKET, "collections", collection, "records"
    )


def save_by_hand(folder, record_id, seq):
    """What an editor does: read the file, write a temp file beside it, rename
    it over the original.  Returns the time the rename returned."""
    path = os.path.join(folder, f"{record_id}.json")
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    document["seq"] = seq
    document["title"] = f"saved by hand {seq}"
    temp = os.path.join(folder, f".{record_id}.json.bench-save")  # a dot name: no object's
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
    os.replace(temp, path)
    return time.monotonic()


def save_to_event(server, folder, holder, seqs, changes, gap):
    """Serial saves of record files a subscriber follows: from the moment the
    rename returned to the event's bytes at the subscriber."""
    records = records_folder(folder, LIVE_COLLECTION)
    opened = holder.open(server, stream_path(LIVE_COLLECTION), 1)
    assert opened["opened"] == 1, opened
    latencies, missed = [], 0
    for i in range(WARMUP_CHANGES + changes):
        seq = next(seqs)
        saved = save_by_hand(records, f"w{i % LIVE_RECORDS}", seq)
        arrivals = holder.call("await_seq", seq, 1)
        if i < WARMUP_CHANGES:
            continue
        if arrivals:
            latencies.append(arrivals[0] - saved)
        else:
            missed += 1
        time.sleep(gap)
    holder.call("close_all")
    return {"changes": changes, "missed": missed, "save_to_event": spread(latencies)}


def prepare_live(server):
    """The live collection with its records, and the watcher watching its folder."""
    session = server.session
    session.put(f"{server.url}/buckets/{BUCKET}/collections/{LIVE_COLLECTION}").raise_for_status()
    for i in range(LIVE_RECORDS):
        url = f"{server.url}{record_path(LIVE_COLLECTION, f'w{i}')[len('/v1') :]}"
        session.put(url, json={"data": {"title": "first"}}).raise_for_status()
    time.sleep(1.0)  # watchdog watches a new folder a moment after it appears


# -- 1 and 5. reads, writes and fan-outs ------------------------------------------


class PacedWrites:
    """One PUT every ``interval`` s creating a record of ``collection`` (its
    own timings: the pacing sleep is no part of a write's latency).  A new
    record each time: the hub makes two changes of one object that it reads
    at once one event, and a fan-out that falls behind would lose none."""

    expected = 201

    def __init__(self, collection, interval, seqs):
        self.collection, self.interval, self.seqs = collection, interval, seqs
        self.next_at = None
        self.sent = []  # (seq, t0 before the request, t1 after its response, status)

    def step(self, connection, worker, rng):
        now = time.monotonic()
        if self.next_at is None:
            self.next_at = now
        if now < self.next_at:
            time.sleep(self.next_at - now)
        self.next_at = max(self.next_at + self.interval, time.monotonic())
        seq = next(self.seqs)
        body = json.dumps({"data": {"title": f"fan-out {seq}", "seq": seq}}).encode()
        path = record_path(self.collection, f"p{seq}")
        t0 = time.monotonic()
        status = connection.request("PUT", path, body)[0]
        self.sent.append((seq, t0, time.monotonic(), status))
        return status


def load_args(args, duration=None):
    return SimpleNamespace(duration=duration or args.duration)


def reads(server, args, duration=None):
    """GET of one random preloaded record over --readers connections."""
    workload = ReadOne(READ_COLLECTION, args.records)
    return run_load(server, {"reads": (args.readers, workload)}, load_args(args, duration))["reads"]


def reads_and_fanouts(server, holder, args, seqs, streams):
    """Readers and one paced writer at once; with ``streams`` streams following
    the collection written, each write is an event for every one of them."""
    writes = PacedWrites(FAN_COLLECTION, 1.0 / args.fanout_rate, seqs)
    holder.call("collect")  # forget anything before
    groups = {"reads": (args.readers, ReadOne(READ_COLLECTION, args.records))}
    groups["writes"] = (1, writes)
    result = run_load(server, groups, load_args(args))
    arrivals = holder.call("collect", 2.0 if streams else 0.0)  # the last fan-out's stragglers
    put_latencies = [t1 - t0 for _, t0, t1, _ in writes.sent]
    figures = {
        "streams": streams,
        "reads": result["reads"],
        "writes": {
            "count": len(writes.sent),
            "errors": sum(1 for *_, status in writes.sent if status != PacedWrites.expected),
            "put": spread(put_latencies),
        },
    }
    if streams:
        figures["deliveries"] = deliveries(writes.sent, arrivals, streams)
    return figures


def deliveries(sent, arrivals, streams):
    """From each write's t0 to its event at every stream: all of them, and per
    write the first, median and last stream to get it."""
    every, first, middle, last, missing = [], [], [], [], 0
    for seq, t0, _, _ in sent:
        times = sorted(t - t0 for t in arrivals.get(seq, ()))
        missing += streams - len(times)
        if not times:
            continue
        every += times
        first.append(times[0])
        middle.append(times[len(times) // 2])
        last.append(times[-1])
    return {
        "expected": streams * len(sent),
        "missing": missing,
        "all": spread(every),
        "first_stream": spread(first),
        "median_stream": spread(middle),
        "last_stream": spread(last),
    }


def serial_fanouts(server, holder, seqs, streams, count, spacing=SERIAL_SPACING_S):
    """``count`` PUTs to the followed collection, one every ``spacing`` s, each
    waited for at every stream: its PUT latency, when the first, median and
    last stream got it, and the daemon's CPU per write (everything it did in
    the whole loop, divided by ``count``: the watcher's read of the daemon's
    own write, 0.2 s later, included, with or without streams)."""
    connection = Connection(server.port)
    put, first, middle, last, received = [], [], [], [], []
    pid = server.process.pid
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    for i in range(count):
        seq = next(seqs)
        body = json.dumps({"data": {"title": f"serial fan-out {seq}", "seq": seq}}).encode()
        t0 = time.monotonic()
        status, _ = connection.request(
            "PUT", record_path(FAN_COLLECTION, f"f{i % LIVE_RECORDS}"), body
        )
        put.append(time.monotonic() - t0)
        if streams:
            arrivals = sorted(t - t0 for t in holder.call("await_seq", seq, streams, 60.0))
            received.append(len(arrivals))
            if arrivals:
                first.append(arrivals[0])
                middle.append(arrivals[len(arrivals) // 2])
                last.append(arrivals[-1])
        time.sleep(max(0.0, started + (i + 1) * spacing - time.monotonic()))
    cpu = cpu_seconds(pid) - cpu_before
    connection.close()
    return {
        "streams": streams,
        "count": count,
        "put": spread(put),
        "first_stream": spread(first),
        "median_stream": spread(middle),
        "last_stream": spread(last),
        "received_min": min(received) if received else None,
        "server_cpu_ms_per_write": cpu / count * 1000,
    }


def serial_brief(figures):
    line = (
        f"PUT {text_ms(figures['put'])}; server CPU {figures['server_cpu_ms_per_write']:.1f} ms "
        "per write"
    )
    if figures["streams"]:
        line += (
            f"\n  event at the first stream p50 {fmt(figures['first_stream']['p50_ms'])} ms, "
            f"median stream {fmt(figures['median_stream']['p50_ms'])} ms, last stream "
            f"{fmt(figures['last_stream']['p50_ms'])} ms (p99 {fmt(figures['last_stream']['p99_ms'])}"
            f" ms); fewest streams reached {figures['received_min']} of {figures['streams']}"
        )
    return line


# -- 5. how many streams ---------------------------------------------------------


def limit_steps(server, holder, args, seqs, held):
    """Open more idle streams, step by step; at each, what the daemon costs and
    whether it still serves.  Stops at the first step where something fails."""
    steps = []
    for target in args.limit_steps:
        if target <= held:
            continue
        print(f"  opening streams up to {target}", flush=True)
        opened = holder.open(server, stream_path(FAN_COLLECTION), target - held)
        held += opened["opened"]
        state = daemon_state(server)
        state["rss_kb"] = settle_rss(server)
        step = {
            "target": target,
            "held": held,
            "open": opened,
            "daemon": state,
            "idle_cpu_pct": idle_cpu_pct(server, 3.0),
            "reads": reads(server, SimpleNamespace(**{**vars(args), "readers": 1}), 2.0),
            "fanout": serial_fanouts(server, holder, seqs, held, 5),
            "holder": holder.call("status"),
        }
        steps.append(step)
        print(f"    {limit_line(step)}", flush=True)
        if opened["failed"] or step["holder"]["ended"] or step["reads"]["errors"]:
            break
    return steps, held


def limit_line(step):
    reads_figures, fanout = step["reads"], step["fanout"]
    return (
        f"{step['held']} streams held (failed {step['open']['failed'] or 0}) in "
        f"{step['open']['seconds']:.1f} s; RSS {step['daemon']['rss_kb'] / 1024:.1f} MiB, "
        f"{step['daemon']['fds']} fds, {step['daemon']['threads']} threads; idle CPU "
        f"{step['idle_cpu_pct']:.1f}%; reads p50 {fmt(reads_figures['p50_ms'])} ms "
        f"p99 {fmt(reads_figures['p99_ms'])} ms; one event to all: last stream p50 "
        f"{fmt(fanout['last_stream']['p50_ms'])} ms, server CPU "
        f"{fanout['server_cpu_ms_per_write']:.0f} ms per write "
        f"(fewest reached {fanout['received_min']})"
    )


def fmt(value, decimals=1):
    return "-" if value is None else f"{value:.{decimals}f}"


def low_nofile(workdir, holder, args, seqs):
    """A daemon whose open-file limit is --low-nofile, asked for more streams
    than that: how many it holds, what the others see, whether it still serves."""
    folder = os.path.join(workdir, "low-nofile")
    os.makedirs(folder)
    server = start_daemon(folder, fsync=False, nofile=args.low_nofile, name="kintofs-low-nofile")
    try:
        load(server, READ_COLLECTION, min(args.records, 100))
        server.session.put(
            f"{server.url}/buckets/{BUCKET}/collections/{FAN_COLLECTION}"
        ).raise_for_status()
        before = daemon_state(server)
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)  # a client
        kept_before = kept_alive_get(kept)  # already connected before the limit is reached
        asked = args.low_nofile + 100
        print(f"  asking {asked} streams of a daemon whose limit is {args.low_nofile} fds")
        cpu_before, wall = cpu_seconds(server.process.pid), time.monotonic()
        opened = holder.open(server, stream_path(FAN_COLLECTION), asked, 5.0)
        cpu_pct = (cpu_seconds(server.process.pid) - cpu_before) / (time.monotonic() - wall) * 100
        at_limit = daemon_state(server)
        log_before = os.path.getsize(server.log.name)
        busy = idle_cpu_pct(server, 2.0)
        log_growth = (os.path.getsize(server.log.name) - log_before) / 2.0
        status, took = probe_request(server.port, 5.0)
        kept_at_limit = kept_alive_get(kept)
        closed = holder.call("close_all")
        time.sleep(1.0)
        status_after, took_after = probe_request(server.port, 5.0)
        result = {
            "nofile": args.low_nofile,
            "asked": asked,
            "open": opened,
            "daemon_before": before,
            "daemon_at_limit": at_limit,
            "cpu_pct_while_opening": cpu_pct,
            "cpu_pct_at_limit_idle": busy,
            "log_bytes_per_s_at_limit_idle": log_growth,
            "read_at_limit": {"status": status, "ms": ms(took)},
            "keep_alive_read_before": kept_before,
            "keep_alive_read_at_limit": kept_at_limit,
            "closed": closed,
            "read_after_closing": {"status": status_after, "ms": ms(took_after)},
            "log_tail": log_tail(server, 6),
        }
    finally:
        holder.call("close_all")
        server.stop()
    print(
        f"    held {opened['opened']}, failed {opened['failed']}; daemon {at_limit['fds']} fds, "
        f"CPU {busy:.0f}% and log +{log_growth / 1e6:.1f} MB/s while idle at the limit; a GET "
        f"then: {status} in {fmt(ms(took))} ms (on a connection open before: "
        f"{kept_at_limit['status']} in {fmt(kept_at_limit['ms'])} ms); after closing: "
        f"{status_after} in {fmt(ms(took_after))} ms",
        flush=True,
    )
    return result


def kept_alive_get(connection):
    """Status and ms of a GET on a keep-alive connection (None: no answer)."""
    started = time.monotonic()
    try:
        connection.request(
            "GET", record_path(READ_COLLECTION, "r0000000"), headers={"Authorization": AUTH_HEADER}
        )
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status = None
        connection.close()
    return {"status": status, "ms": ms(time.monotonic() - started)}


def probe_request(port, timeout):
    """Status and seconds of one GET of a record on a new connection (None: no answer)."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(
                (
                    f"GET {record_path(READ_COLLECTION, 'r0000000')} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nAuthorization: {AUTH_HEADER}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
            )
            head = sock.recv(64)
        status = int(head.split()[1]) if head.startswith(b"HTTP/") else None
    except (OSError, ValueError, IndexError):
        status = None
    return status, time.monotonic() - started


def log_tail(server, count):
    """The daemon's last log lines that are not access-log lines."""
    try:
        with open(server.log.name, errors="replace") as f:
            lines = [line.rstrip() for line in f if not line.startswith('{"time"')]
    except OSError:
        return []
    return [line[:300] for line in lines[-count:]]


# -- the profile (--profile) ------------------------------------------------------


def start_profile(server, seconds, path):
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(py_spy):
        print("  (no py-spy: no profile)", flush=True)
        return None
    command = [py_spy, "record", "--pid", str(server.process.pid), "--duration", str(seconds)]
    command += ["--rate", "250", "--format", "raw", "--threads", "--gil", "--nonblocking"]
    command += ["--output", path]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path, top=25):
    """Share of the samples per thread, and per function (inclusive), from
    py-spy's collapsed stacks."""
    threads, functions, total = Counter(), Counter(), 0
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = stack.split(";")
        thread = frames[0]
        threads[re.sub(r"\s*\(?0x[0-9a-f]+\)?", "", thread).strip() or thread] += count
        seen = set()
        for frame in frames[1:]:
            name = re.sub(r":\d+\)$", ")", frame)  # a function, any of its lines
            if name.endswith(("(threading.py)", "(<frozen runpy>)")):
                continue
            if name not in seen:
                seen.add(name)
                functions[name] += count
    if not total:
        return None
    return {
        "samples": total,
        "threads_pct": {name: count / total * 100 for name, count in threads.most_common()},
        "functions_pct": {name: count / total * 100 for name, count in functions.most_common(top)},
    }


# -- the run -------------------------------------------------------------------------


def run(args):
    server_cores, client_cores = core_plan()
    PinnedServer.cores = server_cores
    if client_cores:
        os.sched_setaffinity(0, client_cores)
    client_nofile = raise_nofile()
    holder = Holder()  # forked now, before any thread
    sys.setswitchinterval(0.0005)
    workdir = real_disk_workdir(args.workdir)
    results = {"meta": meta(args, workdir, server_cores, client_cores, client_nofile)}
    seqs = Seqs()
    started = time.monotonic(), machine_busy_seconds(), own_seconds()
    try:
        measure_all(results, workdir, holder, args, seqs)
    finally:
        holder.stop()
        results["meta"]["others_cpu_pct"] = others_share(started)
        if args.keep:
            print(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["load_average_after"] = load_average()
    report(results, args)


def measure_all(results, workdir, holder, args, seqs):
    folder = os.path.join(workdir, "kintofs")
    os.makedirs(folder)
    loader = start_daemon(folder, fsync=False)
    load(loader, READ_COLLECTION, args.records)
    loader.stop()
    server = start_daemon(folder)  # fsync on, as in production
    try:
        results["idle_rss_kb_fresh"] = settle_rss(server)
        prepare_live(server)
        server.session.put(
            f"{server.url}/buckets/{BUCKET}/collections/{FAN_COLLECTION}"
        ).raise_for_status()
        print(f"HTTP write -> event at one subscriber, {args.changes} serial PUTs", flush=True)
        results["write_to_event"] = write_to_event(server, holder, seqs, args.changes, args.gap)
        print(f"  {text_ms(results['write_to_event']['write_to_event'])}", flush=True)
        print(f"file saved by hand -> event at one subscriber, {args.changes} saves", flush=True)
        results["save_to_event"] = save_to_event(
            server, folder, holder, seqs, args.changes, args.save_gap
        )
        print(f"  {text_ms(results['save_to_event']['save_to_event'])}", flush=True)
        streams_phases(results, server, holder, args, seqs)
    finally:
        holder.call("close_all")
        server.stop()
    if args.settle_probe:
        print("diagnostic: file save -> event with the watcher's settle patched to 0", flush=True)
        probe_folder = os.path.join(workdir, "settle-0")
        os.makedirs(probe_folder)
        probe = start_daemon(probe_folder, settle=0.0, name="kintofs-settle-0")
        try:
            probe.session.put(f"{probe.url}/buckets/{BUCKET}").raise_for_status()
            prepare_live(probe)
            results["save_to_event_settle_0"] = save_to_event(
                probe, probe_folder, holder, seqs, args.changes, args.save_gap
            )
        finally:
            holder.call("close_all")
            probe.stop()
        print(f"  {text_ms(results['save_to_event_settle_0']['save_to_event'])}", flush=True)
    if args.low_nofile:
        print(f"a daemon limited to {args.low_nofile} open files", flush=True)
        results["low_nofile"] = low_nofile(workdir, holder, args, seqs)


def streams_phases(results, server, holder, args, seqs):
    n = args.streams
    for i in range(LIVE_RECORDS):  # what the serial fan-outs update
        url = f"{server.url}{record_path(FAN_COLLECTION, f'f{i}')[len('/v1') :]}"
        server.session.put(url, json={"data": {"title": "first"}}).raise_for_status()
    print(f"serial writes, one every {SERIAL_SPACING_S:g} s, no stream", flush=True)
    results["serial_no_streams"] = serial_fanouts(server, holder, seqs, 0, args.serial_writes)
    print(f"  {serial_brief(results['serial_no_streams'])}", flush=True)
    print(f"reads and a write every {1000 / args.fanout_rate:.0f} ms, no stream", flush=True)
    results["fanout_no_streams"] = reads_and_fanouts(server, holder, args, seqs, 0)
    print(f"  {fanout_brief(results['fanout_no_streams'])}", flush=True)
    results["daemon_no_streams"] = daemon_state(server)
    results["daemon_no_streams"]["rss_kb"] = settle_rss(server)
    results["idle_cpu_pct_no_streams"] = idle_cpu_pct(server, 3.0)

    # Rounds of reads without and with the idle streams, in turn: a machine
    # shared with other work then weighs on both alike.
    results["read_rounds"] = []
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}: reads, {args.readers} connections, no stream", flush=True)
        alone = reads(server, args)
        print(f"  {brief(alone)}", flush=True)
        print(f"round {round_number}: opening {n} idle streams", flush=True)
        opened = holder.open(server, stream_path(FAN_COLLECTION), n)
        print(f"  {opened['opened']} open in {opened['seconds']:.2f} s, failed {opened['failed']}")
        if round_number == 1:
            results["open"] = opened
            results["daemon_streams"] = daemon_state(server)
            results["daemon_streams"]["rss_kb"] = settle_rss(server, 2.0)
            results["idle_cpu_pct_streams"] = idle_cpu_pct(server, 3.0)
            print(f"  daemon RSS {results['daemon_no_streams']['rss_kb'] / 1024:.1f} -> "
                  f"{results['daemon_streams']['rss_kb'] / 1024:.1f} MiB, idle CPU "
                  f"{results['idle_cpu_pct_streams']:.2f}%", flush=True)  # fmt: skip
        print(f"round {round_number}: reads, {opened['opened']} idle streams", flush=True)
        idle = reads(server, args)
        print(f"  {brief(idle)}", flush=True)
        results["read_rounds"].append({"no_streams": alone, "idle_streams": idle, "open": opened})
        if round_number < args.rounds:
            holder.call("close_all")
            time.sleep(0.5)
    held = results["read_rounds"][-1]["open"]["opened"]

    print(f"serial writes, one every {SERIAL_SPACING_S:g} s, each to {held} streams", flush=True)
    profiler = None
    if args.profile:
        results["profile_path"] = os.path.join(tempfile.gettempdir(), "kintofs-streams-profile.txt")
        seconds = max(1, int(args.serial_writes * SERIAL_SPACING_S) - 1)
        profiler = start_profile(server, seconds, results["profile_path"])
    results["serial_streams"] = serial_fanouts(server, holder, seqs, held, args.serial_writes)
    if profiler:
        profiler.wait(60)
        results["profile"] = profile_summary(results["profile_path"])
    print(f"  {serial_brief(results['serial_streams'])}", flush=True)
    print(f"reads and a write every {1000 / args.fanout_rate:.0f} ms, {held} streams", flush=True)
    results["fanout_streams"] = reads_and_fanouts(server, holder, args, seqs, held)
    print(f"  {fanout_brief(results['fanout_streams'])}", flush=True)
    results["holder_after_fanout"] = holder.call("status")

    if args.limit_steps:
        print("how many idle streams the daemon holds", flush=True)
        results["limit_steps"], held = limit_steps(server, holder, args, seqs, held)
    results["closed"] = holder.call("close_all")
    time.sleep(1.0)
    results["daemon_after_closing"] = daemon_state(server)


def brief(figures):
    return (
        f"{figures['rate_per_s']:8.1f}/s  p50 {fmt(figures['p50_ms'], 2)} ms  "
        f"p99 {fmt(figures['p99_ms'], 2)} ms  errors {figures['errors']}  "
        f"server CPU {figures['server_cpu_pct']:.0f}%, others {figures['others_cpu_pct']:.0f}%"
    )


def fanout_brief(figures):
    line = f"reads {brief(figures['reads'])}\n  writes {text_ms(figures['writes']['put'])}"
    if "deliveries" in figures:
        found = figures["deliveries"]
        line += (
            f"\n  deliveries (t0 = before the PUT) all {text_ms(found['all'])}, "
            f"missing {found['missing']} of {found['expected']}"
            f"\n  last stream per write {text_ms(found['last_stream'])}"
        )
    return line


def meta(args, workdir, server_cores, client_cores, client_nofile):
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB",
        "kernel": platform.release(),
        "server_cores": sorted(server_cores or []),
        "client_cores": sorted(client_cores or []),
        "client_nofile": client_nofile,
        "load_average_before": load_average(),
        "kintofs_tree": kintofs_tree(),
        "workdir_fs": "{} on {}".format(*filesystem_of(workdir)),
        "streams": args.streams,
        "readers": args.readers,
        "records": args.records,
        "duration_s": args.duration,
        "changes": args.changes,
        "fanout_rate_per_s": args.fanout_rate,
    }


def kintofs_tree():
    """The commit measured, and how many files of kintofs/ differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*command):
        done = subprocess.run(["git", "-C", root, *command], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", "kintofs")
    return {"head": head, "kintofs_files_changed": len(changed.splitlines()) if changed else 0}


def memory_gib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 1024 / 1024


# -- the report ----------------------------------------------------------------------


def rows(results, args):
    found = []

    def row(label, value, unit, target_text="", met=None, note=""):
        found.append(
            {"label": label, "value": value, "unit": unit, "target": target_text, "met": met,
             "note": note}
        )  # fmt: skip

    n = results["open"]["opened"]
    rounds = results["read_rounds"]
    alone = [r["no_streams"] for r in rounds]
    idle = [r["idle_streams"] for r in rounds]

    def median_of(phases, key):
        return statistics.median(phase[key] for phase in phases)

    ratio = median_of(idle, "p50_ms") / median_of(alone, "p50_ms")
    row(
        f"read p50, {n} idle streams / none", ratio, "x", "<= 1.2x", ratio <= 1.2,
        f"medians of {len(rounds)} rounds: {median_of(idle, 'p50_ms'):.2f} vs "
        f"{median_of(alone, 'p50_ms'):.2f} ms (rounds: "
        + ", ".join(f"{i['p50_ms']:.2f}/{a['p50_ms']:.2f}" for i, a in zip(idle, alone, strict=True))
        + ")",
    )  # fmt: skip
    row(
        f"read p99, {n} idle streams / none",
        median_of(idle, "p99_ms") / median_of(alone, "p99_ms"), "x", "", None,
        f"{median_of(idle, 'p99_ms'):.2f} vs {median_of(alone, 'p99_ms'):.2f} ms",
    )  # fmt: skip
    rss0, rss1 = results["daemon_no_streams"]["rss_kb"], results["daemon_streams"]["rss_kb"]
    per_stream = (rss1 - rss0) / n if n else None
    row(
        "daemon RSS per idle stream", per_stream, "KB", "<= 40 KB",
        per_stream is not None and per_stream <= 40,
        f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB with {n}"
        + "".join(
            f"; {step['held']}: {(step['daemon']['rss_kb'] - rss0) / step['held']:.1f} KB each"
            for step in results.get("limit_steps") or []
        ),
    )  # fmt: skip
    write = results["write_to_event"]["write_to_event"]
    row(
        "HTTP write -> event p50", write["p50_ms"], "ms", "<= 20 ms", write["p50_ms"] <= 20,
        f"p99 {write['p99_ms']:.1f} ms; PUT's response p50 "
        f"{results['write_to_event']['put_response']['p50_ms']:.1f} ms, event "
        f"{results['write_to_event']['response_to_event_p50_ms']:.1f} ms after it "
        f"({results['write_to_event']['event_before_response']} before it)",
    )  # fmt: skip
    save = results["save_to_event"]["save_to_event"]
    note = f"p99 {save['p99_ms']:.1f} ms"
    if "save_to_event_settle_0" in results:
        zero = results["save_to_event_settle_0"]["save_to_event"]
        note += f"; settle patched to 0: p50 {zero['p50_ms']:.1f} ms"
    row("file save -> event p50", save["p50_ms"], "ms", "<= 100 ms", save["p50_ms"] <= 100, note)
    steps = results.get("limit_steps") or []
    if steps:
        best = max((s for s in steps if not s["open"]["failed"]), key=lambda s: s["held"],
                   default=None)  # fmt: skip
        row(
            "idle streams held, all serving", best["held"] if best else 0, "", "", None,
            ", ".join(f"{s['held']}: reads p50 {fmt(s['reads']['p50_ms'], 2)} ms, one event to "
                      f"all {fmt(s['fanout']['last_stream']['p50_ms'], 0)} ms" for s in steps),
        )  # fmt: skip
    if "low_nofile" in results:
        low = results["low_nofile"]
        row(
            f"streams held at nofile={low['nofile']}", low["open"]["opened"], "", "", None,
            f"asked {low['asked']}; failed {low['open']['failed']}; at the limit: CPU "
            f"{low['cpu_pct_at_limit_idle']:.0f}% idle, log +"
            f"{low['log_bytes_per_s_at_limit_idle'] / 1e6:.1f} MB/s, a new GET: "
            f"{low['read_at_limit']['status'] or 'no answer'}, a GET on a connection open "
            f"before: {low['keep_alive_read_at_limit']['status'] or 'no answer'}",
        )  # fmt: skip
    quiet, busy = results["fanout_no_streams"], results["fanout_streams"]
    row(
        f"read p50 during fan-out to {n} / none", busy["reads"]["p50_ms"] / quiet["reads"]["p50_ms"],
        "x", "", None,
        f"{busy['reads']['p50_ms']:.2f} vs {quiet['reads']['p50_ms']:.2f} ms; p99 "
        f"{busy['reads']['p99_ms']:.2f} vs {quiet['reads']['p99_ms']:.2f} ms",
    )  # fmt: skip
    bw, qw = busy["writes"]["put"], quiet["writes"]["put"]
    row(
        f"write p50 during fan-out to {n} / none", bw["p50_ms"] / qw["p50_ms"], "x", "", None,
        f"{bw['p50_ms']:.1f} vs {qw['p50_ms']:.1f} ms; p99 {bw['p99_ms']:.1f} vs "
        f"{qw['p99_ms']:.1f} ms",
    )  # fmt: skip
    found_deliveries = busy["deliveries"]
    row(
        f"write -> event at all {n}: p50", found_deliveries["all"]["p50_ms"], "ms", "", None,
        f"last stream p50 {found_deliveries['last_stream']['p50_ms']:.1f} / p99 "
        f"{found_deliveries['last_stream']['p99_ms']:.1f} ms; missing "
        f"{found_deliveries['missing']}",
    )  # fmt: skip
    quiet_cpu = results["serial_no_streams"]["server_cpu_ms_per_write"]
    fan_cpu = results["serial_streams"]["server_cpu_ms_per_write"]
    per_delivery_us = (fan_cpu - quiet_cpu) / n * 1000 if n else None
    row(
        "server CPU per event delivered", per_delivery_us, "us", "", None,
        f"{fan_cpu:.1f} ms per write with {n} streams, {quiet_cpu:.1f} ms with none; "
        f"one event to all {n}: last stream p50 "
        f"{results['serial_streams']['last_stream']['p50_ms']:.1f} ms",
    )  # fmt: skip
    row(
        f"daemon idle CPU, {n} streams", results["idle_cpu_pct_streams"], "%", "", None,
        f"{results['idle_cpu_pct_no_streams']:.2f}% with none",
    )  # fmt: skip
    return found


def print_table(found, results):
    info = results["meta"]
    tree = info["kintofs_tree"]
    print(
        f"\nPush streams ({info['date']}, {info['machine']}, Python {info['python']}; "
        f"server on core {info['server_cores']}, clients on {info['client_cores']}; kintofs at "
        f"{tree['head']}, {tree['kintofs_files_changed']} files of kintofs/ changed since)"
    )
    header = f"{'measure':<40} {'value':>8} {'unit':<4} {'target':<10} {'met':<7} notes"
    print(header)
    print("-" * len(header))
    for line in found:
        value = line["value"]
        shown = "-" if value is None else (f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}")
        met = {True: "met", False: "NOT MET", None: ""}[line["met"]]
        print(
            f"{line['label']:<40} {shown:>8} {line['unit']:<4} {line['target']:<10} {met:<7} "
            f"{line['note']}"
        )


def print_profile(profile):
    if not profile:
        return
    print(f"\nDaemon profile during the fan-out (py-spy, {profile['samples']} samples, active "
          "threads only)")  # fmt: skip
    for name, pct in profile["threads_pct"].items():
        print(f"  thread {name:<60} {pct:5.1f}%")
    for name, pct in profile["functions_pct"].items():
        print(f"  {pct:5.1f}%  {name[:110]}")


def report(results, args):
    results["rows"] = rows(results, args)
    print_profile(results.get("profile"))
    print_table(results["rows"], results)
    info = results["meta"]
    print(
        f"\nload average before {info['load_average_before']}, after "
        f"{info['load_average_after']}; other processes used {info['others_cpu_pct']:.0f}% of a "
        f"core on average during the run\ncommand: {info['command']}"
    )
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"all figures in {args.json}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="idle streams (default: 1000)")
    parser.add_argument(
        "--readers", type=int, default=2, help="keep-alive read connections (default: 2)"
    )
    parser.add_argument(
        "--records", type=int, default=1000, help="preloaded records read (default: 1000)"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per load phase (default: 5)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of reads without, then with, the idle streams (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--changes", type=int, default=100, help="changes per latency measure (default: 100)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.02, help="pause between two changes, s (default: 0.02)"
    )
    parser.add_argument(
        "--save-gap", type=float, default=0.4,
        help="pause between an event and the next file save, s: longer than the watcher's "
        "settle, which the daemon's own rewrite of the file starts again (default: 0.4)",
    )  # fmt: skip
    parser.add_argument(
        "--fanout-rate", type=float, default=2.0,
        help="writes per second during the fan-out phase (default: 2)",
    )  # fmt: skip
    parser.add_argument(
        "--serial-writes", type=int, default=20,
        help=f"writes of the serial fan-out measure, one every {SERIAL_SPACING_S:g} s (default: 20)",
    )  # fmt: skip
    parser.add_argument(
        "--limit-steps", default="2000,5000",
        help="idle streams to try after the fan-out, comma-separated ('' skips; default: 2000,5000)",
    )  # fmt: skip
    parser.add_argument(
        "--low-nofile", type=int, default=1024,
        help="also a daemon with this open-file limit, asked for 100 more streams (0 skips; "
        "default: 1024)",
    )  # fmt: skip
    parser.add_argument(
        "--no-settle-probe", dest="settle_probe", action="store_false",
        help="skip the diagnostic run of file save -> event with the watcher's settle at 0",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="py-spy on the daemon in fan-out")
    parser.add_argument(
        "--quick", action="store_true", help="30 changes, 2 s phases, no limit search or probes"
    )
    parser.add_argument("--json", help="where to write every figure (default: a temp file)")
    parser.add_argument("--workdir", help="parent of the temp data folder (a real disk)")
    parser.add_argument("--keep", action="store_true", help="keep the data and the logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.changes, args.duration, args.limit_steps, args.serial_writes = 30, 2.0, "", 6
        args.rounds = 1
        args.low_nofile, args.settle_probe = 0, False
    args.limit_steps = [int(step) for step in args.limit_steps.split(",") if step.strip()]
    if not args.json:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.json = os.path.join(tempfile.gettempdir(), f"kintofs-streams-{stamp}.json")
    return args


if __name__ == "__main__":
    run(parse_args())

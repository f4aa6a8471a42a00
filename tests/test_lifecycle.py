"""Graceful shutdown on SIGTERM, and the structured access log."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

import requests
from conftest import ALICE, SECRET, Api, assert_status

RECORDS = "/buckets/b/collections/c/records"


# -- SIGTERM -----------------------------------------------------------------


def test_sigterm_lets_a_slow_request_in_flight_finish_then_exits_0(start_server):
    # A big batch with fsync on takes long enough to be caught in flight.
    daemon = start_server(fsync="true", batch_max_requests=2000)
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    subs = [
        {"method": "PUT", "path": f"{RECORDS}/r{i}", "body": {"data": {"i": i}}} for i in range(150)
    ]
    done = {}

    def send_batch():
        done["response"] = api.post("/batch", json={"requests": subs})
        done["at"] = time.monotonic()

    sender = threading.Thread(target=send_batch)
    sender.start()
    wait_for_first_record(daemon)
    signalled = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert refuses_new_connections_while(sender, daemon)
    sender.join(120)
    code = daemon.process.wait(60)

    response = done["response"]
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["responses"]] == [201] * len(subs)
    assert done["at"] > signalled, "the batch was over before the signal: not in flight"
    assert code == 0
    logs = daemon.logs()
    assert "finishing requests in flight" in logs and "kintofs stopped" in logs
    assert "Traceback" not in logs
    # Every record of the batch is on disk for the next daemon.
    folder = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")
    assert len([n for n in os.listdir(folder) if n.endswith(".json")]) == len(subs)


def refuses_new_connections_while(sender, daemon):
    """True once a new connection is refused while ``sender`` still waits."""
    while sender.is_alive():
        try:
            requests.get(daemon.url + "/", timeout=5)
        except requests.ConnectionError:
            return sender.is_alive()
        time.sleep(0.02)
    return False


def wait_for_first_record(daemon, timeout=30):
    """Until the batch has started writing (its first record is on disk)."""
    first = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records", "r0.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(first):
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.005)


# -- access log --------------------------------------------------------------


def read_log(path, count):
    """``count`` lines of the log, less the heartbeats of the fixture.

    A line is written once its response is sent, so the client may read the
    response a moment before the line is there: wait for it.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            lines = access_lines(open(path, encoding="utf-8").read())
        except FileNotFoundError:  # not written yet (after a logrotate)
            lines = []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def access_lines(text):
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line["path"] != "/v1/__lbheartbeat__"]


def test_access_log_has_one_json_line_per_request_and_no_secrets(start_server, tmp_path):
    log_path = tmp_path / "access.log"
    daemon = start_server(access_log=str(log_path))
    password = "correct-horse-battery"
    user = ("alice", password)
    api = Api(daemon, auth=user)
    userid = api.get("/").json()["user"]["id"]
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.get("/buckets/b/collections/nope"), 404)
    assert_status(api.get("/buckets/b?secret-query=hush"), 200)
    assert_status(api.get("/buckets", auth=None), 401)
    assert_status(
        api.post(
            "/batch",
            json={
                "requests": [
                    {"method": "PUT", "path": "/buckets/b/collections/c"},
                    {"method": "GET", "path": "/buckets/b/collections/c"},
                ]
            },
        ),
        200,
    )

    lines = read_log(log_path, 6)
    summary = [(line["method"], line["path"], line["status"]) for line in lines]
    assert summary == [
        ("GET", "/v1/", 200),
        ("PUT", "/v1/buckets/b", 201),
        ("GET", "/v1/buckets/b/collections/nope", 404),
        ("GET", "/v1/buckets/b", 200),
        ("GET", "/v1/buckets", 401),
        ("POST", "/v1/batch", 200),  # one line for the whole batch
    ]
    short = "basicauth:" + userid.split(":")[1][:8]
    assert [line["user"] for line in lines] == [short, short, short, short, None, short]
    for line in lines:
        assert set(line) == {
            "time",
            "method",
            "path",
            "status",
            "duration_ms",
            "bytes",
            "user",
            "remote",
        }
        assert line["time"].endswith("Z") and line["remote"] == "127.0.0.1"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["bytes"] > 0
    text = log_path.read_text()
    credentials = base64.b64encode(f"alice:{password}".encode()).decode()
    for secret in (password, credentials, SECRET, userid, "hush", "secret-query"):
        assert secret not in text, secret
    assert password not in daemon.logs() and credentials not in daemon.logs()


def test_access_log_goes_to_stderr_by_default_and_can_be_turned_off(start_server):
    default = start_server()
    assert_status(Api(default).get("/buckets"), 200)
    silent = start_server(access_log="")
    assert_status(Api(silent).get("/buckets"), 200)
    assert [line["path"] for line in read_log(default.log_path, 1)] == ["/v1/buckets"]
    assert not [line for line in silent.logs().splitlines() if line.startswith("{")]


def test_access_log_file_is_reopened_after_logrotate_moves_it(start_server, tmp_path):
    log_path = tmp_path / "access.log"
    daemon = start_server(access_log=str(log_path))
    api = Api(daemon, auth=ALICE)
    assert_status(api.get("/buckets"), 200)
    assert [line["path"] for line in read_log(log_path, 1)] == ["/v1/buckets"]
    os.rename(log_path, tmp_path / "access.log.1")
    assert_status(api.get("/buckets/nothing"), 403)
    assert [line["path"] for line in read_log(log_path, 1)] == ["/v1/buckets/nothing"]
    assert [line["path"] for line in read_log(tmp_path / "access.log.1", 1)] == ["/v1/buckets"]


# -- start-up ----------------------------------------------------------------


def test_a_busy_port_is_one_line_and_exit_1(start_server, tmp_path):
    running = start_server()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "kintofs",
            "serve",
            "--port",
            str(running.port),
            "--data-dir",
            str(tmp_path / "other"),
            "--config",
            os.devnull,
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert (
        second.stderr
        == f"kintofs: port {running.port} is in use (127.0.0.1:{running.port}); use --port\n"
    )


def test_the_listening_line_is_printed_once(start_server):
    daemon = start_server(log_level="info")
    assert daemon.logs().count("listening on") == 1

"""change_command (kintofs/push/command.py): a command run after changes, debounced.

A real daemon runs a command that appends a line to a file: once after a
burst of writes, again after later writes, never two at a time, never with
anything of the changes in its command line, and its failure is logged
without touching the requests.
"""

import os
import shlex
import time

from conftest import ALICE, Api


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_for_lines(path, count, timeout=10):
    deadline = time.monotonic() + timeout
    while len(lines(path)) < count:
        assert time.monotonic() < deadline, f"{path}: {lines(path)}"
        time.sleep(0.05)
    return lines(path)


def burst(api, bucket, records):
    """Writes in quick succession; the newest change's timestamp."""
    assert api.put(f"/buckets/{bucket}").status_code in (200, 201)
    assert api.put(f"/buckets/{bucket}/collections/c").status_code == 201
    newest = 0
    for n in range(records):
        # Shell syntax in the data reaches no shell: the command line is fixed.
        data = {"n": n, "title": "$(touch pwned) `touch pwned` ; touch pwned"}
        response = api.post(f"/buckets/{bucket}/collections/c/records", json={"data": data})
        assert response.status_code == 201
        newest = response.json()["data"]["last_modified"]
    return newest


def test_runs_once_after_a_burst_and_again_after_later_writes(start_server, tmp_path):
    runs = tmp_path / "runs.txt"
    command = (
        f'echo "$KFS_CHANGE_COUNT $KFS_CHANGE_TIMESTAMP $KFS_DATA_DIR" >> {shlex.quote(str(runs))}'
    )
    daemon = start_server(change_command=command, change_command_delay_seconds=2)
    api = Api(daemon, ALICE)

    started = time.monotonic()
    newest = burst(api, "b", 8)
    assert time.monotonic() - started < 2, "the burst was too slow to be one"
    first = wait_for_lines(runs, 1)
    time.sleep(1.5)
    assert lines(runs) == first  # one run for the whole burst
    count, timestamp, data_dir = first[0].split(" ", 2)
    assert (int(count), int(timestamp)) == (10, newest)
    assert data_dir == str(daemon.data_dir)

    newest = burst(api, "b2", 1)
    second = wait_for_lines(runs, 2)
    assert second[1].split(" ")[:2] == ["3", str(newest)]
    assert not os.path.exists(tmp_path / "pwned")
    assert not os.path.exists(os.path.join(os.getcwd(), "pwned"))
    logs = daemon.logs()
    assert logs.count("change_command ran for") == 2


def test_one_run_at_a_time_and_changes_during_a_run_get_a_run(start_server, tmp_path):
    runs = tmp_path / "runs.txt"
    out = shlex.quote(str(runs))
    command = f"echo start $KFS_CHANGE_COUNT >> {out}; sleep 1.5; echo end >> {out}"
    daemon = start_server(change_command=command, change_command_delay_seconds=1)
    api = Api(daemon, ALICE)
    burst(api, "b", 2)
    wait_for_lines(runs, 1)  # the run has started
    assert api.put("/buckets/during").status_code == 201
    assert lines(runs) == ["start 4"]  # the write did not wait for the run
    found = wait_for_lines(runs, 4)
    assert found == ["start 4", "end", "start 1", "end"]


def test_a_failure_is_logged_and_pending_changes_run_at_stop(start_server, tmp_path):
    runs = tmp_path / "runs.txt"
    command = f"echo ran >> {shlex.quote(str(runs))}; echo 'something went wrong' >&2; exit 3"
    daemon = start_server(change_command=command, change_command_delay_seconds=30)
    api = Api(daemon, ALICE)
    assert api.put("/buckets/b").status_code == 201
    time.sleep(0.3)
    assert lines(runs) == []  # 30 s have not passed
    assert api.get("/buckets/b").status_code == 200
    daemon.stop()
    assert lines(runs) == ["ran"]  # at stop, for the change still waiting
    logs = daemon.logs()
    assert "change_command failed with exit status 3 (1 changes" in logs
    assert "something went wrong" in logs
    assert "kintofs stopped" in logs


def test_a_file_edited_by_hand_counts_as_a_change(start_server, tmp_path):
    import json

    runs = tmp_path / "runs.txt"
    command = f"echo $KFS_CHANGE_COUNT >> {shlex.quote(str(runs))}"
    daemon = start_server(change_command=command, change_command_delay_seconds=1)
    api = Api(daemon, ALICE)
    assert api.put("/buckets/b").status_code == 201
    assert api.put("/buckets/b/collections/c").status_code == 201
    response = api.put("/buckets/b/collections/c/records/r1", json={"data": {"x": 1}})
    assert response.status_code == 201
    assert wait_for_lines(runs, 1) == ["3"]
    path = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records", "r1.json")
    with open(path) as f:
        document = json.load(f)
    document["x"] = 2
    with open(path, "w") as f:
        json.dump(document, f)
    assert wait_for_lines(runs, 2) == ["3", "1"]  # the watcher's adoption is a change

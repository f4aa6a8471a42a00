"""The change order behind `_since` and the default order (fsstore/changes.py),
alone and inside real lists on disk."""

import random

import pytest

from kintofs.fsstore import FileSystemStore
from kintofs.fsstore import changes as changes_module
from kintofs.fsstore.changes import ChangeOrder

RECORDS = ((("bucket", "b"), ("collection", "c")), "record")


def walk(order, since=None, until=None):
    return list(order.newest_first(since, until))


def test_newest_first_with_bounds():
    order = ChangeOrder([("a", 10), ("b", 20), ("c", 30)])
    assert walk(order) == [("c", 30), ("b", 20), ("a", 10)]
    assert walk(order, since=10) == [("c", 30), ("b", 20)]
    assert walk(order, since=30) == []
    assert walk(order, until=20) == [("b", 20), ("a", 10)]
    assert walk(order, since=10, until=29) == [("b", 20)]


def test_a_new_change_replaces_the_old_one():
    order = ChangeOrder([("a", 10), ("b", 20)])
    order.record("a", 30)
    assert walk(order) == [("a", 30), ("b", 20)]
    assert walk(order, until=15) == [], "the old change of a is gone"
    assert len(order) == 2


def test_past_timestamps_land_in_their_place():
    order = ChangeOrder([("a", 10), ("b", 20)])
    order.record("p", 15)
    order.record("q", 5)
    assert walk(order) == [("b", 20), ("p", 15), ("a", 10), ("q", 5)]
    assert walk(order, since=12) == [("b", 20), ("p", 15)]


def test_equal_timestamps_order_by_id_descending():
    order = ChangeOrder([("a", 10), ("c", 10)])
    order.record("b", 10)
    assert walk(order) == [("c", 10), ("b", 10), ("a", 10)]


def test_returning_to_an_old_timestamp_is_listed_once():
    order = ChangeOrder([("x", 1000)])
    order.record("x", 2000)
    order.record("x", 1000)  # e.g. deleted, then recreated with a forced past timestamp
    assert walk(order) == [("x", 1000)]


def test_stale_pairs_are_rebuilt_away(monkeypatch):
    monkeypatch.setattr(changes_module, "STALE_SLACK", 3)
    order = ChangeOrder([("a", 1), ("b", 2)])
    for ts in range(3, 40):
        order.record("a", ts)
    assert len(order._pairs) < 10, "stale pairs do not pile up"
    assert walk(order) == [("a", 39), ("b", 2)]


def test_random_histories_match_a_naive_model():
    rng = random.Random(1)
    order, latest = ChangeOrder(), {}
    for _ in range(3000):
        object_id = f"o{rng.randrange(50)}"
        ts = rng.randrange(500) if rng.random() < 0.2 else 1000 + len(latest) + rng.randrange(10**6)
        order.record(object_id, ts)
        latest[object_id] = ts
    for since in (None, 0, 300, 2000, 500_000):
        expected = sorted(
            ((oid, ts) for oid, ts in latest.items() if since is None or ts > since),
            key=lambda pair: (pair[1], pair[0]),
            reverse=True,
        )
        assert walk(order, since) == expected


# -- inside a list on disk -----------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    store = FileSystemStore(tmp_path / "data", fsync=False)
    for parent, kind, object_id in (((), "bucket", "b"), ((("bucket", "b"),), "collection", "c")):
        with store.list(parent, kind).transaction() as writer:
            writer.put(object_id, {}, {})
    return store


def changed(object_list, since=None, until=None):
    return [
        (object_id, stored is not None, ts)
        for object_id, stored, ts in object_list.newest_first(since, until)
    ]


def test_list_yields_objects_and_tombstones_newest_first(store):
    records = store.list(*RECORDS)
    with records.transaction() as writer:
        r1 = writer.put("r1", {}, {})["last_modified"]
        r2 = writer.put("r2", {}, {})["last_modified"]
        gone = writer.delete("r1")["last_modified"]
        past = writer.put("past", {}, {}, requested_ts=5)["last_modified"]
    assert past == 5
    assert changed(records) == [("r1", False, gone), ("r2", True, r2), ("past", True, 5)]
    assert changed(records, since=r1) == [("r1", False, gone), ("r2", True, r2)]
    assert changed(records, until=r2) == [("r2", True, r2), ("past", True, 5)]


def test_another_process_writes_are_in_the_order(store, tmp_path):
    ours = store.list(*RECORDS)
    with ours.transaction() as writer:
        first = writer.put("r1", {}, {})["last_modified"]
    assert [oid for oid, _, _ in changed(ours)] == ["r1"]
    other = FileSystemStore(tmp_path / "data", fsync=False).list(*RECORDS)
    with other.transaction() as writer:
        writer.put("r2", {"by": "other"}, {})
        writer.delete("r1")
        writer.put("old", {}, {}, requested_ts=3)
    assert [(oid, live) for oid, live, _ in changed(ours, since=first - 1)] == [
        ("r1", False),
        ("r2", True),
    ]
    assert [oid for oid, _, _ in changed(ours)] == ["r1", "r2", "old"]


def test_a_reloaded_list_has_the_same_order(store, tmp_path):
    records = store.list(*RECORDS)
    with records.transaction() as writer:
        for i in range(5):
            writer.put(f"r{i}", {}, {})
        writer.delete("r2")
        writer.put("r0", {"again": True}, {})
        writer.put("past", {}, {}, requested_ts=7)
    fresh = FileSystemStore(tmp_path / "data", fsync=False).list(*RECORDS)
    assert changed(fresh) == changed(records)


def test_index_max_lists_drops_the_least_recently_used_index(tmp_path):
    store = FileSystemStore(tmp_path / "data", fsync=False, max_lists=2)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    lists = {}
    for cid in ("c1", "c2"):
        with store.list((("bucket", "b"),), "collection").transaction() as writer:
            writer.put(cid, {}, {})
        lists[cid] = store.list((("bucket", "b"), ("collection", cid)), "record")
        with lists[cid].transaction() as writer:
            writer.put("r", {"in": cid}, {})
    assert len(store._lists) == 2
    held = lists["c1"]  # dropped from the store, still used by its holder
    assert store.list((("bucket", "b"), ("collection", "c1")), "record") is not held
    with held.transaction() as writer:
        writer.put("late", {"by": "holder"}, {})
    reloaded = store.list((("bucket", "b"), ("collection", "c1")), "record")
    assert reloaded.get("late").data["by"] == "holder"
    assert [oid for oid, _, _ in changed(reloaded)] == ["late", "r"]
    assert store.list((("bucket", "b"), ("collection", "c2")), "record").get("r").data["in"] == "c2"

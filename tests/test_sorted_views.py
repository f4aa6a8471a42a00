"""A list's sorted views (FileList.derived with query.SortedObjects) stay
exactly the list in their order, whatever changes it: writes of this store,
of another store on the same folder, a journal rewritten under it, and
writers running while it is read.  Each check compares the view with a sort
of the list's live objects done from scratch.
"""

import random
import threading

from conftest import store_with_collection

from kintofs import query
from kintofs.fsstore import FileSystemStore, Stored, listing

RECORDS = (("bucket", "b"), ("collection", "c"))
SORTS = [
    [("score", -1), ("title", 1)],
    [("title", 1)],
    [("score", 1)],
    [("tags", -1), ("last_modified", 1)],
    [("nested.n", 1)],
    [("id", -1)],
]
VALUES = [None, 0, 1, 2.5, -3, "", "a", "b", "ab", True, False, [1], ["a", 2], {"k": 1}]


def random_record(rng):
    record = {}
    for field in ("score", "title", "tags"):
        if rng.random() < 0.85:  # sometimes missing: it sorts after every value
            record[field] = rng.choice(VALUES)
    if rng.random() < 0.5:
        record["nested"] = {"n": rng.choice(VALUES)}
    return record


def write_randomly(records, rng, count, ids=60):
    with records.transaction() as writer:
        for _ in range(count):
            object_id = f"r{rng.randrange(ids)}"
            if rng.random() < 0.2:
                if records.get(object_id) is not None or writer.get(object_id) is not None:
                    writer.delete(object_id)
            else:
                writer.put(object_id, random_record(rng), {})


def viewed(records, sort, cursor=None):
    return records.derived(
        ("sorted", tuple(sort)),
        lambda objects: query.SortedObjects(sort, objects),
        lambda view: [data["id"] for data in view.after(cursor)],
    )


def expected(records, sort):
    return [data["id"] for data in query.sort_objects([s.data for s in records.live()], sort)]


def assert_views_match(records, sorts=SORTS):
    for sort in sorts:
        assert viewed(records, sort) == expected(records, sort), sort


def test_a_view_follows_every_write_and_delete(tmp_path):
    rng = random.Random(7)
    records = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    write_randomly(records, rng, 40)
    for _ in range(60):
        assert_views_match(records)  # six sorts, more than a list keeps: some are rebuilt
        write_randomly(records, rng, rng.choice([1, 3, 10]))
    assert_views_match(records)


def test_a_view_resumes_after_a_cursor(tmp_path):
    rng = random.Random(8)
    records = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    write_randomly(records, rng, 80)
    for sort in SORTS:
        everything = query.sort_objects([s.data for s in records.live()], sort)
        for index in (0, 5, len(everything) - 1):
            cursor = everything[index]
            assert viewed(records, sort, cursor) == [d["id"] for d in everything[index + 1 :]]


def test_many_changes_between_two_uses_rebuild_the_view(tmp_path, monkeypatch):
    monkeypatch.setattr(listing, "DERIVED_REBUILD_SLACK", 2)
    rng = random.Random(9)
    records = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    write_randomly(records, rng, 100, ids=200)
    sort = SORTS[0]
    built = []

    def build(objects):
        built.append(len(objects))
        return query.SortedObjects(sort, objects)

    def ids(view):
        return [data["id"] for data in view.after()]

    records.derived("v", build, ids)
    write_randomly(records, rng, 2)  # a few changes: updated in place
    assert records.derived("v", build, ids) == expected(records, sort)
    assert len(built) == 1
    write_randomly(records, rng, 150, ids=200)  # most of the list: rebuilt
    assert records.derived("v", build, ids) == expected(records, sort)
    assert len(built) == 2


def test_writes_of_another_store_reach_the_view(tmp_path):
    rng = random.Random(10)
    mine = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    theirs = FileSystemStore(tmp_path / "data", fsync=False).list(RECORDS, "record")
    write_randomly(mine, rng, 30)
    assert_views_match(mine, SORTS[:2])
    write_randomly(theirs, rng, 20)  # lines read from the journal by mine
    assert_views_match(mine, SORTS[:2])
    assert viewed(mine, SORTS[0]) == expected(theirs, SORTS[0])


def test_a_journal_rewritten_under_the_view_rebuilds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(listing, "COMPACT_SLACK", 5)
    rng = random.Random(11)
    mine = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    write_randomly(mine, rng, 30, ids=10)
    assert_views_match(mine, SORTS[:2])
    theirs = FileSystemStore(tmp_path / "data", fsync=False).list(RECORDS, "record")
    for _ in range(5):  # enough lines for the other store to compact the journal
        write_randomly(theirs, rng, 10, ids=10)
    assert_views_match(mine, SORTS[:2])
    assert viewed(mine, SORTS[0]) == expected(theirs, SORTS[0])


def test_a_view_read_while_writers_write_is_always_one_sorted_list(tmp_path):
    records = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    write_randomly(records, random.Random(12), 50)
    sort = SORTS[0]
    key = query._order_key(query._total_order(sort))
    stop, problems = threading.Event(), []

    def write(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            write_randomly(records, rng, 3)

    def read():
        while not stop.is_set():
            page = records.derived(
                ("sorted", tuple(sort)),
                lambda objects: query.SortedObjects(sort, objects),
                lambda view: list(view.after()),
            )
            keys = [key(data) for data in page]
            if keys != sorted(keys) or len({d["id"] for d in page}) != len(page):
                problems.append(page)

    threads = [threading.Thread(target=write, args=(seed,)) for seed in (1, 2)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    threading.Event().wait(2)
    stop.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert viewed(records, sort) == expected(records, sort)


def test_a_commit_that_wrote_the_list_reads_without_the_view(tmp_path):
    store = store_with_collection(tmp_path / "data")
    records = store.list(RECORDS, "record")
    write_randomly(records, random.Random(13), 20)
    assert viewed(records, SORTS[0]) is not None
    with records.transaction() as writer:
        writer.put("fresh", {"score": 99}, {})
        assert viewed(records, SORTS[0]) is None  # its own write is not in the index yet
    assert viewed(records, SORTS[0]) == expected(records, SORTS[0])


def test_a_view_counts_in_the_memory_estimate(tmp_path):
    records = store_with_collection(tmp_path / "data").list(RECORDS, "record")
    write_randomly(records, random.Random(14), 50, ids=1000)
    before = records.memory_estimate
    viewed(records, SORTS[0])
    size = len(records.live())
    assert records.memory_estimate == (
        before + listing.DERIVED_BYTES + listing.DERIVED_ENTRY_BYTES * size
    )
    for sort in SORTS[1:]:
        viewed(records, sort)
    views = min(len(SORTS), listing.MAX_DERIVED)
    assert records.memory_estimate == (
        before + views * (listing.DERIVED_BYTES + listing.DERIVED_ENTRY_BYTES * size)
    )


def test_an_object_whose_key_changed_in_place_is_still_moved():
    # Not done by the store (its objects are replaced, never changed), but a
    # view must never fail a request on it: it finds the object by walking.
    objects = [Stored({"id": f"r{i}", "n": i}, {}) for i in range(5)]
    view = query.SortedObjects([("n", 1)], objects)
    objects[1].data["n"] = 9
    view.update([(objects[1], Stored({"id": "r1", "n": 10}, {}))])
    assert [data["id"] for data in view.after()] == ["r0", "r2", "r3", "r4", "r1"]
    view.update([(Stored({"id": "gone", "n": 0}, {}), None)])  # not in the view: nothing to move
    assert len(view) == 5

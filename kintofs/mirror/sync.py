"""One copy from a source side to a target side, list by list, resumable.

Each list (the buckets, a bucket's groups or collections, a collection's
records) has two cursors in the state file, per direction: the source's and
the target's list timestamps at the end of the last complete copy of that
list.  A run reads what changed on each side since its cursor (``_since`` on
a server, the journal order on kintofs), compares each changed object with
the other side's version, and writes only what differs.  Before a first
copy the cursors are unknown: every source object is compared with the
target's, so a copy killed half-way and run again writes only what is
missing, never a second copy of anything (objects keep their ids).

An object changed on both sides since the last copy, to different content,
is a conflict: reported, left alone, and the list's cursors stay where they
were (the next run sees it again) unless ``prefer`` names the side that wins.
"""

import os
import sys
from dataclasses import dataclass, field

from ..acl import normalize_acl
from ..fsstore.atomic import read_json, write_json
from .sides import SideError, attachment_of

# Changes written per call to the target: the progress bar's step, and what a
# kill can lose at most (it is written again on the next run).
WRITES_PER_STEP = 250


@dataclass
class Counts:
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    failed: int = 0
    records: int = 0  # written or deleted records, for the rate

    def add(self, other):
        for name in ("written", "deleted", "unchanged", "conflicts", "failed", "records"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self):
        return (
            f"{self.written} written, {self.deleted} deleted, {self.unchanged} unchanged, "
            f"{self.conflicts} conflicts, {self.failed} failed"
        )


class State:
    """The cursors of one data directory and one server account, in one JSON file."""

    def __init__(self, path, *, fsync=True):
        self.path, self.fsync = path, fsync
        try:
            self.cursors = read_json(path) or {}
        except ValueError:
            raise SideError(f"{path} is not JSON: delete it to copy afresh") from None

    def get(self, direction, key):
        return self.cursors.get(direction, {}).get(key, {})

    def set(self, direction, key, source, target):
        self.cursors.setdefault(direction, {})[key] = {"source": source, "target": target}
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_json(self.path, self.cursors, fsync=self.fsync)


class Progress:
    """A bar on a terminal; otherwise one line per list when it is done."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()

    def step(self, label, done, total):
        if self.tty and total:
            width = 30
            filled = width * done // total
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{label} [{bar}] {done}/{total}")
            self.stream.flush()

    def finished(self, label, counts):
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"{label}: {counts.describe()}\n")
        self.stream.flush()


@dataclass
class Mirror:
    source: object
    target: object
    direction: str  # "push" or "pull": the state file keeps each one's cursors
    state: State
    mapping: dict  # source principal -> target principal
    prefer: str | None = None  # "source", "target" or None
    dry_run: bool = False
    only_bucket: str | None = None
    only_collection: str | None = None
    keep_own_principal: bool = False
    progress: Progress = field(default_factory=Progress)
    say: object = print
    totals: Counts = field(default_factory=Counts)

    def run(self):
        self.totals = Counts()
        self.sync_list((), "bucket", self.only_bucket)
        for bucket in self.live_source_ids((), "bucket", self.only_bucket):
            path = (("bucket", bucket),)
            if self.only_collection is None:
                self.sync_list(path, "group")
            self.sync_list(path, "collection", self.only_collection)
            for collection in self.live_source_ids(path, "collection", self.only_collection):
                self.sync_list((*path, ("collection", collection)), "record")
        return self.totals

    def live_source_ids(self, path, kind, only):
        found = self.source.changed(path, kind, None)
        return sorted(i for i in found if only is None or i == only)

    # -- one list ------------------------------------------------------------

    def sync_list(self, path, kind, only=None):
        label = "/".join(f"{k}s/{i}" for k, i in path) + ("/" if path else "") + f"{kind}s"
        key = label + (f"#{only}" if only else "")
        cursor = self.state.get(self.direction, key)
        source_since, target_since = cursor.get("source"), cursor.get("target")
        source_ts = self.source.timestamp(path, kind)  # before reading: nothing is missed
        mine = self.source.changed(path, kind, source_since)
        theirs = self._target_changes(path, kind, target_since)
        if only is not None:
            mine = {i: d for i, d in mine.items() if i == only}
            theirs = {i: d for i, d in theirs.items() if i == only}
        counts = Counts()
        changes, current = self._plan(path, kind, mine, theirs, target_since, counts, label)
        if self.dry_run:
            for object_id, obj in changes:
                action = "delete" if obj["data"].get("deleted") else "write"
                self.say(f"would {action} {label}/{object_id}")
            self._count(kind, changes, counts)
        else:
            self._write(path, kind, changes, current, counts, label)
        self.progress.finished(label, counts)
        self.totals.add(counts)
        if not self.dry_run and not counts.conflicts and not counts.failed:
            target_ts = self.target.timestamp(path, kind)
            self.state.set(self.direction, key, source_ts, target_ts)

    def _target_changes(self, path, kind, since):
        if self.dry_run and not self.target.exists(path):
            return {}  # its container is not there yet: it would be created
        return self.target.changed(path, kind, since)

    def _plan(self, path, kind, mine, theirs, target_since, counts, label):
        """What to write: ``[(id, object)]``, and the target's version of each id."""
        live = [i for i, d in mine.items() if not d.get("deleted")]
        mine_acl = self.source.permissions(path, kind, live)
        compared = [i for i in mine if i in theirs and not theirs[i].get("deleted")]
        theirs_acl = self.target.permissions(path, kind, compared)
        changes, current = [], {}
        for object_id, data in mine.items():
            other = theirs.get(object_id)
            other_obj = None
            if other is not None and not other.get("deleted"):
                other_obj = {"data": other, "permissions": theirs_acl.get(object_id) or {}}
                current[object_id] = other_obj
            if data.get("deleted"):
                obj = {"data": data}
                if other is None and target_since is None:
                    continue  # never there
                if other is not None and other.get("deleted"):
                    continue  # deleted on both sides
            else:
                obj = self._mapped({"data": data, "permissions": mine_acl.get(object_id) or {}})
                if other_obj is not None and self._same(obj, other_obj):
                    counts.unchanged += 1
                    continue
            # Changed on the target too (since the last copy, or before a first one).
            if other is not None and not self._wins(label, object_id, obj, other_obj, counts):
                continue
            changes.append((object_id, obj))
        return changes, current

    def _wins(self, label, object_id, obj, other_obj, counts):
        """Whether the source's version of a conflict is written."""
        if self.prefer == "source":
            return True
        if self.prefer == "target":
            counts.unchanged += 1
            return False
        counts.conflicts += 1
        here = "deleted" if obj["data"].get("deleted") else "changed"
        there = "deleted" if other_obj is None else "changed"
        self.say(
            f"CONFLICT {label}/{object_id}: {here} on {self.source.name} and {there} on "
            f"{self.target.name} since the last {self.direction}; left as it is on both "
            "(--prefer local or --prefer remote chooses)"
        )
        return False

    def _write(self, path, kind, changes, current, counts, label):
        done = 0
        self.progress.step(label, 0, len(changes))
        for start in range(0, len(changes), WRITES_PER_STEP):
            step = changes[start : start + WRITES_PER_STEP]
            failures = self.target.write(path, kind, step, self.source, current)
            failed = {object_id for object_id, _ in failures}
            for object_id, message in failures:
                self.say(f"FAILED {label}/{object_id}: {message}")
            counts.failed += len(failed)
            self._count(kind, [c for c in step if c[0] not in failed], counts)
            done += len(step)
            self.progress.step(label, done, len(changes))

    @staticmethod
    def _count(kind, changes, counts):
        for _, obj in changes:
            if obj["data"].get("deleted"):
                counts.deleted += 1
            else:
                counts.written += 1
        if kind == "record":
            counts.records += len(changes)

    # -- principals and comparison ---------------------------------------------

    def _mapped(self, obj):
        """``obj`` with the source's principals as the target knows them."""
        drop = set()
        own = self.source.own_principal
        if own and not self.keep_own_principal and own not in self.mapping:
            drop.add(own)  # the server added it to every object the mirror wrote there

        def convert(principals):
            return [self.mapping.get(p, p) for p in principals if p not in drop]

        data = dict(obj["data"])
        if isinstance(data.get("members"), list) and "deleted" not in data:
            data["members"] = convert(data["members"])
        acl = {name: convert(members) for name, members in obj["permissions"].items()}
        return {"data": data, "permissions": normalize_acl(acl)}

    def _same(self, mine, theirs):
        return self._comparable(mine) == self._comparable(theirs)

    def _comparable(self, obj):
        """What must agree for two versions to be the same object."""
        data = {k: v for k, v in obj["data"].items() if k != "last_modified"}
        metadata = attachment_of(data)
        if metadata is not None:  # each server has its own URL for the file
            data["attachment"] = {k: v for k, v in metadata.items() if k != "location"}
        own = {self.source.own_principal, self.target.own_principal} - {None}
        acl = {n: [p for p in m if p not in own] for n, m in obj["permissions"].items()}
        return data, normalize_acl(acl)

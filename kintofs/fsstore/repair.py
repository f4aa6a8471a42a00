"""``kintofs check --repair``: fix what :mod:`.verify` found.

Every fix runs under the lock that guards the file (the list's ``_lock``, or
the root's), so a daemon running meanwhile sees it as one more write.
Nothing unreadable is deleted: it moves to ``<data>/_quarantine/`` for the
operator to look at.  Journals end up as the daemon itself repairs them when
it loads a list (the files are the truth for live objects, and a file the
journal never saw gets a ``put`` line), so polling clients see ordinary
changes.

What each fix does to the data:

* a record or group whose data file is unreadable is deleted (a tombstone
  in the journal), its files quarantined;
* a bucket or collection whose data file is unreadable keeps its contents
  and gets a minimal data file (``{"id": ...}``);
* an unreadable ACL sidecar is quarantined: the object keeps only the
  permissions it inherits, until someone sets them again;
* a damaged or missing journal is rebuilt from its valid lines and the files.
"""

import os
import shutil
import time
import uuid

from .atomic import read_json, remove_quietly, write_bytes, write_json
from .base import ParentNotFound, StorageBusy
from .journal import cut_torn_tail, encode, parse_line, stamped
from .layout import CONTAINERS, JOURNAL_NAME, ListFolder, quarantine_folder, valid_id_for
from .listing import FileList
from .locks import locked
from .store import FileSystemStore
from .verify import LOCK_WAIT_SECONDS, latest_entries, object_stamps, read_journal_leniently

JOURNAL_DAMAGE = {"bad-journal-line", "journal-order", "journal-missing"}


def repair(report):
    """Fix every finding of ``report``; returns one line per action taken."""
    actions = []
    if any(finding.problem == "unfinished-commits" for finding in report.findings):
        # Opening the directory replays the logs of dead processes (commit.py).
        replayed = FileSystemStore(report.root).replayed
        actions.append(f"commit logs replayed: {replayed} write(s) the files missed")
    for (guard, kind), findings in _by_guard(report.findings).items():
        findings = [f for f in findings if f.problem != "unfinished-commits"]
        try:
            with locked(guard, timeout=LOCK_WAIT_SECONDS):
                for finding in findings:
                    action = FIXES[finding.problem](finding, report.root)
                    if action:
                        actions.append(f"{action}: {os.path.relpath(finding.path, report.root)}")
                if kind and any(f.problem in JOURNAL_DAMAGE for f in findings):
                    count = rebuild_journal(ListFolder(guard, kind))
                    actions.append(
                        f"journal rebuilt with {count} lines: {os.path.relpath(guard, report.root)}"
                    )
                elif kind:
                    renew_journal(ListFolder(guard, kind))
        except ParentNotFound:
            continue  # the list was deleted meanwhile: nothing left to fix
        except StorageBusy:
            actions.append(f"NOT repaired, its lock is busy: {os.path.relpath(guard, report.root)}")
            continue
        if kind:
            reload_list(ListFolder(guard, kind))
    return actions


def _by_guard(findings):
    groups = {}
    for finding in findings:
        groups.setdefault((finding.guard, finding.kind), []).append(finding)
    return groups


# -- whole lists ---------------------------------------------------------------


def rebuild_journal(lst):
    """Rewrite a list's journal from its valid lines and its files (lock held).

    Live objects get a ``put`` at their file's ``last_modified``; ids without
    a file keep their last line (a ``put`` there becomes a tombstone when
    the list is loaded next, :func:`reload_list`); the list timestamp never
    goes back.  Lines that would break the strict order are dropped, and
    their objects get a fresh timestamp at that load.
    """
    entries = read_journal_leniently(lst.path)[0] or []
    stamps = object_stamps(lst)
    kept = [{"ts": ts, "op": "put", "id": object_id} for object_id, ts in stamps.items()]
    kept += [
        entry for object_id, entry in _latest_by_time(entries).items() if object_id not in stamps
    ]
    kept.sort(key=lambda entry: entry["ts"])
    rebuilt = []
    for entry in kept:
        if not rebuilt or entry["ts"] > rebuilt[-1]["ts"]:
            rebuilt.append(entry)
    top = max([entry["ts"] for entry in entries] + list(stamps.values()), default=None)
    if top is not None and (not rebuilt or rebuilt[-1]["ts"] < top):
        rebuilt.append({"ts": top, "op": "init"})
    write_bytes(os.path.join(lst.path, JOURNAL_NAME), encode(stamped(rebuilt)))
    return len(rebuilt)


def renew_journal(lst):
    """Give the journal a new inode with the same lines (lock held).

    Daemons trust their in-memory index while the journal's (inode, size)
    stays the same; a repair that changed files without a journal line
    (a quarantined ACL, a fixed id) must make them load the list again.
    """
    path = os.path.join(lst.path, JOURNAL_NAME)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return
    write_bytes(path, content)


def _latest_by_time(entries):
    """Like ``latest_entries``, but by timestamp: the order may be broken."""
    return latest_entries(sorted(entries, key=lambda entry: entry["ts"]))


def reload_list(lst):
    """Load the list as the daemon does: the journal gets a line for each
    file it is behind on, and for each file that vanished."""
    FileList(
        lst.path, lst.kind, container=lst.container, valid_id=valid_id_for(lst.kind), fsync=True
    ).objects()


# -- single findings (lock held) -----------------------------------------------


def _remove(finding, root):
    path = finding.path
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        remove_quietly(path)
    return "removed"


def _cut_torn_tail(finding, root):
    with open(finding.path, "rb+") as f:
        cut_torn_tail(f)
        # The cut changes the file's ctime: an "init" line (it changes no
        # timestamp) records when, or the next load takes the journal for a
        # restore by another program (journal.rewritten_by_others).
        f.seek(0)
        times = [entry["ts"] for entry in map(parse_line, f.read().splitlines()) if entry]
        if times:
            f.write(encode(stamped([{"ts": max(times), "op": "init"}])))
        os.fsync(f.fileno())
    return "cut the torn last line"


def _quarantine_data(finding, root):
    """A leaf object is deleted; a container keeps its contents under a minimal data file."""
    quarantine(finding.path, root)
    if finding.kind in CONTAINERS:
        write_json(finding.path, {"id": finding.object_id})
        return "quarantined, replaced by a minimal data file"
    acl_path = ListFolder(finding.guard, finding.kind).acl_path(finding.object_id)
    if os.path.exists(acl_path):
        quarantine(acl_path, root)
    return "quarantined (the object is deleted)"


def _quarantine_acl(finding, root):
    quarantine(finding.path, root)
    return "quarantined (the object keeps inherited permissions only)"


def _fix_id(finding, root):
    write_json(finding.path, dict(read_json(finding.path), id=finding.object_id))
    return "set the id to the file's name"


def _write_container_data(finding, root):
    write_json(finding.path, {"id": finding.object_id})
    return "wrote a minimal data file"


def _left_as_is(finding, root):
    return "NOT repaired (needs a person)"


def _by_the_journal(finding, root):
    return None  # rebuild_journal or reload_list does it


FIXES = {
    "temp-file": _remove,
    "trash": _remove,
    "heartbeat": _remove,
    "orphan-acl": _remove,
    "orphan-attachment": _remove,
    "empty-object-folder": _remove,
    "torn-journal-tail": _cut_torn_tail,
    "unjournaled": _by_the_journal,
    "missing-file": _by_the_journal,
    "edited-by-hand": _by_the_journal,
    "unfinished-commits": _by_the_journal,
    "stale-file": _by_the_journal,
    "bad-timestamp": _by_the_journal,
    "bad-journal-line": _by_the_journal,
    "journal-order": _by_the_journal,
    "journal-missing": _by_the_journal,
    "unreadable-data": _quarantine_data,
    "unreadable-acl": _quarantine_acl,
    "wrong-id": _fix_id,
    "missing-container-data": _write_container_data,
    "bad-format": _left_as_is,
    "lock-busy": _left_as_is,
}


def quarantine(path, root):
    """Move ``path`` to ``<root>/_quarantine/<same relative path>.<time>``."""
    relative = os.path.relpath(path, root)
    stamp = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    target = os.path.join(quarantine_folder(root), f"{relative}.{stamp}")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    os.replace(path, target)
    return target

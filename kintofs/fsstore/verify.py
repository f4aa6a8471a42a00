"""``kintofs check``: read every file of a data directory and say what is wrong.

Two sorts of finding:

* **leftovers** of a write that a crash interrupted (or that is still in
  progress): temp files, a trash folder, a journal whose last line has no
  newline yet, and a journal one line behind its files.  They are harmless:
  the daemon heals the journal when it loads the list, and
  ``kintofs check --repair`` cleans the rest.
* **damage** that no crash can cause, since every file is replaced
  atomically: a data file or ACL sidecar that is not JSON, a journal line
  that is not a journal entry, timestamps out of order, a file older than its
  own journal line, a missing journal.  Disk faults and hand edits do this.

Each list is read while holding its ``_lock``, so a daemon writing at the same
time is seen between two writes, never in the middle of one.  With
``flock(2)`` a lock file is never *stale*: the kernel drops the lock when the
holding process dies, however it dies, so a ``_lock`` file left by a killed
daemon blocks nobody.  What can block is a live process that holds a lock
and does not let go; check names it (from ``/proc/locks``) as ``lock-busy``.
"""

import errno
import fcntl
import json
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from .base import ParentNotFound, StorageBusy, StorageFull
from .journal import content_digest, is_timestamp, parse_line
from .layout import (
    ACL_SUFFIX,
    ATTACHMENT_SUFFIX,
    COMMIT_LOG_SUFFIX,
    COMMITS_FOLDER,
    DATA_SUFFIX,
    FORMAT,
    FORMAT_FILE,
    HEARTBEAT_PREFIX,
    JOURNAL_NAME,
    LOCK_NAME,
    TEMP_PREFIX,
    TRASH_PREFIX,
    id_with_suffix,
    is_dot_name,
    lists_in,
    object_folders,
    quarantine_folder,
)
from .locks import locked

# How long check waits for a list's lock before calling its holder stuck.
LOCK_WAIT_SECONDS = 10

LEFTOVERS = {
    "temp-file": "a write in progress or interrupted; safe to delete",
    "trash": "a deleted container being removed; safe to delete",
    "heartbeat": "a heartbeat probe; safe to delete",
    "orphan-acl": "ACL sidecar of an object that was deleted; safe to delete",
    "orphan-attachment": "attached file of a record that was deleted; safe to delete",
    "empty-object-folder": "folder of a container whose creation was interrupted",
    "torn-journal-tail": "the journal's last line was being written; the next write cuts it",
    "unjournaled": "the journal is behind this file (an interrupted write); the daemon adds the line",
    "missing-file": "the journal lists this object but its file is gone (an interrupted delete)",
    "edited-by-hand": "the files are not the bytes their journal line hashed; the daemon makes a revision",
    "unfinished-commits": "a process died before its last commits reached every file; the next start replays them",
}

DAMAGE = {
    "bad-format": "not a kintofs data directory of this version",
    "unreadable-data": "the object's data file is not a JSON object",
    "unreadable-acl": "the object's ACL sidecar is not a JSON object of lists of strings",
    "wrong-id": "the data file names another id",
    "bad-timestamp": "last_modified is not an integer",
    "bad-journal-line": "a journal line that is not a journal entry",
    "journal-order": "journal timestamps are not strictly increasing",
    "journal-missing": "the list has objects but no journal",
    "stale-file": "the file is older than its own journal line",
    "missing-container-data": "a container folder with contents but no data file",
    "lock-busy": "a live process holds this lock and does not let go",
}


@dataclass
class Finding:
    problem: str  # a key of LEFTOVERS or DAMAGE
    path: str  # the file or folder concerned
    detail: str = ""
    guard: str = ""  # the folder whose lock guards a fix: a list folder or the root
    kind: str = ""  # the kind of that list ("" for the root)
    object_id: str = ""

    @property
    def damage(self):
        return self.problem in DAMAGE

    def describe(self, root):
        label = "DAMAGE  " if self.damage else "LEFTOVER"
        meaning = DAMAGE.get(self.problem) or LEFTOVERS[self.problem]
        extra = f" ({self.detail})" if self.detail else ""
        return f"{label} {self.problem}: {os.path.relpath(self.path, root)}: {meaning}{extra}"


@dataclass
class Report:
    root: str
    findings: list = field(default_factory=list)
    lists: int = 0
    objects: int = 0
    journal_lines: int = 0
    acl_files: int = 0
    quarantined: int = 0

    @property
    def clean(self):
        return not self.findings

    def damaged(self):
        return [f for f in self.findings if f.damage]

    def add(self, problem, path, detail="", *, where=None, object_id=""):
        guard, kind = (where.path, where.kind) if where else (self.root, "")
        self.findings.append(Finding(problem, path, detail, guard, kind, object_id))

    def summary(self):
        damaged = len(self.damaged())
        return (
            f"checked {self.lists} lists, {self.objects} objects, {self.acl_files} ACL files, "
            f"{self.journal_lines} journal lines: {damaged} damaged, "
            f"{len(self.findings) - damaged} leftovers"
        )


# -- the walk ----------------------------------------------------------------


def verify(root, *, lock_wait=LOCK_WAIT_SECONDS):
    """Check the whole data directory at ``root``; returns a :class:`Report`."""
    root = os.path.abspath(root)
    report = Report(root)
    with _held(root, lock_wait, report, None) as held:
        if held:
            _check_format(report)
            _check_leftovers(root, report, None, at_root=True)
            _check_commit_logs(root, report)
    report.quarantined = _count_files(quarantine_folder(root))
    pending = lists_in(root)
    while pending:
        pending.extend(check_list(pending.pop(), report, lock_wait))
    return report


def check_list(lst, report, lock_wait=LOCK_WAIT_SECONDS):
    """Check one list under its lock; returns the lists inside its objects."""
    with _held(lst.path, lock_wait, report, lst) as held:
        if not held:
            return []
        report.lists += 1
        entries = _check_journal(lst, report)
        files, children = _check_objects(lst, report)
        _compare(lst, entries, files, report)
        _check_leftovers(lst.path, report, lst)
        return children


@contextmanager
def _held(folder, lock_wait, report, lst):
    """Hold ``folder``'s lock; yields False when the folder is gone or the lock busy."""
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(folder, timeout=lock_wait))
        except ParentNotFound:
            yield False  # deleted meanwhile by a daemon
            return
        except StorageBusy:
            report.add(
                "lock-busy",
                os.path.join(folder, LOCK_NAME),
                lock_holders(os.path.join(folder, LOCK_NAME)),
                where=lst,
            )
            yield False
            return
        except StorageFull:
            pass  # a read-only copy (a mounted backup): nobody writes it, read unlocked
        yield True


def _check_format(report):
    path = os.path.join(report.root, FORMAT_FILE)
    found, problem = _read_json_file(path)
    if found != FORMAT:
        report.add("bad-format", path, problem or f"found {json.dumps(found)}")


# -- journal -------------------------------------------------------------------


def read_journal_leniently(folder):
    """``(entries, problems, torn)``: the valid entries of a journal and what is wrong.

    ``problems`` are ``(problem, detail)`` pairs; ``entries`` is None when
    there is no journal.
    """
    path = os.path.join(folder, JOURNAL_NAME)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return None, [], False
    complete, torn = content, False
    if content and not content.endswith(b"\n"):
        complete, torn = content[: content.rfind(b"\n") + 1], True
    entries, problems = [], []
    for number, line in enumerate(complete.splitlines(), 1):
        entry = parse_line(line)
        if entry is None:
            problems.append(("bad-journal-line", f"line {number}: {line[:80]!r}"))
        elif entries and entry["ts"] <= entries[-1]["ts"] and entry["op"] != "init":
            # (an "init" line changes no timestamp: a repair writes one with the last ts)
            problems.append(
                ("journal-order", f"line {number}: ts {entry['ts']} after {entries[-1]['ts']}")
            )
            entries.append(entry)
        else:
            entries.append(entry)
    return entries, problems, torn


def _check_journal(lst, report):
    entries, problems, torn = read_journal_leniently(lst.path)
    path = os.path.join(lst.path, JOURNAL_NAME)
    for problem, detail in problems:
        report.add(problem, path, detail, where=lst)
    if torn:
        report.add("torn-journal-tail", path, where=lst)
    report.journal_lines += len(entries or [])
    return entries


def latest_entries(entries):
    """``{id: entry}``: the journal's last word on each object."""
    latest = {}
    for entry in entries:
        if entry["op"] != "init":
            latest[entry["id"]] = entry
    return latest


# -- objects -------------------------------------------------------------------


def _check_objects(lst, report):
    """``({id: data}, child lists)`` of a list's readable objects."""
    files, children = {}, []
    if lst.container:
        for object_id, folder in object_folders(lst).items():
            data = _check_container(lst, object_id, folder, report)
            if data is not None:
                files[object_id] = data
            children.extend(lists_in(folder))
    else:
        for object_id in lst.named_ids():
            data = _check_object_files(
                lst, object_id, lst.data_path(object_id), lst.acl_path(object_id), report
            )
            if data is not None:
                files[object_id] = data
    return files, children


def _check_container(lst, object_id, folder, report):
    data_path = os.path.join(folder, lst.data_name())
    if not os.path.exists(data_path):
        if _holds_objects(folder):
            report.add("missing-container-data", data_path, where=lst, object_id=object_id)
        else:
            report.add("empty-object-folder", folder, where=lst, object_id=object_id)
        return None
    _check_leftovers(folder, report, lst)
    return _check_object_files(
        lst, object_id, data_path, os.path.join(folder, lst.acl_name()), report
    )


def _check_object_files(lst, object_id, data_path, acl_path, report):
    """The object's data if it reads well; findings for what does not."""
    report.objects += 1
    data, problem = _read_json_file(data_path)
    if problem or not isinstance(data, dict):
        report.add(
            "unreadable-data", data_path, problem or "not an object", where=lst, object_id=object_id
        )
        data = None
    elif data.get("id") != object_id:
        report.add("wrong-id", data_path, f"id {data.get('id')!r}", where=lst, object_id=object_id)
    elif not is_timestamp(data.get("last_modified")):
        report.add(
            "bad-timestamp",
            data_path,
            f"{data.get('last_modified')!r}",
            where=lst,
            object_id=object_id,
        )
    if os.path.exists(acl_path):
        report.acl_files += 1
        acl, problem = _read_json_file(acl_path)
        if problem or not _is_acl(acl):
            report.add(
                "unreadable-acl", acl_path, problem or "not an ACL", where=lst, object_id=object_id
            )
    return data


def _compare(lst, entries, files, report):
    """Do the journal and the files tell the same story?"""
    journal = os.path.join(lst.path, JOURNAL_NAME)
    if entries is None:
        if len(files) > 1:
            report.add("journal-missing", journal, f"{len(files)} objects", where=lst)
        entries = []
    latest = latest_entries(entries)
    for object_id, data in files.items():
        entry, stamp = latest.get(object_id), data.get("last_modified")
        path = lst.data_path(object_id)
        if not is_timestamp(stamp):
            continue  # reported as bad-timestamp
        if entry is None or entry["op"] != "put" or stamp > entry["ts"]:
            report.add(
                "unjournaled",
                path,
                f"file at {stamp}, journal {entry and (entry['op'], entry['ts'])}",
                where=lst,
                object_id=object_id,
            )
        elif stamp < entry["ts"]:
            report.add(
                "stale-file",
                path,
                f"file at {stamp}, journal put at {entry['ts']}",
                where=lst,
                object_id=object_id,
            )
        elif isinstance(entry.get("hash"), str) and _edited(lst, object_id, entry["hash"]):
            report.add("edited-by-hand", path, where=lst, object_id=object_id)
    for object_id, entry in latest.items():
        if entry["op"] == "put" and object_id not in files and lst.valid_id(object_id):
            if os.path.exists(lst.data_path(object_id)):
                continue  # the file exists but is unreadable: reported already
            report.add(
                "missing-file",
                lst.data_path(object_id),
                f"journal put at {entry['ts']}",
                where=lst,
                object_id=object_id,
            )
    if not lst.container:
        _check_orphans(lst, files, report)


def _edited(lst, object_id, expected):
    """True when readable files are not the bytes the journal hashed (an
    unreadable ACL is reported as damage already)."""
    found = []
    for path in (lst.data_path(object_id), lst.acl_path(object_id)):
        try:
            with open(path, "rb") as f:
                found.append(f.read())
        except FileNotFoundError:
            found.append(b"")
    if found[1] and not _is_acl(_parsed(found[1])):
        return False
    return content_digest(*found) != expected


def _parsed(content):
    try:
        return json.loads(content)
    except ValueError:
        return None


def _check_commit_logs(root, report):
    """The commit logs no live process holds: their last commits may be missing from the files."""
    folder = os.path.join(root, COMMITS_FOLDER)
    for name in _names(folder):
        if name.endswith(COMMIT_LOG_SUFFIX) and not _held_by_a_live_process(
            os.path.join(folder, name)
        ):
            report.add("unfinished-commits", os.path.join(folder, name))


def _held_by_a_live_process(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # checkpointed meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# A leaf object's other files, which outlive it only after an interrupted delete.
ORPHANS = ((ACL_SUFFIX, "orphan-acl"), (ATTACHMENT_SUFFIX, "orphan-attachment"))


def _check_orphans(lst, files, report):
    for name in _names(lst.path):
        for suffix, problem in ORPHANS:
            object_id = id_with_suffix(name, suffix, lst.valid_id)
            if (
                object_id is not None
                and object_id not in files
                and not os.path.exists(lst.data_path(object_id))
            ):
                report.add(problem, os.path.join(lst.path, name), where=lst, object_id=object_id)


def object_stamps(lst):
    """``{id: last_modified}`` of the objects whose data file reads well."""
    stamps = {}
    for object_id in lst.named_ids():
        data, problem = _read_json_file(lst.data_path(object_id))
        if problem is None and isinstance(data, dict) and is_timestamp(data.get("last_modified")):
            stamps[object_id] = data["last_modified"]
    return stamps


def _check_leftovers(folder, report, lst, at_root=False):
    for name in _names(folder):
        path = os.path.join(folder, name)
        if name.startswith(TEMP_PREFIX):
            report.add("temp-file", path, where=lst)
        elif name.startswith(TRASH_PREFIX):
            report.add("trash", path, where=lst)
        elif at_root and name.startswith(HEARTBEAT_PREFIX):
            report.add("heartbeat", path, where=lst)


def _holds_objects(folder):
    """True if any file below ``folder`` is data (not a lock, journal or leftover)."""
    for _, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_dot_name(d)]
        if any(n.endswith((DATA_SUFFIX, ACL_SUFFIX)) for n in names if not is_dot_name(n)):
            return True
    return False


# -- small readers -------------------------------------------------------------


def _read_json_file(path):
    """``(document, problem)``: problem is None when the file parsed."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as error:
        return None, str(error)[:120]


def _is_acl(document):
    return isinstance(document, dict) and all(
        isinstance(key, str)
        and isinstance(value, list)
        and all(isinstance(item, str) for item in value)
        for key, value in document.items()
    )


def _names(folder):
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _count_files(folder):
    return sum(len(names) for _, _, names in os.walk(folder))


def lock_holders(lock_path):
    """Who holds ``lock_path``: "pid 123 (kintofs serve ...)", from Linux's /proc/locks."""
    try:
        status = os.stat(lock_path)
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError as error:
        return f"holder unknown: {os.strerror(error.errno or errno.EIO)}"
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    holders = []
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6:
            continue  # a waiter, not a holder
        if fields[1] == "FLOCK" and fields[5] == device:
            holders.append(f"pid {fields[4]} ({_command_of(fields[4])})")
    return ", ".join(holders) or "holder unknown"


def _command_of(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300]
    except OSError:
        return "?"

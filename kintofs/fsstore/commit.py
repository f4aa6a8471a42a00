"""Commits: every write of one request, or of one batch, durable together or not at all.

A :class:`Commit` collects the writes of one or more list transactions (an
object and its history entry; every sub-request of a batch) without touching
the lists' files: they wait in the lists' pending overlays (listing.py),
which only the commit's own thread sees.  When the commit ends:

1. each new object file is written to a temp file beside its place: what
   needs disk space happens first, and a full disk fails here, changing
   nothing;
2. one line holding every write is appended to this process's commit log,
   ``_commits/<random>.jsonl``.  The lists are handed over: the next commit
   of another thread may take them now, and sees these writes (they wait in
   the list's logged overlay); readers do not see them yet;
3. the line is fsynced.  This is the commit point.  Commits of other threads
   that reach this step while an fsync is in flight share the next one
   (group commit), those of the same list included;
4. in the order of their log lines, per list, the temp files are renamed
   into place and the lists' journal lines appended, with no fsync of their
   own, and the indexes take the writes (readers see them from here on);
5. the list is left: once no commit of this process holds or still applies
   to it, its ``flock`` is released.

A commit that read the overlay of one handed over to it depends on it: if
the earlier line is lost (its fsync failed, and the log was cut back), the
later commit fails too, before or at its own fsync (:meth:`CommitLog.write`).

Before 3 a failure, or an abort of a batch, leaves nothing but temp files,
which are removed.  From 3 on the commit is durable: if the process dies
before 3 is over, or the machine loses power before the files reach the disk,
the next process that opens the data directory replays the log into the
files (:func:`recover`).  Once a log is long enough, a checkpoint syncs the
file system and deletes it, so that a log only holds the last commits.

A log belongs to its process for as long as it lives (an ``flock`` on it);
recovery only reads logs whose lock it can take, the logs of dead processes.

A commit with no log (lists outside a store, as ``kintofs check`` uses them)
writes every file durably in step 4 instead, one list after the other, and
hands nothing over.
"""

import ctypes
import fcntl
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field

from .atomic import check_injected_fault, fsync_folder, raise_if_disk_refused, remove_quietly
from .base import ParentNotFound, StorageError
from .layout import COMMIT_LOG_SUFFIX as LOG_SUFFIX
from .layout import COMMITS_FOLDER

logger = logging.getLogger(__name__)


# A log is checkpointed (the file system synced, the log deleted) past this size.
CHECKPOINT_BYTES = 4 * 1024 * 1024

_current = threading.local()


def current():
    """The commit the calling thread is inside, or None."""
    return getattr(_current, "commit", None)


@dataclass
class Op:
    """One write of a commit, as its log line holds it."""

    object_list: object  # the FileList
    # "put", "delete", "forget" (files already removed by hand), "init", or
    # "file": an object's attached file put in place (from ``temps``) or removed
    op: str
    ts: int
    object_id: str | None = None
    data: dict | None = None
    acl: dict | None = None
    data_bytes: bytes = b""
    acl_bytes: bytes = b""
    digest: str | None = None
    temps: list = field(default_factory=list)  # (temp path, final path), staged in step 1
    write_acl: bool = True  # "put": False leaves the ACL sidecar as it is (holding ``acl_bytes``)
    keep_old: bool = False  # "file": keep the file it replaces or removes ...
    kept: str | None = None  # ... there (named from its content in step 1)

    def logged(self):
        entry = {"list": self.object_list.address, "op": self.op, "ts": self.ts}
        if self.object_id is not None:
            entry["id"] = self.object_id
        if self.op == "put":
            entry.update(data=self.data, acl=self.acl, hash=self.digest)
            if not self.write_acl:
                entry["acl_file"] = False
            # Their names, for recovery to remove what the dead process left.
            entry["temps"] = [os.path.basename(temp) for temp, _final in self.temps]
        elif self.op == "file":
            # Names only: the temp file lies in the list's container, the kept one beside it.
            entry["from"] = os.path.basename(self.temps[0][0]) if self.temps else None
            entry["kept"] = os.path.basename(self.kept) if self.kept else None
        return entry

    def journal_line(self):
        line = {"ts": self.ts, "op": "delete" if self.op == "forget" else self.op}
        if self.object_id is not None:
            line["id"] = self.object_id
        if self.op == "put":
            line["hash"] = self.digest
        return line


class Commit:
    """The writes of one request or batch; use as a context manager."""

    def __init__(self, log):
        self.log = log
        self.ops = []
        self.lists = []  # FileLists joined, in order (held until the commit is applied)
        self.created_folders = []  # container folders made for new objects (undone on abort)
        self.after_commit = []  # callbacks once durable and unlocked (errors are logged)
        self.after_undo = []  # callbacks when undone (in reverse order)
        self.aborted = False
        self._holds = []  # what listing.py's hold() gave, one per list

    # -- for listing.py -------------------------------------------------

    def join(self, object_list, hold):
        """Hold ``object_list`` for the rest of the commit; ``hold()`` locks it
        and returns its hold (listing.py's _Hold)."""
        if object_list not in self.lists:
            self._holds.append(hold(wait_briefly=bool(self.lists)))
            self.lists.append(object_list)

    def savepoint(self):
        return (
            len(self.ops),
            len(self.created_folders),
            len(self.after_commit),
            len(self.after_undo),
        )

    def rollback_to(self, savepoint):
        """Forget the writes made since ``savepoint`` (a failed sub-request)."""
        op_count, folder_count, commit_count, undo_count = savepoint
        _run_all(reversed(self.after_undo[undo_count:]))
        del self.after_undo[undo_count:], self.after_commit[commit_count:]
        del self.ops[op_count:]
        for folder in reversed(self.created_folders[folder_count:]):
            _remove_tree_we_made(folder)
        del self.created_folders[folder_count:]
        for object_list in self.lists:
            object_list._rebuild_pending(
                self, [op for op in self.ops if op.object_list is object_list]
            )

    def abort(self):
        """Undo everything at the end instead of committing (a batch that failed)."""
        self.aborted = True

    # -- the context ------------------------------------------------------

    def __enter__(self):
        _current.commit = self
        if self.log is not None:
            self.log.began(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        _current.commit = None
        try:
            if exc_type is None and not self.aborted:
                self._commit()
            else:
                self._undo()
        finally:
            for hold in reversed(self._holds):
                hold.leave()  # (those left already are skipped)
            if self.log is not None:
                self.log.ended(self)
        _run_all(self.after_commit)  # emptied by _undo when undone
        return False

    def _undo(self):
        for op in self.ops:
            for temp, _final in op.temps:
                remove_quietly(temp)
        for folder in reversed(self.created_folders):
            _remove_tree_we_made(folder)
        _run_all(reversed(self.after_undo))
        self.after_commit = []

    def _commit(self):
        if not self.ops:
            return
        if self.log is None:
            self._commit_without_log()
            return
        try:
            _date_file_ops(self.ops)
            for op in self.ops:
                op.object_list._stage_op(op, durable=False)
            earlier = [ticket for hold in self._holds for ticket in hold.earlier]
            ticket = self.log.write(self._log_line(), after=earlier)
            for hold in self._holds:
                hold.hand_over(self, ticket, self._ops_of(hold.object_list))
            self.log.wait_durable(ticket)
        except BaseException as error:
            self._undo()
            _raise_storage_error(error)
        applied = False
        try:
            applied = self._apply(durable_files=False)
        finally:
            self.log.done(ticket.segment, applied)

    def _commit_without_log(self):
        try:
            _date_file_ops(self.ops)
            for op in self.ops:
                op.object_list._stage_op(op, durable=True)
        except BaseException as error:
            self._undo()
            _raise_storage_error(error)
        self._apply(durable_files=True)

    def _ops_of(self, object_list):
        return [op for op in self.ops if op.object_list is object_list]

    def _log_line(self):
        ops = [op.logged() for op in self.ops]
        return (json.dumps({"ops": ops}, separators=(",", ":"), ensure_ascii=False) + "\n").encode()

    def _apply(self, durable_files):
        """Step 4: files, journals, indexes, list by list, each in its turn.  The
        commit is durable already (or, without a log, each list is made durable
        in turn).  False if a list could not be written: its log must then be
        kept for recovery."""
        applied = True
        for hold in self._holds:
            ops = self._ops_of(hold.object_list)
            if not ops:
                continue
            hold.wait_turn()
            try:
                # What the list does once unlocked (remove a trashed folder) goes first.
                self.after_commit[:0] = hold.object_list._apply_ops(ops, durable=durable_files)
            except (OSError, StorageError):
                # Durable in the log: answered as done, completed by the next recovery.
                logger.exception("%s: a committed write failed", hold.object_list.folder)
                applied = False
            finally:
                hold.leave(indexed=True)
        return applied


class CommitLog:
    """This process's commit log (one per store), with group commit."""

    def __init__(self, root, *, fsync=True, clock=None):
        self.root = root
        self.folder = os.path.join(root, COMMITS_FOLDER)
        self.fsync = fsync
        self.clock = clock
        # Two conditions of one lock: a line is durable (every waiter may
        # be), and a segment has no commit in flight (only a checkpoint or
        # close waits for it: waking every committer at each commit's end
        # would cost each a thread switch).
        self._guard = threading.Condition()
        self._idle = threading.Condition(self._guard)
        self._segment = None
        self._in_flight = {}  # commit -> the clock when it began: its writes' lowest ts
        self._flight_guard = threading.Lock()
        self.on_settled = []  # callables told when a commit ended (push: hub.py)

    # -- commits in flight (push streams keep their order with this) ----------

    def began(self, commit):
        if self.clock is not None:
            with self._flight_guard:
                self._in_flight[commit] = self.clock()

    def ended(self, commit):
        with self._flight_guard:
            if self._in_flight.pop(commit, None) is None:
                return
        for listener in self.on_settled:
            try:
                listener()
            except Exception:
                logger.exception("a listener of ended commits failed")

    def oldest_in_flight(self):
        """The lowest timestamp a commit still in flight may give (a client-forced
        past one aside), or None when none is in flight."""
        with self._flight_guard:
            return min(self._in_flight.values(), default=None)

    def write(self, line, after=()):
        """Append ``line`` to the log, not yet durable; returns its ticket for
        :meth:`wait_durable` (and, through it, for :meth:`done`).

        ``after``: the tickets of commits whose writes this one may have read
        before they were durable.  If one of them was cut off the log (its
        fsync failed), this commit fails too: it may hold what they wrote.
        """
        with self._guard:
            check_injected_fault()
            for earlier in after:
                if earlier.cut:
                    raise OSError(earlier.failure, os.strerror(earlier.failure))
            segment = self._segment or self._open_segment()
            start = segment.written
            try:
                _append_to(segment.path, line)
            except OSError:
                os.truncate(segment.path, start)  # no half line for recovery to find
                raise
            segment.written += len(line)
            segment.in_flight += 1
            ticket = _Ticket(segment, segment.written)
            segment.unsynced.append(ticket)
            return ticket

    def wait_durable(self, ticket):
        """Return once the line of ``ticket`` is durable, with every line written
        so far: one thread syncs for all of them (group commit).  A failed fsync
        cuts the log back to its last good sync and fails every line it cut."""
        segment = ticket.segment
        with self._guard:
            try:
                while not ticket.durable:
                    if ticket.cut:
                        raise OSError(ticket.failure, os.strerror(ticket.failure))
                    if segment.syncing:
                        self._guard.wait()
                    else:
                        self._sync(segment)
            except BaseException:
                segment.in_flight -= 1  # (done() is never called for it)
                self._idle.notify_all()
                raise

    def _sync(self, segment):
        """fsync ``segment`` up to what is written now (guard held, released meanwhile)."""
        segment.syncing, target = True, segment.written
        self._guard.release()
        try:
            if self.fsync:
                os.fsync(segment.fd)
        except OSError as error:
            self._guard.acquire()
            # Nothing after the last good sync may be replayed: cut it off,
            # and fail every commit whose line was in it (those written
            # during this fsync too: the cut removed them).
            os.truncate(segment.path, segment.synced)
            for cut in segment.unsynced:
                cut.cut, cut.failure = True, error.errno
            segment.unsynced, segment.written = [], segment.synced
        else:
            self._guard.acquire()
            segment.synced = max(segment.synced, target)
            waiting = []
            for ticket in segment.unsynced:
                if ticket.end <= segment.synced:
                    ticket.durable = True
                else:
                    waiting.append(ticket)
            segment.unsynced = waiting
        finally:
            segment.syncing = False
            self._guard.notify_all()

    def done(self, segment, applied=True):
        """The commit of ``segment`` is applied (or could not be: the log is then
        kept for the next recovery); checkpoint when the log is long."""
        with self._guard:
            segment.keep = segment.keep or not applied
            segment.in_flight -= 1
            if not segment.in_flight:
                self._idle.notify_all()
            if segment is not self._segment or segment.written < CHECKPOINT_BYTES:
                return
            self._segment = None  # later commits go to a new log
            while segment.in_flight:
                self._idle.wait()
        self._checkpoint(segment)

    def close(self):
        """Checkpoint the current log (a clean stop leaves no log behind)."""
        with self._guard:
            segment, self._segment = self._segment, None
            while segment is not None and segment.in_flight:
                self._idle.wait()
        if segment is not None:
            self._checkpoint(segment)
            try:
                os.rmdir(self.folder)  # unless other processes' logs are there
            except OSError:
                pass

    def _open_segment(self):
        try:
            return self._new_segment()
        except FileNotFoundError:
            return self._new_segment()  # another process removed the empty folder meanwhile

    def _new_segment(self):
        try:
            os.mkdir(self.folder, 0o700)
            if self.fsync:
                fsync_folder(self.root)
        except FileExistsError:
            pass
        # The log is locked (ours while we live: recovery leaves it alone)
        # before it gets the name recovery looks for.  The descriptor kept is
        # read-only (fsync works on it), so that an open log never stops the
        # file system from being remounted read-only; lines are appended
        # through a descriptor of their own.
        name = uuid.uuid4().hex
        new = os.path.join(self.folder, f".new-{name}")
        os.close(os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        fd = os.open(new, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = os.path.join(self.folder, name + LOG_SUFFIX)
        os.rename(new, path)
        if self.fsync:
            fsync_folder(self.folder)  # the log's name survives a power cut
        self._segment = _Segment(path, fd)
        return self._segment

    def _checkpoint(self, segment):
        if segment.keep or not os.path.exists(segment.path):  # kept, or its folder removed
            os.close(segment.fd)  # unlocked: the next recovery finishes its commits
            return
        try:
            if self.fsync:
                sync_file_system(self.root)  # every file the log's commits wrote
            os.unlink(segment.path)
            if self.fsync:
                fsync_folder(self.folder)
        except OSError:
            logger.exception("could not checkpoint %s; recovery will replay it", segment.path)
        finally:
            os.close(segment.fd)


class _Segment:
    __slots__ = ("path", "fd", "written", "synced", "syncing", "in_flight", "unsynced", "keep")

    def __init__(self, path, fd):
        self.path, self.fd = path, fd
        self.written = self.synced = 0
        self.syncing = False
        self.in_flight = 0
        self.unsynced = []  # tickets of the lines written since the last good sync
        self.keep = False  # a commit could not be applied: recovery must see this log


class _Ticket:
    """One commit's line in a log: where it ends, and what became of it."""

    __slots__ = ("segment", "end", "durable", "cut", "failure")

    def __init__(self, segment, end):
        self.segment, self.end = segment, end
        self.durable = self.cut = False
        self.failure = 0  # the errno of the fsync that cut it


# -- recovery ---------------------------------------------------------------------


def recover(root, list_at):
    """Replay the logs of dead processes into the files, then delete them.

    ``list_at(address)`` returns the FileList of a log line's ``list``.
    Returns the number of writes the files or journals missed (most are
    found done already).
    """
    folder = os.path.join(root, COMMITS_FOLDER)
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(LOG_SUFFIX))
    except FileNotFoundError:
        return 0
    replayed = 0
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another process recovered it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's log
            replayed += _replay(path, list_at)
            sync_file_system(root)
            remove_quietly(path)
        finally:
            os.close(fd)
    return replayed


def _replay(path, list_at):
    with open(path, "rb") as f:
        content = f.read()
    by_list = {}  # folder -> (FileList, its ops in log order), lists in order of first write
    # A last line without its newline was never synced: never committed.
    for line in content[: content.rfind(b"\n") + 1].splitlines():
        try:
            ops = json.loads(line)["ops"]
        except (ValueError, KeyError, TypeError):
            logger.error("%s: a commit line that is not one was skipped", path)
            continue
        for op in ops:
            object_list = list_at(op.get("list"))
            if object_list is not None:
                by_list.setdefault(object_list.folder, (object_list, []))[1].append(op)
    replayed = 0
    # A container's list comes before the lists inside it: its folder exists first.
    for object_list, ops in by_list.values():
        try:
            replayed += object_list.replay(ops)
        except ParentNotFound:
            pass  # its container was deleted by a later commit
    if replayed:
        logger.warning("%s: %d committed write(s) completed in the files", path, replayed)
    return replayed


# -- helpers ----------------------------------------------------------------------

_libc = None


def sync_file_system(path):
    """syncfs(2) the file system holding ``path`` (sync(2) where it is missing)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs  # noqa: B018 - probe
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)


def _date_file_ops(ops):
    """A file op takes the latest timestamp of its list's writes in the commit:
    recovery then knows it superseded by any later write of its object."""
    latest = {}
    for op in ops:
        if op.op != "file":
            latest[id(op.object_list)] = max(latest.get(id(op.object_list), 0), op.ts)
    for op in ops:
        if op.op == "file":
            op.ts = latest.get(id(op.object_list)) or op.object_list._current_timestamp() or 0


def _run_all(callbacks):
    for callback in list(callbacks):
        try:
            callback()
        except Exception:
            logger.exception("a callback failed after a commit or its undo")


def _append_to(path, content):
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    try:
        # Reading the last byte first, as the journal does: fusefat (FAT in
        # user space) refuses an append to a file not read since it was opened.
        size = os.fstat(fd).st_size
        if size:
            os.pread(fd, 1, size - 1)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove_tree_we_made(folder):
    """Remove a container folder an aborted commit made (with the lists' lock
    files inside it): it never held an object."""
    for current, folders, files in os.walk(folder, topdown=False):
        for name in files:
            remove_quietly(os.path.join(current, name))
        for name in folders:
            try:
                os.rmdir(os.path.join(current, name))
            except OSError:
                pass
    try:
        os.rmdir(folder)
    except OSError:
        pass


def _raise_storage_error(error):
    if isinstance(error, FileNotFoundError):
        raise ParentNotFound(str(error)) from None  # a container deleted meanwhile
    if isinstance(error, OSError):
        raise_if_disk_refused(error)
    raise error

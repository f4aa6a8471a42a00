"""Files attached to the objects of a list: ``<id>.attachment`` beside ``<id>.json``.

The public storage interface for plugins that keep a file per object (the
attachment plugin; docs/plugins.md, "Attached files").  Everything that needs
disk space happens before the list's state changes: an upload streams into a
``.tmp-upload-`` file, and the file it replaces gets a second name
(``.tmp-old-``: a hard link, or a copy where the file system has none).  What
then changes the folder is renames only, so a refused record write can be
undone without space, and a refusal of the disk (ENOSPC, EDQUOT, EFBIG,
EROFS) is :class:`~kintofs.fsstore.base.StorageFull` with no temp file left.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .atomic import (
    check_injected_fault,
    fsync_folder,
    link_or_copy,
    raise_if_disk_refused,
    remove_quietly,
)
from .layout import OLD_PREFIX, UPLOAD_PREFIX, attachment_path, kept_attachment_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType
    from typing import BinaryIO

    from .listing import FileList

logger = logging.getLogger(__name__)


@contextmanager
def _disk_refusals_as_storage_full() -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise_if_disk_refused(error)
        raise


class AttachedFiles:
    """The attached files of the objects of one list.

    ``keep_old_versions``: a replaced or removed file is kept as
    ``<id>.<sha256>.attachment`` instead of deleted (kinto-attachment's
    ``keep_old_files``).  :meth:`put`, :meth:`remove` and :meth:`drop` are
    for a caller that holds the list's lock (in its transaction).
    """

    def __init__(self, object_list: FileList, *, keep_old_versions: bool = False) -> None:
        self.folder = object_list.folder
        self.fsync = object_list.fsync
        self.keep_old_versions = keep_old_versions

    def path(self, object_id: str) -> str | None:
        """The attached file of ``object_id``, to read, or None when it has none."""
        target = attachment_path(self.folder, object_id)
        return target if os.path.isfile(target) else None

    def stage(self, max_size: int = 0) -> StagedFile:
        """A new file to stream an upload into, before the list is locked.

        It lies in the folder that holds the list (the collection's, for
        records): the same file system as its target, and deleted with an
        upload in progress when that container is deleted.
        """
        return StagedFile(os.path.dirname(self.folder), max_size, fsync=self.fsync)

    def put(self, object_id: str, staged: StagedFile) -> PendingChange:
        """Make ``staged`` the file of ``object_id``, undoable until committed.

        On an error nothing changed, and the staged file is gone.
        """
        target = attachment_path(self.folder, object_id)
        with _disk_refusals_as_storage_full():
            content = staged.complete()
            backup: str | None = None
            try:
                backup = self._second_name_of(target)
                os.replace(content, target)
                change = PendingChange(target, backup, created=True, keep=self._keeper(object_id))
            except BaseException:
                remove_quietly(content)
                if backup is not None:
                    remove_quietly(backup)
                raise
            self._synced_or_undone(change)
        return change

    def remove(self, object_id: str) -> PendingChange:
        """Remove the file of ``object_id`` (if any), undoable until committed."""
        target = attachment_path(self.folder, object_id)
        if not os.path.exists(target):
            return PendingChange(target, None, created=False)
        backup = self._backup_name()
        with _disk_refusals_as_storage_full():
            os.replace(target, backup)  # a rename: no space, no hard link needed
            change = PendingChange(target, backup, created=False, keep=self._keeper(object_id))
            self._synced_or_undone(change)
        return change

    def drop(self, object_id: str) -> None:
        """The file of a deleted object goes (or is kept as an old version), for good."""
        self.remove(object_id).commit()

    def _second_name_of(self, target: str) -> str | None:
        """A ``.tmp-old-`` name for the current file, or None when there is none."""
        if not os.path.exists(target):
            return None
        backup = self._backup_name()
        link_or_copy(target, backup, fsync=self.fsync)
        return backup

    def _backup_name(self) -> str:
        return os.path.join(self.folder, f"{OLD_PREFIX}{uuid.uuid4().hex}")

    def _keeper(self, object_id: str) -> Callable[[str], str] | None:
        """Where a previous file of ``object_id`` is kept (from its content), if it is."""
        if not self.keep_old_versions:
            return None
        folder = self.folder
        return lambda content: kept_attachment_path(folder, object_id, _sha256_of(content))

    def _synced_or_undone(self, change: PendingChange) -> None:
        """Make the renames durable; a caller that gets an error has nothing to undo."""
        try:
            if self.fsync:
                fsync_folder(self.folder)
        except BaseException:
            change.undo()
            raise


class PendingChange:
    """A file put in place or removed, its previous version kept aside.

    Used as a context manager around the record write that goes with it:
    an exception undoes the change (renames only: it needs no space), a
    normal exit commits it.  Either is final; a second call does nothing.
    ``created``: the change made ``target``, so an undo with no previous
    file deletes it.  ``keep(backup)`` names where the previous version is
    kept on commit (None: it is deleted).
    """

    def __init__(
        self,
        target: str,
        backup: str | None,
        *,
        created: bool,
        keep: Callable[[str], str] | None = None,
    ) -> None:
        self.target, self.backup, self.created, self.keep = target, backup, created, keep
        self.done = False

    def __enter__(self) -> PendingChange:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.undo()

    def undo(self) -> None:
        """Put the previous file back (or none, if there was none)."""
        if self.done:
            return
        self.done = True
        try:
            if self.backup is not None:
                os.replace(self.backup, self.target)
            elif self.created:
                remove_quietly(self.target)
        except OSError:
            logger.error("could not put back %s after a refused write", self.target, exc_info=True)

    def commit(self) -> None:
        """Forget the previous file, or keep it as an old version."""
        if self.done:
            return
        self.done = True
        if self.backup is None:
            return
        # The record is written already: a failure here must not fail the request.
        try:
            if self.keep is not None:
                os.replace(self.backup, self.keep(self.backup))
            else:
                remove_quietly(self.backup)
        except OSError:
            logger.error("could not keep or delete %s", self.backup, exc_info=True)


class StagedFile:
    """An upload on its way in: a ``.tmp-upload-`` file, hashed and counted.

    :meth:`write` takes the bytes as they arrive (a sink for a streaming
    reader).  Past ``max_size`` (0: no limit) nothing more is written and the
    file is dropped, but the bytes are still counted, so that an error
    message can say how large the upload was.
    """

    def __init__(self, folder: str, max_size: int, *, fsync: bool = True) -> None:
        self.max_size, self.fsync = max_size, fsync
        self.size, self.too_large = 0, False
        self._digest = hashlib.sha256()
        with _disk_refusals_as_storage_full():
            check_injected_fault()
            fd, path = tempfile.mkstemp(prefix=UPLOAD_PREFIX, dir=folder)
        self.path: str | None = path
        self._out = os.fdopen(fd, "wb")

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of what was written."""
        return self._digest.hexdigest()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.too_large:
            return
        if self.max_size and self.size > self.max_size:
            self.too_large = True
            self.discard()
            return
        self._digest.update(data)
        with self._discarded_on_error():
            check_injected_fault()
            self._out.write(data)

    def copy_from(self, stream: BinaryIO, chunk_bytes: int = 1 << 16) -> None:
        """Write everything ``stream`` (a binary file object) yields."""
        for chunk in iter(lambda: stream.read(chunk_bytes), b""):
            self.write(chunk)

    def complete(self) -> str:
        """Flush the file to disk and close it; its path."""
        if self.path is None:
            raise ValueError("the staged file was discarded")
        with self._discarded_on_error():
            self._out.flush()
            if self.fsync:
                os.fsync(self._out.fileno())
            self._out.close()
        path, self.path = self.path, None  # it is the caller's now
        return path

    def discard(self) -> None:
        """Delete the file (nothing happens if it was discarded or completed)."""
        if self.path is not None:
            remove_quietly(self.path)
            self.path = None
        try:
            self._out.close()
        except OSError:
            pass  # the buffer could not be flushed: the file is gone already

    @contextmanager
    def _discarded_on_error(self) -> Iterator[None]:
        try:
            with _disk_refusals_as_storage_full():
                yield
        except BaseException:
            self.discard()
            raise


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

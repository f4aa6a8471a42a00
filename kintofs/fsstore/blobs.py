"""Files attached to the objects of a list: ``<id>.attachment`` beside ``<id>.json``.

The public storage interface for plugins that keep a file per object (the
attachment plugin; docs/plugins.md, "Attached files").  Everything that needs
disk space happens before the commit: an upload streams into a
``.tmp-upload-`` file, made durable before the commit point.  The commit
(fsstore/commit.py) then logs the file's change with the object's write, and
makes it by renames only, which need no space and no hard links (FAT works);
recovery completes it after a crash.  A refusal of the disk (ENOSPC, EDQUOT,
EFBIG, EROFS) is :class:`~kintofs.fsstore.base.StorageFull` with no temp
file left.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .atomic import check_injected_fault, raise_if_disk_refused, remove_quietly
from .layout import UPLOAD_PREFIX, attachment_path

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO

    from .listing import FileList, Writer


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
    ``keep_old_files``).  :meth:`put` and :meth:`remove` take the writer of a
    transaction on the list: the file changes with the commit of the
    object's write, or not at all (recovery completes it after a crash).
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

    def put(self, writer: Writer, object_id: str, staged: StagedFile) -> None:
        """Make ``staged`` the file of ``object_id`` with the writer's commit.

        On an error, or if the commit is undone, the staged file is deleted.
        """
        with _disk_refusals_as_storage_full():
            content = staged.complete()
        writer.put_file(object_id, content, keep_old=self.keep_old_versions)

    def remove(self, writer: Writer, object_id: str) -> None:
        """Remove the file of ``object_id`` (if it has one) with the writer's commit."""
        if os.path.exists(attachment_path(self.folder, object_id)):
            writer.remove_file(object_id, keep_old=self.keep_old_versions)


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

"""Index snapshots: what a big list's last load knew, so the next load reads few files.

Loading a list reads its whole journal and every object's two files: about
a second per 10,000 records.  A list with many objects (``MIN_OBJECTS``)
therefore leaves ``_index.snapshot`` in its folder, written at the end of a
load that had to read that many files, after a compaction and when the
daemon stops.  It holds two caches, each checked before it is believed:

* **the journal, parsed** up to ``offset`` bytes: the latest line of each
  id, the line count, the list timestamp.  Believed while the journal's first
  ``offset`` bytes have the hash it records: a journal only grows by
  appends, and whatever rewrites it (a compaction, a restore, an editor)
  changes those bytes.  The lines after them are read as usual.
* **objects**: the data and ACL of each object whose files were known to
  hold exactly that, with the ``stat()`` of both files (inode, size, mtime,
  ctime; see :func:`signature`).  Believed object by object while ``stat()``
  says the same: every write changes ctime, in place or by a rename, and no
  tool can set ctime back.  Any other object's files are read.

So it is never the only copy of anything: deleting it costs one slow load,
which writes it again.  Its first line holds the format version and the
CRC-32 of the rest, so a damaged file, or one changed by a ``sed -i`` over
the data directory, is ignored (and replaced by the next load).
"""

import hashlib
import json
import logging
import os
import zlib

from .atomic import write_bytes
from .base import StorageError, Stored
from .journal import is_timestamp, last_written, latest_lines, parse

logger = logging.getLogger(__name__)

FORMAT = 1

# Lists with fewer objects than this load fast enough from their files.
MIN_OBJECTS = 1000


def signature(data_path, acl_path, dir_fd=None):
    """What stat() says of an object's two files: ``"<inode>:<size>:<mtime>:<ctime>"``
    of each (``-`` for a missing ACL sidecar) in one string; None when the
    data file is missing or either cannot be looked at.  Any write to either
    changes it, and no tool sets ctime back (`cp -a`, `rsync -a` and `tar -x`
    set only mtime).  With ``dir_fd``, the paths are relative to that folder
    (a stat that skips the path walk: about 40% less time per stat)."""
    found = []
    for path in (data_path, acl_path):
        try:
            status = os.stat(path, dir_fd=dir_fd)
        except FileNotFoundError:
            if not found:
                return None
            found.append("-")
            continue
        except OSError:
            return None
        found.append(f"{status.st_ino}:{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}")
    return " ".join(found)


def newest_ctime(found):
    """The latest ctime (ns) in a :func:`signature`."""
    return max(int(part.rpartition(":")[2]) for part in found.split() if part != "-")


class Snapshot:
    """A checked snapshot (:func:`read`): the journal parsed to ``offset``, and the objects."""

    __slots__ = ("offset", "latest", "line_count", "timestamp", "written", "objects")

    def __init__(self, offset, latest, line_count, timestamp, written, objects):
        self.offset = offset  # journal bytes it stands for
        self.latest = latest  # id -> its latest journal line in them (an entry)
        self.line_count, self.timestamp, self.written = line_count, timestamp, written
        self.objects = objects  # id -> (signature, Stored, its memory cost)


def read(path, journal_bytes, cost_model):
    """The snapshot at ``path`` if it is whole, was written with the same
    ``cost_model`` (see :func:`write`) and matches the journal's bytes
    ``journal_bytes``; else None (missing, damaged, older format, or made for
    a journal that has been rewritten since)."""
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.warning("%s: index snapshot unreadable, ignored: %s", path, error)
        return None
    try:
        header_line, _, body = content.partition(b"\n")
        header = json.loads(header_line)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            return None
        if header.get("cost_model") != cost_model:
            return None
        if header.get("crc32") != zlib.crc32(body):
            logger.warning("%s: index snapshot damaged or edited, ignored", path)
            return None
        offset = header["journal_bytes"]
        if (
            not isinstance(offset, int)
            or offset > len(journal_bytes)
            or header["journal_hash"] != _journal_hash(journal_bytes[:offset])
        ):
            return None  # the journal was rewritten since: a full load writes a new one
        document = json.loads(body)
        latest = {
            object_id: {"ts": ts, "op": op, "id": object_id, **({"hash": digest} if digest else {})}
            for object_id, (op, ts, digest) in document["latest"].items()
        }
        acls = document["acls"]
        objects = {
            object_id: (found, Stored(data, acls[acl]), cost)
            for object_id, (found, data, acl, cost) in document["objects"].items()
        }
        if not _well_formed(latest, acls, objects):
            logger.warning("%s: index snapshot with wrong values, ignored", path)
            return None
        return Snapshot(
            offset,
            latest,
            document["line_count"],
            document["timestamp"],
            document["written"],
            objects,
        )
    except (ValueError, KeyError, TypeError, IndexError) as error:
        logger.warning("%s: index snapshot not readable, ignored: %s", path, error)
        return None


def write(path, journal_bytes, objects, cost_model):
    """Save a snapshot of the journal's complete lines in ``journal_bytes``
    and of ``objects`` (id -> (signature, Stored, cost), each vouched for by
    the caller; ``cost_model``: what the costs depend on, the constants of
    the memory estimate).  Objects that disagree with their journal line are
    left out.
    Returns the journal bytes it stands for, None if it could not be written
    (best effort: without a snapshot, a load is only slower)."""
    entries, offset = parse(journal_bytes)
    latest, timestamp = latest_lines(entries)
    acls, acl_index, kept = [], {}, {}
    for object_id, (found, stored, cost) in objects.items():
        entry = latest.get(object_id)
        if entry is None or entry["op"] != "put" or entry["ts"] != stored.data.get("last_modified"):
            continue
        key = repr(stored.acl)  # equal ACLs shared (one written in another order kept twice)
        if key not in acl_index:
            acl_index[key] = len(acls)
            acls.append(stored.acl)
        kept[object_id] = [found, stored.data, acl_index[key], cost]
    body = json.dumps(
        {
            "line_count": len(entries),
            "timestamp": timestamp,
            "written": last_written(entries),
            "latest": {i: [e["op"], e["ts"], e.get("hash")] for i, e in latest.items()},
            "acls": acls,
            "objects": kept,
        },
        separators=(",", ":"),
    ).encode()
    header = {
        "format": FORMAT,
        "cost_model": cost_model,
        "crc32": zlib.crc32(body),
        "journal_bytes": offset,
        "journal_hash": _journal_hash(journal_bytes[:offset]),
    }
    try:
        # No fsync: a snapshot lost in a crash, or torn, is only ignored.
        write_bytes(path, json.dumps(header).encode() + b"\n" + body, fsync=False)
    except (OSError, StorageError) as error:
        logger.warning("%s: index snapshot not written: %s", path, error)
        return None
    return offset


def _well_formed(latest, acls, objects):
    """What the index takes from a snapshot has the types the index needs (a
    file with a right CRC can still have been written by someone else)."""
    return (
        all(e["op"] in ("put", "delete") and is_timestamp(e["ts"]) for e in latest.values())
        and all(isinstance(acl, dict) for acl in acls)
        and all(
            isinstance(found, str) and isinstance(stored.data, dict) and is_timestamp(cost)
            for found, stored, cost in objects.values()
        )
    )


def _journal_hash(prefix):
    return hashlib.blake2b(prefix, digest_size=16).hexdigest()

"""The two ends of a copy: this data directory, and a server over the Kinto HTTP API.

Both read and write objects as ``{"data": ..., "permissions": ...}`` (a
tombstone is ``{"data": {"id", "last_modified", "deleted": True}}``) in
lists named by a path of ``(kind, id)`` pairs and a kind, as the store names
them.  :class:`LocalSide` goes through the store's transactions (locks,
commit log, journals: what a running daemon reads as another process's
writes, as ``kintofs account`` does); :class:`RemoteSide` through the
kinto-http client, writes in batches of the server's ``batch_max_requests``.
"""

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import kinto_http
import requests

from ..acl import normalize_acl
from ..fsstore import blobs, tombstone

# How many local writes one commit holds (one fsync each; a kill loses at most these).
LOCAL_WRITES_PER_COMMIT = 500

# Batches in flight at once: Kinto's waitress serves 4 requests at a time by default.
PARALLEL_BATCHES = 4

URL_PARTS = {
    "bucket": "buckets",
    "group": "groups",
    "collection": "collections",
    "record": "records",
}


class SideError(Exception):
    """A write or read the other end refused; the message says which and why."""


def attachment_of(data):
    found = data.get("attachment")
    return found if isinstance(found, dict) else None


class LocalSide:
    name = "kintofs"
    own_principal = None
    copies_files = True

    def __init__(self, store, settings):
        self.store, self.settings = store, settings

    def _list(self, path, kind):
        return self.store.list(path, kind)

    def _files(self, path):
        keep = self.settings.get("attachment_keep_old_files", False)
        return blobs.AttachedFiles(self._list(path, "record"), keep_old_versions=keep)

    def exists(self, path):
        return self.store.exists(path)

    def timestamp(self, path, kind):
        return self._list(path, kind).timestamp()

    def changed(self, path, kind, since):
        """``{id: data}`` changed after ``since`` (tombstones included); every live one for None."""
        found = self._list(path, kind)
        if since is None:
            return {object_id: stored.data for object_id, stored in found.objects().items()}
        return {
            object_id: stored.data if stored is not None else tombstone(object_id, ts)
            for object_id, stored, ts in found.newest_first(since=since)
        }

    def permissions(self, path, kind, ids):
        found = self._list(path, kind)
        result = {}
        for object_id in ids:
            stored = found.get(object_id)
            result[object_id] = stored.acl if stored is not None else None
        return result

    def attachment_file(self, path, object_id, metadata):
        """A readable path of the file attached to a record, or None."""
        return self._files(path).path(object_id)

    def write(self, path, kind, changes, source, current):
        """Apply ``changes`` (``[(id, object)]``, a tombstone to delete); returns failures.

        ``source`` gives the attached files of records (``fetch_attachment``).
        ``current`` (this side's version of the ids the plan compared) is not
        needed here: the store answers for every id, compared or not, whether
        its file is already the one to keep (:meth:`_has_same_file`).
        """
        for start in range(0, len(changes), LOCAL_WRITES_PER_COMMIT):
            self._write_some(path, kind, changes[start : start + LOCAL_WRITES_PER_COMMIT], source)
        return []

    def _write_some(self, path, kind, changes, source):
        staged = {}
        files = self._files(path) if kind == "record" else None
        with tempfile.TemporaryDirectory(prefix="kintofs-mirror-") as downloads:
            # Files are fetched before the list is locked: writers wait for no download.
            for object_id, obj in changes:
                metadata = attachment_of(obj["data"]) if files else None
                if metadata and not self._has_same_file(path, files, object_id, metadata):
                    staged[object_id] = self._stage(files, source, path, obj["data"], downloads)
            with self._list(path, kind).transaction() as writer:
                for object_id, obj in changes:
                    self._write_one(writer, files, path, object_id, obj, staged.get(object_id))

    def _has_same_file(self, path, files, object_id, metadata):
        current = self.store.get(path, "record", object_id)
        old = attachment_of(current.data) if current else None
        same = bool(old) and old.get("hash") == metadata.get("hash")
        return same and files.path(object_id) is not None

    def _stage(self, files, source, path, data, downloads):
        downloaded = source.fetch_attachment(path, data, downloads)
        staged = files.stage()
        with open(downloaded, "rb") as f:
            staged.copy_from(f)
        return staged

    def _write_one(self, writer, files, path, object_id, obj, staged):
        data = obj["data"]
        if data.get("deleted"):
            if writer.get(object_id) is not None:
                if files:
                    files.remove(writer, object_id)
                writer.delete(object_id, requested_ts=data["last_modified"])
            return
        body = {key: value for key, value in data.items() if key != "last_modified"}
        metadata = attachment_of(body)
        if files is not None:
            if metadata:
                # kintofs serves a record's file at bucket/collection/record.
                ids = [parent_id for _, parent_id in path] + [object_id]
                body["attachment"] = {**metadata, "location": "/".join(ids)}
                if staged is not None:
                    files.put(writer, object_id, staged)
            else:
                files.remove(writer, object_id)
        acl = normalize_acl(obj.get("permissions") or {})
        writer.put(object_id, body, acl, requested_ts=data.get("last_modified"))

    def fetch_attachment(self, path, data, downloads):
        return self.attachment_file(path, data["id"], attachment_of(data))


class RemoteSide:
    """A Kinto server (or another kintofs) through kinto-http."""

    def __init__(self, url, auth, *, timeout=60):
        self.client = kinto_http.Client(server_url=url, auth=auth, retry=3, timeout=timeout)
        self.name = url
        try:
            info = self.client.server_info()
        except (kinto_http.KintoException, requests.RequestException, ValueError) as error:
            raise SideError(f"{url}: {error}") from None
        if not isinstance(info, dict) or "settings" not in info:
            raise SideError(f"{url} does not answer as a Kinto server (GET / has no settings)")
        self.batch_max_requests = info["settings"]["batch_max_requests"]
        self.own_principal = (info.get("user") or {}).get("id")
        if self.own_principal is None:
            raise SideError(f"{url} does not know these credentials (anonymous): use --auth")
        self.capabilities = info.get("capabilities", {})
        self.copies_files = "attachments" in self.capabilities

    # -- reading -------------------------------------------------------------

    def endpoint(self, path, kind, object_id=None):
        parts = [f"{URL_PARTS[k]}/{i}" for k, i in path] + [URL_PARTS[kind]]
        if object_id is not None:
            parts.append(object_id)
        return "/" + "/".join(parts)

    def exists(self, path):
        if not path:
            return True
        kind, object_id = path[-1]
        try:
            self.client.session.request("get", self.endpoint(path[:-1], kind, object_id))
        except kinto_http.KintoException as error:
            if getattr(error.response, "status_code", None) in (403, 404):
                return False
            raise
        return True

    def timestamp(self, path, kind):
        _, headers = self.client.session.request(
            "get", self.endpoint(path, kind), params={"_limit": "1"}
        )
        return int(headers["ETag"].strip('"'))

    def changed(self, path, kind, since):
        params = {} if since is None else {"_since": str(since)}
        ids = dict(path)
        where = {"bucket": ids.get("bucket"), "collection": ids.get("collection")}
        listing = {
            "bucket": lambda: self.client.get_buckets(**params),
            "group": lambda: self.client.get_groups(bucket=where["bucket"], **params),
            "collection": lambda: self.client.get_collections(bucket=where["bucket"], **params),
            "record": lambda: self.client.get_records(**where, **params),
        }[kind]
        try:
            found = listing()
        except kinto_http.KintoException as error:
            raise SideError(f"cannot list {self.endpoint(path, kind)}: {error}") from None
        return {data["id"]: data for data in found}

    def permissions(self, path, kind, ids):
        requests = [{"method": "GET", "path": self.endpoint(path, kind, i)} for i in ids]
        result = {}
        for object_id, response in zip(ids, self._batch(requests), strict=True):
            body = response["body"]
            result[object_id] = body.get("permissions", {}) if response["status"] == 200 else None
        return result

    def fetch_attachment(self, path, data, downloads):
        folder = os.path.join(downloads, data["id"])
        os.makedirs(folder)
        return self.client.download_attachment(data, filepath=os.path.join(folder, "file"))

    # -- writing -------------------------------------------------------------

    def write(self, path, kind, changes, source, current):
        """Apply ``changes``; returns ``[(id, message)]`` of the writes refused."""
        requests, uploads = [], []
        for object_id, obj in changes:
            data = obj["data"]
            url = self.endpoint(path, kind, object_id)
            if data.get("deleted"):
                query = f"?last_modified={data['last_modified']}"
                requests.append((object_id, {"method": "DELETE", "path": url + query}))
                continue
            body = dict(data)
            metadata = attachment_of(body) if kind == "record" else None
            theirs = attachment_of((current.get(object_id) or {}).get("data") or {})
            if metadata and self.copies_files:
                if theirs and theirs.get("hash") == metadata.get("hash"):
                    body["attachment"] = theirs  # same file: the server's metadata stays
                else:
                    uploads.append((object_id, obj, bool(current.get(object_id))))
                    continue
            put = {"method": "PUT", "path": url, "body": {"data": body}}
            put["body"]["permissions"] = obj.get("permissions") or {}
            requests.append((object_id, put))
        failures = []
        responses = self._batch([request for _, request in requests])
        for (object_id, request), response in zip(requests, responses, strict=True):
            status = response["status"]
            if status == 404 and request["method"] == "DELETE":
                continue  # gone already
            if not 200 <= status < 300:
                failures.append((object_id, f"{status} {json.dumps(response['body'])}"))
        for object_id, obj, existed in uploads:
            failure = self._upload(path, object_id, obj, existed, source)
            if failure:
                failures.append((object_id, failure))
        return failures

    def _upload(self, path, object_id, obj, existed, source):
        """A record with a new file: kinto-attachment's upload writes both."""
        data = {k: v for k, v in obj["data"].items() if k not in ("attachment", "id")}
        metadata = attachment_of(obj["data"])
        permissions = obj.get("permissions") or {}
        bucket, collection = path[0][1], path[1][1]
        local_file = source.attachment_file(path, object_id, metadata)
        if local_file is None:
            return "its attached file is missing on the source"
        try:
            if existed:
                # The upload merges (PATCH): a PUT first drops fields the source no longer has.
                url = self.endpoint(path, "record", object_id)
                self.client.session.request("put", url, data=data, permissions=permissions)
            with tempfile.TemporaryDirectory(prefix="kintofs-mirror-") as folder:
                named = os.path.join(folder, metadata.get("filename") or object_id)
                shutil.copyfile(local_file, named)  # the server takes the file's name
                self.client.add_attachment(
                    id=object_id,
                    filepath=named,
                    bucket=bucket,
                    collection=collection,
                    data=data,
                    permissions=permissions,
                    mimetype=metadata.get("mimetype"),
                )
        except kinto_http.KintoException as error:
            return str(error)
        return None

    def _batch(self, requests):
        """Every response, in order, sending ``batch_max_requests`` at a time,
        a few batches at once (a server handles each batch in one thread)."""
        size = self.batch_max_requests
        chunks = [requests[start : start + size] for start in range(0, len(requests), size)]
        with ThreadPoolExecutor(PARALLEL_BATCHES) as pool:
            answers = list(pool.map(self._send_batch, chunks))
        return [response for answer in answers for response in answer]

    def _send_batch(self, chunk):
        try:
            body, _ = self.client.session.request("post", "/batch", payload={"requests": chunk})
        except kinto_http.KintoException as error:
            raise SideError(f"batch refused: {error}") from None
        return body["responses"]

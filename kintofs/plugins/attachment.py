"""Attachment plugin: files attached to records (protocol section 18).

``POST`` (multipart upload) and ``DELETE`` on
``/v1/buckets/<bid>/collections/<cid>/records/<rid>/attachment``; the file is
served back at ``/v1/attachments/<bid>/<cid>/<rid>`` to readers of the record.

On disk the file is ``<rid>.attachment`` beside ``<rid>.json`` (ids hold no
dots, so no other object can own that name; the client's file name is only
metadata).  The files are the store's :class:`~kintofs.fsstore.blobs.AttachedFiles`
of the records list: an upload streams into a temp file in the collection's
folder, then is put in place under the list's lock together with the record
write (undone if that write is refused), so a record never names a file that
is not there.  Deleting a collection or bucket deletes the files with its
folder; deleting a record deletes its file (a change listener).  See
docs/storage.md.
"""

import json
import mimetypes
import os
import re

import bottle

from .. import __version__, acl
from ..config import ConfigError
from ..feed import IN_COMMIT
from ..fsstore import blobs
from ..web import errors
from ..web import request as req
from ..web.multipart import LengthReached, MultipartError, boundary_of, read_parts
from ..web.patching import shallow_merge
from ..web.resource import KINDS, ResourceView

INVALID_POSTED_DATA = 109  # Kinto's errno for a bad form

# Room for the form around the file: boundaries, part headers, small fields.
FORM_OVERHEAD_BYTES = 64 * 1024


def upload_limit(settings):
    """The largest upload body accepted: the file, the form fields, the multipart framing."""
    if not settings["attachment_max_size_bytes"]:
        return float("inf")
    return (
        settings["attachment_max_size_bytes"]
        + settings["max_request_body_bytes"]
        + FORM_OVERHEAD_BYTES
    )


# Kinto's per-extension overrides of the client's content type, before
# those of the attachment_mimetypes setting.
MIMETYPE_OVERRIDES = {"pem": "application/x-pem-file", "geojson": "application/geojson"}

# kinto-attachment's groups of extensions (utils.py), for attachment_extensions.
EXTENSION_GROUPS = {
    "documents": tuple("pdf rtf odf ods gnumeric abw doc docx xls xlsx".split()),
    "text": ("txt",),
    "images": tuple("jpg jpe jpeg png gif svg bmp tiff".split()),
    "audio": tuple("wav mp3 aac ogg oga flac".split()),
    "video": tuple("mpeg 3gp avi divx dvr flv mp4 wmv".split()),
    "data": tuple("csv ini json plist xml yaml yml".split()),
    "scripts": tuple("js php pl py rb sh".split()),
    "archives": tuple("gz bz2 zip tar tgz txz 7z".split()),
    "executables": tuple("so exe dll".split()),
}
EXTENSION_GROUPS["default"] = (
    EXTENSION_GROUPS["documents"]
    + EXTENSION_GROUPS["text"]
    + EXTENSION_GROUPS["images"]
    + EXTENSION_GROUPS["data"]
)
EXTENSION_GROUPS["any"] = ()  # adds nothing: only an empty set means "any"

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}$")

ROUTE = "/v1/buckets/<bucket>/collections/<collection>/records/<record>/attachment"
FILES_ROUTE = "/v1/attachments/<bucket>/<collection>/<record>"


def setup(service):
    rules = FileRules.from_settings(service.settings)
    service.add_capability(
        "attachments",
        lambda state: {
            "version": __version__,
            "description": "Add file attachments to records",
            "url": "https://github.com/Kinto/kinto-attachment/",
            "base_url": files_base_url(state),
        },
    )
    service.add_validator(refuse_metadata_change)
    # In the commit: the file goes with its record, or stays with it.
    service.feed.subscribe(lambda change: remove_file_of_deleted(service, change), IN_COMMIT)
    service.add_heartbeat("attachments", service.storage_check)  # the files are in the store

    def attachment(state, bucket, collection, record):
        view = record_view(state, bucket, collection)
        if state.method == "POST":
            return Upload(view, record, rules).run()
        if state.method == "DELETE":
            return remove(view, record)
        raise errors.method_not_allowed(["POST", "DELETE", "OPTIONS"])

    def attached_file(state, bucket, collection, record):
        return serve(record_view(state, bucket, collection), record)

    service.add_route(ROUTE, "ANY", attachment, preflight="POST,DELETE,OPTIONS")
    service.add_route(FILES_ROUTE, ["GET", "HEAD"], attached_file, preflight="GET,HEAD,OPTIONS")


def files_base_url(state):
    return state.settings["attachment_base_url"] or f"{state.base_url()}/v1/attachments/"


def record_view(state, bucket, collection):
    view = ResourceView(state, KINDS["record"], (("bucket", bucket), ("collection", collection)))
    view.check_parent_ids()
    return view


def attached_files(settings, records):
    """The files of the records list ``records`` (a store list)."""
    return blobs.AttachedFiles(records, keep_old_versions=settings["attachment_keep_old_files"])


class FileRules:
    """What an uploaded file may be called, and the types some names get."""

    def __init__(self, extensions, mimetypes):
        self.extensions = extensions  # lower-case, no dot; empty: any name
        self.mimetypes = mimetypes  # extension -> media type

    @classmethod
    def from_settings(cls, settings):
        return cls(
            resolve_extensions("+".join(settings["attachment_extensions"])),
            {**MIMETYPE_OVERRIDES, **parse_mimetypes(settings["attachment_mimetypes"])},
        )

    def allows(self, filename):
        return not self.extensions or _extension(filename) in self.extensions


def resolve_extensions(expression):
    """kinto-attachment's reading of ``"images+pdf"``: each ``+`` part is a
    group, or else extensions separated by spaces."""
    found = set()
    for part in expression.split("+"):
        if part in EXTENSION_GROUPS:
            found.update(EXTENSION_GROUPS[part])
        else:
            found.update(word.lower() for word in part.split())
    return found


def parse_mimetypes(text):
    """Kinto's ``.ext:type;.ext:type``, as {"ext": "type"}; a bad entry stops the daemon
    (Kinto would answer 500 to every upload)."""
    found = {}
    for entry in filter(None, (entry.strip() for entry in text.split(";"))):
        extension, _, mimetype = entry.partition(":")
        if not (extension.startswith(".") and len(extension) > 1 and _MEDIA_TYPE.match(mimetype)):
            raise ConfigError(
                f"attachment_mimetypes: {entry!r} is not .<extension>:<media type> "
                '(e.g. ".ftl:application/vnd.fluent;.db:application/vnd.sqlite3")',
                key="attachment_mimetypes",
            )
        found[extension[1:].lower()] = mimetype
    return found


def location_of(view, record_id):
    """The file's URL relative to the capability's ``base_url``."""
    return "/".join([*(object_id for _, object_id in view.parent), record_id])


# -- upload ---------------------------------------------------------------------


class Upload:
    """One ``POST .../attachment``: authorize, stream the form, write the record."""

    def __init__(self, view, record_id, rules):
        self.view, self.record_id, self.rules = view, record_id, rules
        self.state, self.settings = view.state, view.settings
        self.max_size = self.settings["attachment_max_size_bytes"]
        self.files = attached_files(self.settings, view.object_list())
        self.fields = {}
        self.part = None  # the "attachment" part's headers ...
        self.file = None  # ... and its content, a blobs.StagedFile

    def run(self):
        view = self.view
        view.require_parent_exists_for_write()
        self._authorize(view.get(self.record_id))
        view.check_object_id(self.record_id)
        try:
            self._read_form()
            metadata = self._metadata()
            data, permissions = self._form_envelope()
            return self._store(metadata, data, permissions)
        finally:
            if self.file is not None:
                self.file.discard()

    def _authorize(self, existing):
        """Write on the record, or create in the collection for a new one."""
        if existing is not None:
            self.view.authorizer.require("write", existing.acl)
        else:
            self.view.authorizer.require_create()

    # reading

    def _read_form(self):
        environ = self.state.environ
        boundary = boundary_of(environ.get("CONTENT_TYPE"))
        if boundary is None:
            raise errors.invalid_param(
                "header", "Content-Type", "Content-Type should be multipart/form-data"
            )
        limit = self._body_limit()
        length = self._declared_length(limit)
        stream = environ["wsgi.input"]
        if length is None and self.max_size and hasattr(stream, "maxlen"):
            stream.maxlen = 2 * limit + 1024  # cheroot's cap on one chunk, as in read_body
        try:
            read_parts(
                stream, boundary, length if length is not None else limit + 1, self._sink_for
            )
        except LengthReached:
            if length is None:  # a chunked body going on past the room we gave it
                raise errors.too_large(limit) from None
            raise errors.invalid_param("body", None, "Invalid multipart body: truncated") from None
        except MultipartError as error:
            raise errors.invalid_param("body", None, f"Invalid multipart body: {error}") from None
        except _TooLarge:
            raise errors.too_large(limit) from None
        except TimeoutError:
            raise errors.invalid_param(
                "body", None, "The request body was not sent in time"
            ) from None

    def _body_limit(self):
        return upload_limit(self.settings)

    def _declared_length(self, limit):
        """The Content-Length (None when chunked); 413 before reading if it is too much."""
        text = (self.state.environ.get("CONTENT_LENGTH") or "").strip()
        if not text:
            return None
        try:
            length = int(text)
        except ValueError:
            raise errors.invalid_param(
                "header", "Content-Length", "Invalid Content-Length"
            ) from None
        if length > limit:
            raise errors.too_large(limit)
        return length

    def _sink_for(self, part):
        if part.name == "attachment" and self.file is None and part.filename is not None:
            self.part, self.file = part, self.files.stage(self.max_size)
            return self.file
        if part.name == "attachment" and self.file is None:
            raise errors.invalid_param("body", None, "Filename is required.")
        if part.name in ("data", "permissions") and part.filename is None:
            sink = _FieldSink(self.settings["max_request_body_bytes"])
            self.fields[part.name] = sink
            return sink
        if part.name in ("data", "permissions"):
            raise _posted_data_error(
                f"body: {part.name!r} field should be passed as form data, not files"
            )
        raise _posted_data_error(f"body: {part.name!r} not in ('data', 'permissions')")

    # checking

    def _metadata(self):
        upload, part = self.file, self.part
        if upload is None or part is None:
            raise _posted_data_error("Attachment missing.")
        if not self.rules.allows(part.filename):
            raise errors.invalid_param("body", None, "File extension is not allowed.")
        if upload.too_large:
            raise errors.invalid_param(
                "body",
                None,
                f"File size ({upload.size} bytes) exceeds the limit ({self.max_size} bytes).",
            )
        return {
            "filename": part.filename,
            "hash": upload.sha256,
            "location": location_of(self.view, self.record_id),
            "mimetype": self._mimetype(part.content_type, _extension(part.filename)),
            "size": upload.size,
        }

    def _form_envelope(self):
        body = {}
        for name, sink in self.fields.items():
            try:
                body[name] = json.loads(bytes(sink.content))
            except ValueError as error:
                raise _posted_data_error(f"body: {name} is not valid JSON ({error})") from None
        data, permissions = req.envelope(body, self.view.kind.permissions)
        return dict(data or {}), permissions

    def _mimetype(self, sent, extension):
        """Kinto's choice: the per-extension override, else the part's type, else a guess."""
        if extension in self.rules.mimetypes:
            return self.rules.mimetypes[extension]
        sent = (sent or "").split(";")[0].strip()
        if _MEDIA_TYPE.match(sent):
            return sent.lower()
        guessed, _ = mimetypes.guess_type("x." + extension)
        return guessed or "application/octet-stream"

    # writing

    def _store(self, metadata, data, permissions):
        view, record_id = self.view, self.record_id
        self.state.extras["attachment.upload"] = True  # refuse_metadata_change lets it pass
        with view.transaction(view.object_list()) as writer:
            existing = view.reachable(writer, record_id)
            self._authorize(existing)
            view.check_body_id(data, record_id)
            data["attachment"] = metadata
            # The file changes with the record's commit, or not at all.
            self.files.put(writer, record_id, self.file)
            self._write_record(writer, existing, data, permissions)
        record_url = f"{self.state.base_url()}/v1{view.uri(record_id)}"
        return errors.json_response(
            201 if existing is None else 200, metadata, {"Location": record_url}
        )

    def _write_record(self, writer, existing, data, permissions):
        view, record_id = self.view, self.record_id
        if existing is None:
            view.write(writer, 201, record_id, data, permissions or {}, {})
            return
        view.write(
            writer,
            200,
            record_id,
            shallow_merge(existing.data, data),
            {},
            acl.merge_acl(existing.acl, permissions or {}),
            current=existing,
        )


class _TooLarge(Exception):
    """A form field (not the file) is larger than any JSON body may be."""


class _FieldSink:
    def __init__(self, limit):
        self.content, self.limit = bytearray(), limit

    def write(self, data):
        self.content += data
        if len(self.content) > self.limit:
            raise _TooLarge()


def _extension(filename):
    """As kinto-attachment reads it (os.path.splitext): ".bashrc" has none."""
    return os.path.splitext(filename)[1].lstrip(".").lower()


def _posted_data_error(message):
    return errors.http_error(400, INVALID_POSTED_DATA, message=message)


# -- removal ------------------------------------------------------------------


def remove(view, record_id):
    """``DELETE .../attachment``: the record keeps ``"attachment": null``."""
    view.require_parent_exists_for_write()
    files = attached_files(view.settings, view.object_list())
    with view.transaction(view.object_list()) as writer:
        existing = view.reachable(writer, record_id)
        view.require_existing_or_parent_read(existing, record_id)
        files.remove(writer, record_id)
        view.write(
            writer,
            200,
            record_id,
            dict(existing.data, attachment=None),
            {},
            existing.acl,
            current=existing,
        )
    return bottle.HTTPResponse(status=204)


def remove_file_of_deleted(service, change):
    """A deleted record's file goes too (its collection's or bucket's folder
    takes the files of theirs)."""
    if change.kind != "record" or change.action != "delete":
        return
    records = service.store.list(change.parent, "record")
    with records.transaction() as writer:  # joins the deletion's commit
        attached_files(service.settings, records).remove(writer, change.id)


def refuse_metadata_change(state, kind, parent, data, object_id=None):
    """A normal record write may set ``attachment`` to null, not change it."""
    new = data.get("attachment")
    if (
        kind != "record"
        or new is None
        or object_id is None
        or state.extras.get("attachment.upload")
    ):
        return
    current = state.store.list(parent, "record").get(object_id)
    old = current.data.get("attachment") if current else None
    if old is not None and old != new:
        raise errors.http_error(
            400, errors.UNDEFINED, message="Attachment metadata cannot be modified."
        )


# -- serving --------------------------------------------------------------------


def serve(view, record_id):
    """The attached file, to whoever may read the record."""
    existing = view.get(record_id)
    view.authorizer.require("read", existing.acl if existing else {})
    view.check_object_id(record_id)
    metadata = existing.data.get("attachment") if existing else None
    if not isinstance(metadata, dict):
        raise errors.object_not_found("attachment", record_id)
    path = attached_files(view.settings, view.object_list()).path(record_id)
    if path is None:
        raise errors.object_not_found("attachment", record_id)
    mimetype = metadata.get("mimetype")
    mimetype = (
        mimetype
        if isinstance(mimetype, str) and _MEDIA_TYPE.match(mimetype)
        else "application/octet-stream"
    )
    response = bottle.static_file(
        os.path.basename(path),
        root=os.path.dirname(path),
        mimetype=mimetype,
        etag=f'"{metadata.get("hash", "")}"',
        charset=None,
    )
    # Never let a browser run an uploaded page on this origin.
    response.set_header("Content-Disposition", "attachment")
    return response

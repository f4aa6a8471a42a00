"""One generic resource serving buckets, groups, collections and records.

A :class:`Kind` says what differs between them (parent, id rules, generated
ids, typed fields); :class:`ResourceView` implements Kinto's method
semantics once (protocol sections 6, 7, 9.5).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import partial
from urllib.parse import urlencode

from .. import acl, ids, kinds, query
from ..feed import Change
from ..fsstore import ParentNotFound, tombstone
from . import errors
from . import request as req
from .authorizer import Authorizer
from .fields import check_typed_fields
from .kindhooks import KindHooks
from .patching import merge_patch, shallow_merge


@dataclass(frozen=True)
class Kind:
    """How the HTTP API serves one kind of kinds.KINDS (what it *is* is there)."""

    name: str
    generate_id: Callable[[], str] = ids.generate_name
    check_fields: Callable = check_typed_fields
    plural_methods: tuple = ("HEAD", "GET", "POST", "DELETE")
    object_methods: tuple = ("GET", "HEAD", "PUT", "PATCH", "DELETE")
    extra: dict = field(default_factory=dict)
    # Strict resources (history): the known top-level fields; None accepts any.
    query_fields: tuple | None = None
    # A hook to adjust a parsed query (e.g. history compares ids as strings).
    adjust_query: Callable = lambda parsed: parsed  # noqa: E731
    # Whether plural HEAD sends Total-Objects (Kinto's history does not).
    count_headers: bool = True
    # Where the kind departs from the generic rules (accounts), see kindhooks.py.
    hooks: KindHooks = field(default_factory=KindHooks)

    @property
    def info(self):
        return kinds.KINDS[self.name]

    @property
    def permissions(self):
        return self.info.permissions

    def valid_id(self, value):
        return self.info.valid_id(value)


KINDS = {
    "bucket": Kind("bucket"),
    "group": Kind("group"),
    "collection": Kind("collection"),
    "record": Kind("record", generate_id=ids.generate_uuid),
}


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_YEAR_10000_MS = 253402300800000


def http_date(ms):
    """``formatdate(ms / 1000, usegmt=True)``; for whole milliseconds of the
    years 1970 to 9999 (every timestamp) without its detour through datetime."""
    if type(ms) is not int or not 0 <= ms < _YEAR_10000_MS:
        return formatdate(ms / 1000, usegmt=True)
    year, month, day, hour, minute, second, weekday, _, _ = time.gmtime(ms // 1000)
    fields = (_WEEKDAYS[weekday], day, _MONTHS[month - 1], year, hour, minute, second)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % fields  # noqa: UP031 (cheaper than f"")


def timestamp_headers(ts):
    return {"ETag": f'"{ts}"', "Last-Modified": http_date(ts)}


# The method of ResourceView serving each HTTP method (a subclass may override it).
_PLURAL_HANDLERS = {
    "GET": "list_objects",
    "HEAD": "list_objects",
    "POST": "create",
    "DELETE": "delete_objects",
}
_OBJECT_HANDLERS = {
    "GET": "read",
    "HEAD": "read",
    "PUT": "replace",
    "PATCH": "patch",
    "DELETE": "delete",
}


# Set in the environ by the views of objects and lists: their responses (the
# edge's job) expose every header a client reads (README, "Differences from
# Kinto"); other responses expose Kinto's base set.
EXPOSE_ALL_HEADERS = "kintofs.expose_all_headers"


def next_page_url(state, page):
    """The ``Next-Page`` URL: this request's URL with the next ``_limit``/``_token``."""
    # Kinto updates a dict: _limit and _token stay where the client put them.
    replacements = {"_limit": str(page.limit), "_token": page.next_token}
    params = []
    for name, value in state.query_params:
        if name in replacements:
            params.append((name, replacements.pop(name)))
        elif name not in ("_limit", "_token"):
            params.append((name, value))
    params += replacements.items()
    return f"{state.base_url()}{state.environ['PATH_INFO']}?{urlencode(params)}"


class ResourceView:
    """Kinto's semantics for one kind of object, for one request.

    ``parent`` is the path of the list's container: ``(("bucket", "b"),)``.
    ``state`` is the request state (settings, store, caller) built by the app.
    """

    def __init__(self, state, kind, parent):
        self.state = state
        self.store = state.store
        self.settings = state.settings
        self.kind = kind
        self.parent = tuple(parent)
        self.authorizer = Authorizer(state, kind.name, self.parent)
        self._object_list = None
        self._raw_body = None

    # -- entry points -----------------------------------------------------

    def plural(self, method):
        req.check_accept(self.state.environ.get("HTTP_ACCEPT"))
        handler = _PLURAL_HANDLERS.get(method)
        if handler is None or method not in self.kind.plural_methods:
            raise errors.method_not_allowed([*self.kind.plural_methods, "OPTIONS"])
        self.state.environ[EXPOSE_ALL_HEADERS] = True
        self._check_path_ids(plural=True)
        return getattr(self, handler)()

    def object(self, method, object_id):
        req.check_accept(self.state.environ.get("HTTP_ACCEPT"))
        handler = _OBJECT_HANDLERS.get(method)
        if handler is None:
            raise errors.method_not_allowed([*self.kind.object_methods, "OPTIONS"])
        self.state.environ[EXPOSE_ALL_HEADERS] = True
        self._check_path_ids(plural=False)
        return getattr(self, handler)(object_id)

    # -- plural endpoint --------------------------------------------------

    def list_objects(self):
        visible = self.kind.hooks.restrict_list(
            self, self.authorizer.visible_ids("read", self.object_list().objects)
        )
        self._require_parent_exists()
        object_list = self.object_list()
        ts = object_list.timestamp()
        headers = {**timestamp_headers(ts), **self._cache_headers()}
        self._check_preconditions(ts, exists=True, headers=headers, allow_304=True)
        q = self._parse_query()
        if q.deprecated_to:
            headers["Alert"] = self.state.to_deprecation_alert()
        if self.state.method == "HEAD" and self.kind.count_headers:
            total = str(query.count(self._candidates(object_list, q, visible), q))
            return errors.json_response(
                200, None, {**headers, "Total-Objects": total, "Total-Records": total}
            )
        page = self._page(object_list, q, visible)
        if page.next_token:
            headers["Next-Page"] = self._next_page_url(page)
        return errors.json_response(200, {"data": page.objects}, headers)

    def create(self):
        self.kind.hooks.before_create(self)
        body = self._body(("application/json",))
        data, permissions = req.envelope(body, self.kind.permissions)
        data_sent = data is not None
        data = dict(data or {})
        object_id = data.get("id")
        if "id" in data and not self.kind.valid_id(object_id):
            raise errors.invalid_object_id()
        self.require_parent_exists_for_write()
        object_list = self.object_list()
        with self.transaction(object_list) as writer:
            existing = self.reachable(writer, object_id) if object_id is not None else None
            if existing is not None:
                self.authorizer.require("read", existing.acl)
                self._check_preconditions(
                    existing.data["last_modified"], exists=True, existing=existing.data
                )
                return self._object_response(200, existing.data, existing.acl)
            self.authorizer.require_create()
            self._check_preconditions(None, exists=False, list_timestamp=writer.timestamp)
            generated = object_id is None
            object_id = object_id or self.kind.generate_id()
            return self.write(
                writer,
                201,
                object_id,
                data,
                permissions or {},
                {},
                requested_ts=data.get("last_modified"),
                generated_id=generated,
                with_defaults=data_sent,
            )

    def delete_objects(self):
        deletable = self.kind.hooks.restrict_list(
            self, self.authorizer.visible_ids("write", self.object_list().objects)
        )
        self._require_parent_exists()
        object_list = self.object_list()
        q = self._parse_query()
        with self.transaction(object_list) as writer:
            list_ts = writer.timestamp()
            self._check_preconditions(list_ts, exists=True)
            self._use_delete_token(q)
            page = self._page(object_list, q, deletable, include_tombstones=False)
            deleted = [writer.delete(obj["id"]) for obj in page.objects]
            if page.next_token:
                self.state.service.delete_tokens.issue(query.token_nonce(page.next_token))
        headers = timestamp_headers(max((d["last_modified"] for d in deleted), default=list_ts))
        if page.next_token:
            headers["Next-Page"] = self._next_page_url(page)
        return errors.json_response(200, {"data": deleted}, headers)  # Kinto ignores _fields here

    def _use_delete_token(self, q):
        """A DELETE token works once (Kinto's #1171): replaying it deletes nothing."""
        if q.token and not self.state.service.delete_tokens.consume(query.token_nonce(q.token)):
            raise errors.invalid_param(
                "querystring", None, "_token was already used or has expired."
            )

    # -- object endpoint --------------------------------------------------

    def read(self, object_id):
        existing = self.get(object_id)
        self.authorizer.require("read", existing.acl if existing else {})
        self.check_object_id(object_id)
        self._require_parent_exists()
        if existing is None or not self.kind.hooks.reachable(self, object_id):
            raise errors.object_not_found(self.kind.name, object_id)
        ts = existing.data["last_modified"]
        headers = {**timestamp_headers(ts), **self._cache_headers()}
        self._check_preconditions(
            ts, exists=True, existing=existing.data, headers=headers, allow_304=True
        )
        try:
            fields = query.parse_fields(self.state.query_params)
        except query.QueryError as error:
            raise errors.invalid_param(error.location, error.name, error.description) from None
        if fields:
            return errors.json_response(
                200, {"data": query.project(existing.data, fields)}, headers
            )
        return self._object_response(200, existing.data, existing.acl, headers)

    def replace(self, object_id):
        self.require_parent_exists_for_write()
        body = self._body(("application/json",))
        with self.transaction(self.object_list()) as writer:
            existing = self.reachable(writer, object_id)
            if_none_match = req.precondition(self.state.environ, "If-None-Match")
            if existing is not None and if_none_match != "*":
                self.authorizer.require("write", existing.acl)
            else:
                self.authorizer.require_create()
            self.check_object_id(object_id)
            self._check_preconditions(
                existing.data["last_modified"] if existing else None,
                exists=existing is not None,
                existing=existing.data if existing else None,
                list_timestamp=writer.timestamp,
            )
            data, permissions = req.envelope(body, self.kind.permissions)
            data_sent = data is not None
            if data is None:
                data = _without_meta(existing.data) if existing else {}
            self.check_body_id(data, object_id)
            old_acl = existing.acl if existing else {}
            new_acl = acl.replace_acl(old_acl, permissions) if permissions is not None else old_acl
            return self.write(
                writer,
                200 if existing else 201,
                object_id,
                data,
                {},
                new_acl,
                requested_ts=data.get("last_modified"),
                current=existing,
                with_defaults=data_sent,
            )

    def patch(self, object_id):
        self.require_parent_exists_for_write()
        media = req.content_type_of(
            self.state.environ.get("CONTENT_TYPE"), (req.JSON, req.MERGE_PATCH, req.JSON_PATCH)
        )
        body = self._body(None)
        behavior = self._response_behavior()
        with self.transaction(self.object_list()) as writer:
            existing = self.reachable(writer, object_id)
            self.require_existing_or_parent_read(existing, object_id)
            self._check_preconditions(
                existing.data["last_modified"], exists=True, existing=existing.data
            )
            data, new_acl = self._patched(media, body, existing)
            self.check_body_id(data, object_id)
            response = self.write(
                writer,
                200,
                object_id,
                data,
                {},
                new_acl,
                requested_ts=data.get("last_modified"),
                current=existing,
            )
        if behavior == "full":
            return response
        # Kinto looks only at the fields the patch applied: the sent ones, or
        # every field of the patched document for JSON Patch (so its light and
        # diff answers carry the new last_modified).
        applied = data if media == req.JSON_PATCH else (body.get("data") or {})
        stored = response.stored_data
        partial = {
            k: v
            for k, v in stored.items()
            if k in applied and k != "id" and existing.data.get(k, _MISSING) != v
        }
        if behavior == "diff":
            partial = {k: v for k, v in partial.items() if applied[k] != v}
        return errors.json_response(200, {"data": partial}, dict(response.headers))

    def create_if_missing(self, object_id):
        """Create an empty object owned by the caller unless it exists.

        For implicit creations (the default bucket): no permission check,
        as in Kinto, but a normal write otherwise (listeners are told).
        """
        with self.transaction(self.object_list()) as writer:
            if writer.get(object_id) is None:
                self.write(writer, 201, object_id, {}, {}, {})

    def delete(self, object_id):
        self.require_parent_exists_for_write()
        requested = self._last_modified_param()
        with self.transaction(self.object_list()) as writer:
            existing = self.reachable(writer, object_id)
            self.require_existing_or_parent_read(existing, object_id)
            self._check_preconditions(
                existing.data["last_modified"], exists=True, existing=existing.data
            )
            deleted = writer.delete(object_id, requested_ts=requested)
        return errors.json_response(
            200, {"data": deleted}, timestamp_headers(deleted["last_modified"])
        )

    # -- authorization ----------------------------------------------------

    def require_existing_or_parent_read(self, existing, object_id):
        """Write on ``existing``; for a missing object, Kinto's 403 or 404."""
        if existing is not None:
            self.authorizer.require("write", existing.acl)
            self.check_object_id(object_id)
            return
        if not self.authorizer.list_allowed("read", "missing"):
            raise self.state.denied()
        self.check_object_id(object_id)
        raise errors.object_not_found(self.kind.name, object_id)

    # -- existence and ids ------------------------------------------------

    def check_parent_ids(self):
        for depth, (parent_kind, parent_id) in enumerate(self.parent):
            if not kinds.KINDS[parent_kind].valid_id(parent_id):
                # Kinto authorizes first, and nobody holds rights on a bucket
                # that cannot exist; below a bucket it reports the bad id.
                if depth == 0:
                    raise self.state.denied()
                raise errors.parent_not_found(parent_kind, parent_id)

    def _check_path_ids(self, plural):
        """Kinto's 404 for a parent id no object can have, and when it comes.

        Kinto checks the path's ids before permissions where it loads the
        target first (writes on an object, POST on a plural); elsewhere it
        authorizes first, then answers 404 errno 111 naming the first bad id.
        """
        invalid = next(((k, i) for k, i in self.parent if not kinds.KINDS[k].valid_id(i)), None)
        if invalid is None:
            return
        method = self.state.method
        if method not in (("POST",) if plural else ("PUT", "PATCH", "DELETE")):
            permission = "write" if method == "DELETE" else "read"
            if plural:
                allowed = (
                    self.authorizer.list_allowed(permission)
                    or self._shared_by_pattern(permission)
                    or self.authorizer.create_allowed()
                )
            else:
                allowed = self.authorizer.allowed(permission, {})
            if not allowed:
                raise self.state.denied()
        raise errors.parent_not_found(*invalid)

    def _shared_by_pattern(self, permission):
        """Does an object that Kinto's shared-objects lookup finds grant ``permission``?

        That lookup takes the list's path as a pattern where each ``*`` is
        one or more characters, so ``/buckets/*/collections`` is allowed to
        whoever may read some bucket or collection (then answered 404), and
        ``/buckets/be*/groups`` only to who may read one under ``be…``.
        """
        pattern = (*self.parent, (self.kind.name, "*"))
        principals = self.state.principals

        def found(path):
            holder, wanted = pattern[len(path)]
            if "*" in wanted:
                matches = ids.wildcard_matcher(wanted)
                candidates = [
                    (object_id, stored)
                    for object_id, stored in self.store.list(path, holder).objects().items()
                    if matches(object_id)
                ]
            else:
                stored = self.state.stored((*path, (holder, wanted)))
                candidates = [(wanted, stored)] if stored is not None else []
            return any(
                acl.allowed(principals, self.kind.name, permission, {holder: stored.acl})
                or (len(path) + 1 < len(pattern) and found((*path, (holder, object_id))))
                for object_id, stored in candidates
            )

        return found(())

    def check_object_id(self, object_id):
        if not self.kind.valid_id(object_id):
            raise errors.invalid_object_id()

    def check_body_id(self, data, object_id):
        if "id" in data and data["id"] != object_id:
            raise errors.invalid_param("body", "id", "Object id does not match existing object")

    def _missing_parent(self):
        """The first missing container on the path, as (kind, id), or None."""
        for depth, (parent_kind, parent_id) in enumerate(self.parent):
            if self.state.stored(self.parent[: depth + 1]) is None:
                return parent_kind, parent_id
        return None

    def _require_parent_exists(self):
        missing = self._missing_parent()
        if missing:
            raise errors.parent_not_found(*missing)

    def require_parent_exists_for_write(self):
        """Kinto reports a missing collection before authorization on record
        writes, naming the collection even when its bucket is gone too; for
        groups and collections authorization comes first (403 on a missing bucket)."""
        missing = self._missing_parent()
        if missing and self.kind.name == "record":
            raise errors.parent_not_found(*self.parent[-1])
        if missing:
            self.authorizer.require_create()
            raise errors.parent_not_found(*missing)

    # -- storage helpers --------------------------------------------------

    def object_list(self):
        if self._object_list is None:
            self._object_list = self.store.list(self.parent, self.kind.name)
        return self._object_list

    def get(self, object_id):
        if not self.kind.valid_id(object_id):
            return None
        return self.object_list().get(object_id)

    def reachable(self, writer, object_id):
        """The stored object, or None if missing or out of this caller's reach."""
        existing = writer.get(object_id)
        if existing is None or not self.kind.hooks.reachable(self, object_id):
            return None
        return existing

    def transaction(self, object_list):
        return _Transaction(object_list, self.kind, self.parent, self.state)

    def write(
        self,
        writer,
        status,
        object_id,
        data,
        requested_acl,
        base_acl,
        *,
        requested_ts=None,
        current=None,
        generated_id=False,
        with_defaults=True,
    ):
        """Validate, stamp and store one object; the response for it.

        ``with_defaults``: whether the body had ``data`` (Kinto fills
        schema defaults only then)."""
        data = _without_meta(data)
        data = self.kind.hooks.prepare_data(
            self, None if generated_id else object_id, data, current
        )
        self.kind.check_fields(self.kind.name, data, with_defaults)
        # Kinto validates a POST without id before it makes one up.
        self.state.validate(
            self.kind.name, self.parent, data, object_id=None if generated_id else object_id
        )
        new_acl = acl.replace_acl(base_acl, requested_acl) if requested_acl else dict(base_acl)
        new_acl = acl.creator_acl(new_acl, self.kind.hooks.writer_principal(self, object_id))
        stored = writer.put(object_id, data, new_acl, requested_ts=_timestamp_or_none(requested_ts))
        response = self._object_response(status, stored, new_acl)
        response.stored_data = stored
        return response

    def _object_response(self, status, data, object_acl, headers=None):
        # Kinto shows the ACL to its writers, counting the principal this
        # caller writes as (for accounts, the account an admin acts for).
        writer = self.kind.hooks.writer_principal(self, data["id"])
        shown = self.state.grants(
            lambda principals: acl.shows_acl(object_acl, [*principals, writer])
        )
        body = {"permissions": acl.normalize_acl(object_acl) if shown else {}, "data": data}
        if headers and "ETag" in headers and "Last-Modified" in headers:
            # The caller's (a read's) are this object's: the same headers in
            # the same order, without formatting its date a second time.
            headers = {
                "ETag": headers["ETag"],
                "Last-Modified": headers["Last-Modified"],
                **headers,
            }
        else:
            headers = {**timestamp_headers(data["last_modified"]), **(headers or {})}
        return errors.json_response(status, body, headers)

    def uri(self, object_id):
        return kinds.uri((*self.parent, (self.kind.name, object_id)))

    # -- request parsing --------------------------------------------------

    def _body(self, allowed_types):
        environ = self.state.environ
        if allowed_types:
            req.content_type_of(environ.get("CONTENT_TYPE"), allowed_types)
        return req.parse_json(self.raw_body(), self.settings["max_json_depth"])

    def raw_body(self):
        """The request body, read once (a hook may look at it before the view)."""
        if self._raw_body is None:
            self._raw_body = req.read_body(
                self.state.environ, self.settings["max_request_body_bytes"]
            )
        return self._raw_body

    def _parse_query(self):
        try:
            parsed = query.parse_query(
                self.state.query_params,
                now_ms=int(time.time() * 1000),
                strict_fields=self.kind.query_fields,
            )
        except query.QueryError as error:
            raise errors.invalid_param(error.location, error.name, error.description) from None
        return self.kind.adjust_query(parsed)

    def _check_preconditions(
        self,
        current_ts,
        *,
        exists,
        existing=None,
        headers=None,
        allow_304=False,
        list_timestamp=None,
    ):
        """304/412 per protocol 7.2; a 412 on an absent object carries the list
        timestamp (``list_timestamp()``, only read when needed), as Kinto's does."""
        environ = self.state.environ
        if_match = req.precondition(environ, "If-Match")
        if_none_match = req.precondition(environ, "If-None-Match")
        headers = headers or (timestamp_headers(current_ts) if exists and current_ts else {})
        if allow_304 and exists and isinstance(if_none_match, int) and if_none_match == current_ts:
            raise errors.json_response(304, None, headers)
        failed = (
            (if_match == "*" and not exists)
            or (isinstance(if_match, int) and (not exists or if_match != current_ts))
            or (if_none_match == "*" and exists)
        )
        if failed:
            if not exists and list_timestamp is not None:
                headers = timestamp_headers(list_timestamp())
            raise errors.precondition_failed(existing, headers)

    def _response_behavior(self):
        value = self.state.environ.get("HTTP_RESPONSE_BEHAVIOR", "full")
        if value not in ("full", "light", "diff"):
            raise errors.invalid_param(
                "header", "Response-Behavior", f'"{value}" is not one of full, light, diff'
            )
        return value

    def _last_modified_param(self):
        for name, value in self.state.query_params:
            if name == "last_modified":
                try:
                    return _timestamp_or_none(int(value.strip('"')))
                except ValueError:
                    return None
        return None

    def _patched(self, media, body, existing):
        """(data, acl) after applying a PATCH body to ``existing``."""
        if media == req.JSON_PATCH:
            return self.state.json_patch(
                body, existing, self.kind.permissions, self.state.principals
            )
        data, permissions = req.envelope(body, self.kind.permissions)
        if data is None and permissions is None:
            raise errors.invalid_param(
                "body", "data", "Provide at least one of data or permissions"
            )
        current = existing.data
        if media == req.MERGE_PATCH:
            new_data = merge_patch(current, data) if data is not None else dict(current)
            new_acl = existing.acl
            if permissions is not None:
                visible = acl.visible_acl(existing.acl, self.state.principals)
                merged = dict(visible)
                for name, members in permissions.items():
                    if members is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = members
                new_acl = acl.normalize_acl(merged)
        else:
            new_data = shallow_merge(current, data or {})
            new_acl = acl.merge_acl(existing.acl, permissions or {})
        return new_data, new_acl

    # -- list helpers -----------------------------------------------------

    def _candidates(self, object_list, q, visible, include_tombstones=None):
        """The list's objects (and tombstones), newest first, from its change order:
        a `_since` poll walks only what changed, a default-order page only itself."""
        if include_tombstones is None:
            include_tombstones = q.includes_tombstones
        if q.since is None and not query.in_newest_first_order(q):
            yield from self._every_candidate(object_list, visible, include_tombstones)
            return
        until = query.resume_timestamp(q) if query.in_newest_first_order(q) else None
        for object_id, stored, ts in object_list.newest_first(since=q.since, until=until):
            if stored is not None:
                if visible is None or object_id in visible:
                    yield stored.data
            elif include_tombstones and visible is None:
                yield tombstone(object_id, ts)

    def _every_candidate(self, object_list, visible, include_tombstones):
        """Everything, in no order (the query sorts): a plain walk of the index."""
        for stored in object_list.live():
            if visible is None or stored.data["id"] in visible:
                yield stored.data
        if include_tombstones and visible is None:
            for object_id, ts in object_list.tombstones().items():
                yield tombstone(object_id, ts)

    def _page(self, object_list, q, visible, include_tombstones=None):
        """One page of the list for the query: from the list's index of the
        query's order when it has one (any other order than newest first,
        without tombstones), else from all candidates."""
        paginate_by = self.settings.get("paginate_by") or None
        if include_tombstones is None:
            include_tombstones = q.includes_tombstones
        try:
            candidates = self._in_sort_order(object_list, q, visible, include_tombstones)
            presorted = candidates is not None or query.in_newest_first_order(q)
            if candidates is None:
                candidates = self._candidates(object_list, q, visible, include_tombstones)
            page = query.paginate(
                candidates,
                q,
                paginate_by=paginate_by,
                max_fetch=self.settings["storage_max_fetch_size"],
                presorted=presorted,
            )
        except query.QueryError as error:
            raise errors.invalid_param(error.location, error.name, error.description) from None
        return page

    def _in_sort_order(self, object_list, q, visible, include_tombstones):
        """The visible objects after the query's token, in its order, from a
        sorted index kept by the list (None where there is none to keep)."""
        if q.since is not None or include_tombstones or query.in_newest_first_order(q):
            return None
        cursor = query.cursor(q)
        ordered = object_list.derived(
            ("sorted", tuple(q.sort)),
            partial(query.SortedObjects, q.sort),
            lambda view: view.after(cursor),
        )
        if ordered is None or visible is None:
            return ordered
        return (data for data in ordered if data["id"] in visible)

    def _next_page_url(self, page):
        return next_page_url(self.state, page)

    def _cache_headers(self):
        if self.state.userid is not None:
            return {"Cache-Control": "no-cache, no-store"}
        expires = self._cache_expires()
        if expires is None:
            return {"Cache-Control": "no-cache, no-store"}
        if expires == 0:
            return {
                "Cache-Control": "max-age=0, must-revalidate, no-cache, no-store",
                "Expires": http_date(time.time() * 1000),
                "Pragma": "no-cache",
            }
        return {
            "Cache-Control": f"max-age={expires}",
            "Expires": http_date((time.time() + expires) * 1000),
        }

    def _cache_expires(self):
        if self.kind.name != "record":
            return None
        collection = self.state.stored(self.parent)
        value = collection.data.get("cache_expires") if collection else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


_MISSING = object()


def _without_meta(data):
    return {k: v for k, v in data.items() if k not in ("id", "last_modified")}


def _timestamp_or_none(value):
    """A requested timestamp, or None (the server's own) for one before 1970 or
    after 9999: no HTTP date carries it, so stored it would fail its list's answers."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _YEAR_10000_MS:
        return value
    return None


class _Transaction:
    """A list transaction whose writes are published on the change feed and
    whose storage errors become Kinto responses (see feed.py for the moments)."""

    def __init__(self, object_list, kind, parent, state):
        self.object_list, self.kind, self.parent, self.state = object_list, kind, parent, state

    def __enter__(self):
        self._context = self.object_list.transaction()
        try:
            self._writer = self._context.__enter__()
        except ParentNotFound:
            raise _parent_missing(self.parent) from None
        return PublishingWriter(self._writer, self)

    def __exit__(self, *exc_info):
        try:
            return self._context.__exit__(*exc_info)
        except ParentNotFound:
            raise _parent_missing(self.parent) from None

    def publish(self, action, object_id, old, new):
        change = Change(
            action,
            self.kind.name,
            self.parent,
            object_id,
            old,
            new,
            new[0]["last_modified"],
            self.state.userid,
        )
        feed = self.state.service.feed
        feed.in_commit(change)
        self._writer.after_commit(lambda: feed.after_commit(change))


class PublishingWriter:
    """The storage writer of a transaction, telling the feed of each write."""

    def __init__(self, writer, transaction):
        self._writer, self._transaction = writer, transaction

    def get(self, object_id):
        return self._writer.get(object_id)

    def timestamp(self):
        return self._writer.timestamp()

    def after_commit(self, callback):
        """``callback()`` once the change is durable (never if it is undone)."""
        self._writer.after_commit(callback)

    def after_undo(self, callback):
        """``callback()`` if the change is undone (refused, or its batch aborted)."""
        self._writer.after_undo(callback)

    def put_file(self, object_id, staged_path, *, keep_old=False):
        """The object's attached file becomes ``staged_path`` with the commit (blobs.py)."""
        self._writer.put_file(object_id, staged_path, keep_old=keep_old)

    def remove_file(self, object_id, *, keep_old=False):
        self._writer.remove_file(object_id, keep_old=keep_old)

    def put(self, object_id, data, object_acl, *, requested_ts=None):
        old = self._writer.get(object_id)
        stored = self._writer.put(object_id, data, object_acl, requested_ts=requested_ts)
        self._transaction.publish(
            "create" if old is None else "update",
            object_id,
            tuple(old) if old is not None else None,
            (stored, object_acl),
        )
        return stored

    def delete(self, object_id, *, requested_ts=None):
        old = self._writer.get(object_id)
        deleted = self._writer.delete(object_id, requested_ts=requested_ts)
        self._transaction.publish("delete", object_id, tuple(old), (deleted, {}))
        return deleted


def _parent_missing(parent):
    if not parent:
        return errors.internal_error()
    return errors.parent_not_found(*parent[-1])

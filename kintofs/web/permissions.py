"""``GET/HEAD /v1/permissions``: what the caller may do, object by object (protocol 9.6).

On when ``experimental_permissions_endpoint`` is true.  Who may call it is
``permissions_read_principals`` (default ``system.Everyone``).  Entries come
from acl.listing; filters, sorting and pagination are Kinto's, on the
entries' known fields only, newest ``uri`` first, and never by
``last_modified`` (the entries have none).
"""

import time

from .. import query
from ..acl.listing import permission_entries
from . import errors
from . import request as req
from .resource import EXPOSE_ALL_HEADERS, next_page_url, timestamp_headers

METHODS = ("HEAD", "GET")
FIELDS = ("uri", "resource_name", "bucket_id", "collection_id", "group_id", "record_id")


def add_routes(service):
    settings = service.settings
    if not settings["experimental_permissions_endpoint"]:
        return
    service.add_capability(
        "permissions_endpoint",
        {
            "description": "The permissions endpoint can be used to list all user objects "
            "permissions.",
            "url": "https://kinto.readthedocs.io/en/latest/configuration/settings.html"
            "#activating-the-permissions-endpoint",
        },
    )
    # Kinto's ETag here means nothing: the time of the first listing, kept.
    first_listed = int(time.time() * 1000)

    def permissions(current):
        if current.method not in METHODS:
            raise errors.method_not_allowed([*METHODS, "OPTIONS"])
        current.environ[EXPOSE_ALL_HEADERS] = True  # a list, as Kinto's
        req.check_accept(current.environ.get("HTTP_ACCEPT"))
        allowed = set(settings.get("permissions_read_principals") or ())
        if not allowed & set(current.principals):
            raise current.denied()
        q = _parse_query(current.query_params)
        entries = permission_entries(
            current.store,
            current.principals,
            settings,
            with_accounts="accounts" in settings["plugins"],
        )
        headers = {**timestamp_headers(first_listed), "Cache-Control": "no-cache, no-store"}
        if current.method == "HEAD":
            total = str(query.count(entries, q))
            return errors.json_response(
                200, None, {**headers, "Total-Objects": total, "Total-Records": total}
            )
        page = _page(entries, q, settings)
        if page.next_token:
            headers["Next-Page"] = next_page_url(current, page)
        return errors.json_response(200, {"data": page.objects}, headers)

    service.add_route("/v1/permissions", "ANY", permissions, preflight="HEAD,GET,OPTIONS")


def _parse_query(params):
    try:
        return query.parse_query(
            params,
            now_ms=int(time.time() * 1000),
            strict_fields=FIELDS,
            default_sort_tiebreak="uri",
        )
    except query.QueryError as error:
        raise errors.invalid_param(error.location, error.name, error.description) from None


def _page(entries, q, settings):
    try:
        return query.paginate(
            entries,
            q,
            paginate_by=settings.get("paginate_by") or None,
            max_fetch=settings["storage_max_fetch_size"],
        )
    except query.QueryError as error:
        raise errors.invalid_param(error.location, error.name, error.description) from None

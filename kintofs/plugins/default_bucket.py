"""``/v1/buckets/default``: every user's personal bucket (protocol section 16).

A request on ``/v1/buckets/default[/...]`` is served as the same request on
``/v1/buckets/<personal id>[/...]``: this module's route creates the bucket
(and the collection named in the path) when missing, rewrites the path, and
hands the request to the route that serves the real path.  Responses,
``ETag`` and ``Next-Page`` therefore show the real id.  The id is
``UUID(HMAC-SHA256(default_bucket_hmac_secret, user id)[:32 hex])``.
"""

import hashlib
import hmac
import io
import json
import uuid

from ..web import errors
from ..web import request as req
from ..web.resource import KINDS, ResourceView

PREFIX = "/v1/buckets/default"


def setup(service):
    secret = service.settings["default_bucket_hmac_secret"]
    service.add_capability(
        "default_bucket",
        {
            "description": "The default bucket is an alias for a personal bucket where "
            "collections are created implicitly.",
            "url": "https://kinto.readthedocs.io/en/latest/api/1.x/buckets.html"
            "#personal-bucket-default",
        },
    )
    service.add_user_info(
        lambda state, user: user.update(bucket=personal_bucket_id(secret, state.userid))
    )

    def default_bucket(state, subpath=None):
        if state.userid is None:
            raise state.denied()
        if service.settings["readonly"]:
            raise errors.method_not_allowed(None)
        bucket_id = personal_bucket_id(secret, state.userid)
        create_implicitly(state, bucket_id, subpath)
        forward(service, state.environ, bucket_id)
        return service.dispatch(state.environ)

    # Registered before the resource routes, so these win for "default".
    service.add_route(PREFIX, "ANY", default_bucket)
    service.add_route(PREFIX + "/<subpath:path>", "ANY", default_bucket)


def personal_bucket_id(secret, userid):
    digest = hmac.new(secret.encode("utf-8"), userid.encode("utf-8"), hashlib.sha256).hexdigest()
    return str(uuid.UUID(digest[:32]))


def create_implicitly(state, bucket_id, subpath):
    """The bucket, and the collection the path names, unless this request PUTs it."""
    path = state.environ["PATH_INFO"]
    is_put = state.method == "PUT"
    if not (is_put and path.endswith("buckets/default")):
        ResourceView(state, KINDS["bucket"], ()).create_if_missing(bucket_id)
    if not (subpath and subpath.rstrip("/").startswith("collections/")):
        return
    collection_id = subpath.split("/")[1]
    if not KINDS["collection"].valid_id(collection_id):
        raise errors.invalid_param("path", None, "Invalid collection id")
    # Kinto's test, kept as is: any PUT whose path ends with the collection id.
    if not (is_put and path.endswith(collection_id)):
        view = ResourceView(state, KINDS["collection"], (("bucket", bucket_id),))
        view.create_if_missing(collection_id)


def forward(service, environ, bucket_id):
    """Point ``environ`` at the personal bucket; a ``data.id`` saying "default" too."""
    environ["PATH_INFO"] = f"/v1/buckets/{bucket_id}" + environ["PATH_INFO"][len(PREFIX) :]
    raw = req.read_body(environ, service.settings["max_request_body_bytes"])
    body = _with_real_id(raw, bucket_id)
    if body is not None:
        raw = json.dumps(body).encode("utf-8")
        environ["CONTENT_TYPE"] = "application/json; charset=utf-8"
    environ["wsgi.input"] = io.BytesIO(raw)
    environ["CONTENT_LENGTH"] = str(len(raw))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def _with_real_id(raw, bucket_id):
    """The body to send instead of ``raw``, or None to send ``raw`` unchanged.

    As Kinto: an empty body becomes ``{"data": {}}``, and a string
    ``data.id`` has "default" replaced by the bucket id.
    """
    if not raw:
        return {"data": {}}
    try:
        body = json.loads(raw)
        body["data"]["id"] = body["data"]["id"].replace("default", bucket_id)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return body

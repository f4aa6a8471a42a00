"""Admin plugin: serves a Kinto Admin build at ``/v1/admin/``, as Kinto's
``kinto.plugins.admin`` does.

kintofs ships no build: ``admin_assets_path`` names the folder of one
(``index.html``, ``VERSION``, ``assets/``), such as ``kinto/plugins/admin/build/``
of the ``kinto`` wheel on PyPI (README, "Kinto Admin").  As in Kinto:

* ``GET /v1/admin`` redirects (307) to ``/v1/admin/``;
* ``/v1/admin/`` is ``index.html``, read once at start-up, with the
  Content-Security-Policy that lets the application run (every other answer
  keeps kintofs's ``default-src 'none'``: it only matters for documents);
* any other path is a file of the build, cached for an hour; a missing one
  is Kinto's JSON 404.  Kinto Admin routes with ``#/...`` fragments, so no
  other path ever needs ``index.html``.

Paths are resolved within the build folder (symbolic links included):
nothing outside it is ever served.
"""

import mimetypes
import os
import time
from email.utils import formatdate
from urllib.parse import quote

import bottle

from ..config import ConfigError
from ..web import errors

# What Kinto's admin home view sends: the build's own scripts and styles,
# inline ones (the bundle needs them), images from anywhere.
ADMIN_CSP = "; ".join(
    (
        "default-src 'self'",
        "img-src data: *",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
    )
)

CACHE_SECONDS = 3600  # Pyramid's static view default, which Kinto uses

REQUIRED_FILES = ("index.html", "VERSION")


def setup(service):
    root = build_folder(service.settings["admin_assets_path"])
    with open(os.path.join(root, "index.html"), "rb") as file:
        index_page = file.read()
    with open(os.path.join(root, "VERSION"), encoding="utf-8") as file:
        version = file.read().strip()
    service.add_capability(
        "admin",
        {
            "version": version,
            "description": "Serves the admin console.",
            "url": "https://github.com/Kinto/kinto-admin/",
        },
    )

    def redirect(state):
        location = state.base_url() + quote(state.environ.get("PATH_INFO", "") + "/")
        return bottle.HTTPResponse(
            f"307 Temporary Redirect: {location}",
            307,
            {"Location": location, "Content-Type": "text/plain"},
        )

    def home(state):
        return bottle.HTTPResponse(
            index_page,
            200,
            {"Content-Type": "text/html; charset=UTF-8", "Content-Security-Policy": ADMIN_CSP},
        )

    def asset(state, path):
        return serve_file(root, path)

    methods = ["GET", "HEAD"]
    service.add_route("/v1/admin", methods, redirect, preflight="GET,HEAD,OPTIONS")
    service.add_route("/v1/admin/", methods, home, preflight="GET,HEAD,OPTIONS")
    service.add_route("/v1/admin/<path:path>", methods, asset, preflight="GET,HEAD,OPTIONS")


def build_folder(setting):
    """The build's real path; a ConfigError (the daemon does not start) if it is not one."""
    hint = (
        "admin_assets_path must name the folder of a Kinto Admin build, holding "
        f"{' and '.join(REQUIRED_FILES)}: for example kinto/plugins/admin/build/ "
        "unzipped from the kinto==25.0.0 wheel on PyPI (see README, 'Kinto Admin')"
    )
    if not setting.strip():
        raise ConfigError(f"the admin plugin is enabled but {hint}", key="admin_assets_path")
    root = os.path.realpath(os.path.expanduser(setting))
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(root, name))]
    if missing:
        raise ConfigError(
            f"admin_assets_path: {setting!r} has no {missing[0]}; {hint}", key="admin_assets_path"
        )
    return root


def serve_file(root, path):
    """The file ``path`` of the build, or Kinto's 404 for anything else."""
    if "\0" in path:
        raise errors.unknown_url()
    full = os.path.realpath(os.path.join(root, path))
    # realpath has followed "..", and links: the result must still be inside.
    inside = os.path.commonpath((root, full)) == root
    if not (inside and os.path.isfile(full) and os.access(full, os.R_OK)):
        raise errors.unknown_url()
    mimetype, _ = mimetypes.guess_type(full)
    return bottle.static_file(
        os.path.relpath(full, root),
        root=root,
        mimetype=mimetype or "application/octet-stream",
        etag=False,  # Kinto sends none; Last-Modified answers conditional requests
        headers={
            "Cache-Control": f"max-age={CACHE_SECONDS}",
            "Expires": formatdate(time.time() + CACHE_SECONDS, usegmt=True),
        },
    )

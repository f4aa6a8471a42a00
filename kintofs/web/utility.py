"""Utility endpoints: hello, heartbeats, version (protocol section 5)."""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from email.utils import formatdate

import bottle

from .. import __version__
from . import errors

logger = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_SECONDS = 10

SOURCE_URL = "https://github.com/kintofs/kintofs"

# Kinto's contribute.json (a fixed file, no setting in it), about kintofs;
# no chat channel, so without Kinto's "irc" and "irc-contacts".
CONTRIBUTE = {
    "name": "kintofs",
    "description": "A self-hosted daemon that speaks the Kinto HTTP API v1 and keeps "
    "every object as a plain JSON file.",
    "repository": {
        "url": SOURCE_URL,
        "license": "Apache License (2.0)",
        "tests": f"{SOURCE_URL}/actions",
    },
    "participate": {
        "home": f"{SOURCE_URL}/blob/main/CONTRIBUTING.md",
        "docs": f"{SOURCE_URL}#readme",
    },
    "bugs": {"list": f"{SOURCE_URL}/issues", "report": f"{SOURCE_URL}/issues/new"},
    "keywords": ["JSON", "Python", "Kinto", "REST", "API", "Files"],
}


def add_routes(service, state):
    app = service.app
    settings = service.settings

    @app.route("/v1/", ["GET", "HEAD"])
    def hello():
        current = state()
        body = {
            "project_name": settings["project_name"],
            "project_version": __version__,
            "http_api_version": "1.23",
            "project_docs": settings["project_docs"],
            "url": current.base_url() + "/v1/",
            "config": None,
            "settings": {
                "batch_max_requests": settings["batch_max_requests"],
                "readonly": settings["readonly"],
                "explicit_permissions": True,
            },
            # A plugin may give a function of the request (a URL on this host).
            "capabilities": {
                name: value(current) if callable(value) else value
                for name, value in service.capabilities.items()
            },
        }
        if current.userid is not None:
            body["user"] = {"id": current.userid, "principals": current.principals}
            for extend in service.hello_user_extensions:
                extend(current, body["user"])
        headers = {}
        if settings["readonly"]:  # Kinto's root_cache_expires_seconds
            headers = {
                "Cache-Control": "max-age=86400",
                "Expires": formatdate(time.time() + 86400, usegmt=True),
            }
        return errors.json_response(200, body, headers)

    @app.route("/v1/__heartbeat__", ["GET", "HEAD"])
    def heartbeat():
        checks = service.heartbeat_checks
        with ThreadPoolExecutor(max_workers=max(1, len(checks))) as pool:
            futures = {name: pool.submit(check) for name, check in checks.items()}
            results = {}
            for name, future in futures.items():
                try:
                    results[name] = bool(future.result(timeout=HEARTBEAT_TIMEOUT_SECONDS))
                except (FutureTimeout, Exception):
                    results[name] = False
        status = 200 if all(results.values()) else 503
        # Warnings after the status: they report, they never fail the heartbeat.
        for name, warning in service.heartbeat_warnings.items():
            try:
                value = warning()
            except Exception:
                logger.exception("heartbeat warning %r failed", name)
                continue
            if value is not None and name not in results:
                results[name] = value
        return errors.json_response(status, results)

    @app.route("/v1/__lbheartbeat__", ["GET", "HEAD"])
    def lbheartbeat():
        return errors.json_response(200, {})

    @app.route("/v1/contribute.json", ["GET", "HEAD"])
    def contribute():
        return errors.json_response(200, CONTRIBUTE)

    @app.route("/v1/__version__", ["GET", "HEAD"])
    def version():
        return errors.json_response(
            200,
            {
                "name": "kintofs",
                "version": __version__,
                "source": SOURCE_URL,
                "commit": "unknown",
            },
        )

    @app.route("/v1/__api__", ["GET", "HEAD"])
    def api():
        from . import openapi  # only here: the daemon keeps what it imports for its whole life

        return errors.json_response(200, openapi.document(service, bottle.request.environ))

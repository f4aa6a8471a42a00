"""Start the daemon: settings -> store -> WSGI app -> cheroot."""
import logging
import os
import signal
import sys
import threading

from cheroot import wsgi

from .fsstore import FileSystemStore
from .fsstore.watch import FileWatcher
from .plugins import setup_plugins
from .web.accesslog import with_access_log
from .web.app import Service, create_app
from .web.schema import setup as setup_schema_validation

logger = logging.getLogger("kintofs")


def build_app(settings):
    """The WSGI app and its service for ``settings`` (used by tests and serve)."""
    store = FileSystemStore(settings["data_dir"], fsync=settings["fsync"],
                            max_lists=settings["index_max_lists"])
    secret = settings["userid_hmac_secret"]
    if secret is None:
        # Identities must survive restarts, so an unset secret is made once and kept.
        secret = store.persistent_secret("userid_hmac_secret")
    service = Service(settings, store, secret)
    if "basicauth" in settings["auth_policies"]:
        service.capabilities["basicauth"] = {
            "description": "Very basic authentication sessions. Not for production use.",
            "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
        }
    setup_schema_validation(service)
    setup_plugins(service, settings["plugins"])
    return create_app(service), service


def start_watcher(service):
    """Watch the data folder for files edited by hand (see fsstore/watch.py)."""
    def adopted(parent, kind, object_id):
        if kind in ("group", "bucket"):
            service.memberships.invalidate()  # group members may have changed

    return FileWatcher(service.store, on_adopted=adopted).start()


def serve(settings):
    logging.basicConfig(level=settings["log_level"].upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)  # the data belongs to the daemon's user alone
    app, service = build_app(settings)
    app = with_access_log(app, settings["access_log"])
    server = wsgi.Server((settings["bind"], settings["port"]), app,
                         numthreads=settings["threads"])
    # kintofs enforces max_request_body_bytes itself, with a Kinto 413 body.
    server.max_request_body_size = 0

    stopping = []

    def stop(signum, frame):
        if stopping:
            return  # a second signal while requests finish: keep finishing them
        logger.info("signal %s: finishing requests in flight, then exiting", signum)
        # stop() waits for the serve loop, which runs on this very thread.
        stopping.append(threading.Thread(target=server.stop, name="kintofs-stop"))
        stopping[0].start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watcher = start_watcher(service) if settings["watch_files"] else None
    server.prepare()
    host, port = server.bind_addr[:2]
    logger.info("kintofs listening on http://%s:%s/v1/ (data in %s)", host, port,
                service.store.root)
    print(f"kintofs listening on http://{host}:{port}/v1/", file=sys.stderr, flush=True)
    server.serve()
    for thread in stopping:
        thread.join()  # until the requests in flight have their responses
    if watcher:
        watcher.stop()
    logger.info("kintofs stopped")
    return 0

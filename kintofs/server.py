"""Start the daemon: settings -> store -> WSGI app -> cheroot."""

import errno
import logging
import os
import resource
import signal
import sys
import threading

from .fsstore import FileSystemStore
from .fsstore.watch import FileWatcher
from .plugins import setup_plugins
from .push.command import start_change_command
from .web.accesslog import with_access_log
from .web.app import Service, create_app
from .web.gate import GatedServer, Limits
from .web.schema import setup as setup_schema_validation
from .web.streams import StreamingGateway
from .web.streams import setup as setup_push

logger = logging.getLogger("kintofs")


def build_app(settings):
    """The WSGI app and its service for ``settings`` (used by tests and serve)."""
    store = FileSystemStore(
        settings["data_dir"],
        fsync=settings["fsync"],
        memory_budget=settings["index_memory_mb"] * 2**20,
        max_lists=settings["index_max_lists"],
    )
    secret = settings["userid_hmac_secret"]
    if secret is None:
        # Identities must survive restarts, so an unset secret is made once and kept.
        secret = store.persistent_secret("userid_hmac_secret")
    service = Service(settings, store, secret)
    if "basicauth" in settings["auth_policies"]:
        service.add_capability(
            "basicauth",
            {
                "description": "Very basic authentication sessions. Not for production use.",
                "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
            },
        )
    setup_schema_validation(service)
    setup_plugins(service, settings["plugins"])
    setup_push(service)
    return create_app(service), service


def start_webhooks(service):
    """Deliver the ``webhooks`` setting's hooks (push/webhooks.py).  Imported
    only where hooks are set: urllib.request would stay in every daemon's memory."""
    from .push.webhooks import start_webhooks as start

    return start(service)


def start_watcher(service):
    """Watch the data folder for files edited by hand (see fsstore/watch.py)."""

    def adopted(parent, kind, object_id):
        if kind in ("group", "bucket"):
            service.memberships.invalidate()  # group members may have changed
        service.push.adopted(parent, kind, object_id)

    return FileWatcher(service.store, on_adopted=adopted).start()


# How often a serving daemon looks for the commit log of another process on
# the same data directory that died: its last commits are completed then.
DEAD_COMMITS_CHECK_SECONDS = 2.0


class DeadCommitsSweeper:
    """Completes, while serving, the commits of a process that died on the same
    data directory (at start-up the store does it).  A listing of one small
    folder and a lock attempt per other log, every few seconds."""

    def __init__(self, store, interval=DEAD_COMMITS_CHECK_SECONDS):
        self.store, self.interval = store, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kintofs-recovery", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stopped.set()
        self._thread.join()

    def _run(self):
        while not self._stopped.wait(self.interval):
            try:
                self.store.recover_dead_commits()
            except Exception:  # never the end of the thread
                logger.exception("could not complete a dead process's commits")


def buffered_body_limit(settings):
    """The largest body the gate buffers: one any endpoint may accept.

    A larger declared body is handed to the app unread, which refuses it
    (413) from its Content-Length alone.  With unlimited attachments
    (``attachment_max_size_bytes = 0``) an upload beyond this is read by its
    worker thread as it arrives.
    """
    limit = settings["max_request_body_bytes"]
    if "attachment" in settings["plugins"] and settings["attachment_max_size_bytes"]:
        from .plugins.attachment import upload_limit  # the plugin's code only where it is on

        limit = max(limit, upload_limit(settings))
    return limit


def raise_open_file_limit():
    """Every client still sending its request holds a file descriptor: allow
    as many as the system lets this user have (often 1024 soft, far more hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # keep the soft limit


def serve(settings):
    logging.basicConfig(
        level=settings["log_level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.umask(0o077)  # the data belongs to the daemon's user alone
    raise_open_file_limit()
    app, service = build_app(settings)
    app = with_access_log(app, settings["access_log"])
    limits = Limits.from_settings(settings, buffered_body_limit(settings))
    server = GatedServer(
        (settings["bind"], settings["port"]), app, limits, numthreads=settings["threads"]
    )
    # kintofs enforces max_request_body_bytes itself, with a Kinto 413 body.
    server.max_request_body_size = 0
    server.gateway = StreamingGateway  # push streams leave their worker (web/streams.py)
    try:
        server.prepare()
    except OSError as error:
        print(f"kintofs: {bind_problem(settings, error)}", file=sys.stderr)
        return 1

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
    webhooks = start_webhooks(service) if settings["webhooks"] else None
    change_command = start_change_command(service)  # push/command.py
    sweeper = DeadCommitsSweeper(service.store).start()
    host, port = server.bind_addr[:2]
    print(
        f"kintofs listening on http://{host}:{port}/v1/ (data in {service.store.root})",
        file=sys.stderr,
        flush=True,
    )
    server.serve()
    for thread in stopping:
        thread.join()  # until the requests in flight have their responses
    sweeper.stop()
    if webhooks:
        webhooks.stop()
    change_command.stop()  # runs for the last changes, if any
    service.push.stop()
    if watcher:
        watcher.stop()
    service.store.close()  # every file on disk, the commit log deleted
    logger.info("kintofs stopped")
    return 0


def bind_problem(settings, error):
    """One line saying why the listening socket could not be had."""
    address = f"{settings['bind']}:{settings['port']}"
    text = str(error)
    if "Address already in use" in text or getattr(error, "errno", None) == errno.EADDRINUSE:
        return f"port {settings['port']} is in use ({address}); use --port"
    if "Permission denied" in text or getattr(error, "errno", None) == errno.EACCES:
        return f"no permission to listen on {address}; use a port above 1023 (--port)"
    if "Cannot assign requested address" in text or "Name or service not known" in text:
        return f"cannot listen on {address}: no such local address (check bind / --bind)"
    return f"cannot listen on {address}: {text.split(' -- ')[-1]}"

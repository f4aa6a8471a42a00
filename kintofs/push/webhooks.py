"""Webhooks: each change POSTed, signed, in order, to the URLs the operator set.

Each hook of the ``webhooks`` setting (a URL, a secret, an optional bucket and
collection filter) is a follower of the push hub (hub.py) that sees every
change of its scope, and one thread that POSTs them one at a time, in the
hub's order.  docs/push.md ("Webhooks and change commands") describes what a
receiver gets and how to check the signature.

Nothing lost, nothing twice (by id)
    A change is delivered when the receiver answers 2xx; anything else (a
    3xx, 4xx or 5xx, a timeout, a refused connection) is retried, after 1 s,
    2 s, 4 s ... up to 60 s between attempts, for as long as it takes, and
    no later change is sent meanwhile.  After each delivery the hook writes
    the change's position (its ``id``) to ``_webhooks/<key>.json`` in the
    data directory (an atomic rename, flushed with ``fsync``).  At start it
    follows the hub from that position: the hub replays from the lists every
    change after it, then sends live ones.  While the receiver is down the
    hook keeps at most ``QUEUE_EVENTS`` changes (and ``QUEUE_BYTES``) in
    memory; one more, and it tells the hub it fell behind (the hub drops it),
    delivers what it holds, then follows the hub again from the last
    delivered position, which replays the rest from the lists.  So memory
    stays bounded and a request never waits for a receiver: the hub's thread
    only appends to a queue.  A crash between a receiver's 2xx and the write
    of the position sends that one change again, with the same ``id``.

One process per data directory
    Several daemons may serve one data directory; only the one holding the
    flock of ``_webhooks/_lock`` delivers (the others try again every
    ``LOCK_RETRY_SECONDS``), so that a change is not POSTed by each of them.

urllib.request is enough for one POST at a time per hook: no dependency.
Redirects are not followed (a 3xx is a failed attempt); proxies named by the
usual ``https_proxy``/``no_proxy`` variables are used.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import hmac
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from .. import __version__
from ..fsstore import atomic, layout
from .hub import Scope, Subscriber, parse_position

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kintofs-Signature"  # "sha256=<hex>" of "<timestamp>.<body>"
TIMESTAMP_HEADER = "X-Kintofs-Timestamp"  # Unix time of this attempt, in seconds
ID_HEADER = "X-Kintofs-Id"  # the change's position, as in the body's "id"

QUEUE_EVENTS = 1000  # changes held in memory per hook before it falls behind
QUEUE_BYTES = 16 * 2**20  # ... or this many bytes of bodies
FIRST_RETRY_SECONDS = 1.0
LAST_RETRY_SECONDS = 60.0  # the back-off doubles up to this
POST_TIMEOUT_SECONDS = 10.0  # connecting, and waiting for the answer
MAX_ANSWER_BYTES = 64 * 1024  # what is read of an answer (it is not used)
LOCK_RETRY_SECONDS = 5.0  # another process delivers: how often to try its lock
STOP_WAIT_SECONDS = 3.0  # how long stop() waits for POSTs in flight, in all


def sign(secret, timestamp, body):
    """The ``X-Kintofs-Signature`` value of ``body`` (bytes) sent at ``timestamp``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def hook_key(hook):
    """The name of a hook's position file: its URL and filter, not its secret
    (a new secret keeps the position; a new URL or filter is a new hook)."""
    identity = json.dumps([hook["url"], hook["bucket"], hook["collection"]])
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


def public_url(url):
    """``url`` without user info or query, for logs and the position file."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def now_position():
    """Where a new hook starts: the changes after this millisecond."""
    return str(time.time_ns() // 1_000_000)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a 3xx is no delivery: urllib raises HTTPError, the POST is retried


class _Follow:
    """One subscription to the hub, and the changes it brought that wait for the POST."""

    def __init__(self, hook):
        self.hook = hook
        self.events = collections.deque()  # (position, body bytes), oldest first
        self.size = 0
        self.open = True  # False once behind or unsubscribed: nothing more comes
        self.behind = False
        self.subscriber = Subscriber(
            hook.scope, None, self._send, self._close, sees_everything=True
        )

    def _send(self, event):
        """On the hub's thread: queue the change, or say we fell behind."""
        position = event.position(self.subscriber.single_list)
        body = json.dumps(
            {"id": position, **event.body()}, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        hook = self.hook
        with hook.cond:
            if not self.open:
                return False
            full = len(self.events) >= hook.queue_events or self.size + len(body) > hook.queue_bytes
            if self.events and full:
                self.open, self.behind = False, True
                hook.cond.notify_all()
                return False
            self.events.append((position, body))
            self.size += len(body)
            hook.cond.notify_all()
            return True

    def _close(self):
        with self.hook.cond:
            self.open = False
            self.hook.cond.notify_all()


class Webhook:
    """One hook: its position, its thread, its POSTs."""

    def __init__(
        self,
        hub,
        hook,
        root,
        *,
        fsync=True,
        queue_events=QUEUE_EVENTS,
        queue_bytes=QUEUE_BYTES,
        first_retry=FIRST_RETRY_SECONDS,
        last_retry=LAST_RETRY_SECONDS,
        timeout=POST_TIMEOUT_SECONDS,
    ):
        self.hub, self.url, self.secret = hub, hook["url"], hook["secret"]
        self.bucket, self.collection = hook["bucket"], hook["collection"]
        self.scope = Scope(self.bucket, self.collection)
        self.key = hook_key(hook)
        self.state_path = layout.webhook_state_path(root, self.key)
        self.fsync = fsync
        self.queue_events, self.queue_bytes = queue_events, queue_bytes
        self.first_retry, self.last_retry, self.timeout = first_retry, last_retry, timeout
        self.label = public_url(self.url)
        self.position = None  # of the last change delivered (or where it started)
        # Where a hook without a position file starts: changes made after the
        # daemon started (taken now, not when the thread gets to run).
        self.start_position = now_position()
        self.delivered = 0
        self.cond = threading.Condition()
        self.stopping = False
        self._follow = None
        self._save_failed = False
        self._opener = urllib.request.build_opener(_NoRedirects)
        self.thread = threading.Thread(
            target=self._run, name=f"kintofs-webhook-{self.key[:8]}", daemon=True
        )

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        """Ask the thread to end (a POST in flight finishes first); see join()."""
        with self.cond:
            self.stopping = True
            follow = self._follow
            self.cond.notify_all()
        if follow is not None:
            self.hub.unsubscribe(follow.subscriber)

    def join(self, timeout=None):
        if self.thread.ident is not None:
            self.thread.join(timeout)

    # -- the thread ------------------------------------------------------------

    def _run(self):
        self.position = self._load_position()
        what = "everything"
        if self.bucket is not None:
            what = f"bucket {self.bucket}"
            if self.collection is not None:
                what = f"collection {self.bucket}/{self.collection}"
        logger.info("webhook %s: changes of %s after %s", self.label, what, self.position)
        pause = self.first_retry
        while True:
            with self.cond:
                if self.stopping:
                    return
                follow = self._follow = _Follow(self)
            try:
                self.hub.subscribe(follow.subscriber, parse_position(self.position))
            except Exception:  # the store failed: try again later
                logger.exception("webhook %s: could not follow the changes", self.label)
                follow._close()
                if self._pause(pause):
                    return
                pause = min(pause * 2, self.last_retry)
                continue
            pause = self.first_retry
            if self.stopping:
                self.hub.unsubscribe(follow.subscriber)
                return
            while (item := self._next(follow)) is not None:
                if not self._deliver(*item):
                    return  # stopping
            if self.stopping:
                return
            if follow.behind:
                logger.info(
                    "webhook %s: over %d changes waiting; the rest comes from the data",
                    self.label,
                    self.queue_events,
                )
            # Drained and closed: follow again from the last change delivered.

    def _next(self, follow):
        """The oldest waiting change; None when stopping, or closed and drained."""
        with self.cond:
            while not self.stopping and follow.open and not follow.events:
                self.cond.wait()
            if self.stopping or not follow.events:
                return None
            position, body = follow.events.popleft()
            follow.size -= len(body)
            return position, body

    def _pause(self, seconds):
        """Wait ``seconds``; True if stopping meanwhile."""
        with self.cond:
            return self.cond.wait_for(lambda: self.stopping, seconds)

    def _deliver(self, position, body):
        """POST until a 2xx; False if stopping first."""
        failures, pause = 0, self.first_retry
        while True:
            problem = self._post(position, body)
            if problem is None:
                if failures:
                    logger.info(
                        "webhook %s: delivered %s after %d failed attempts",
                        self.label,
                        position,
                        failures,
                    )
                self.position = position
                self.delivered += 1
                self._save_position()
                return True
            failures += 1
            logger.warning(
                "webhook %s: change %s not delivered (%s); next attempt in %g s",
                self.label,
                position,
                problem,
                pause,
            )
            if self._pause(pause):
                return False
            pause = min(pause * 2, self.last_retry)

    def _post(self, position, body):
        """One attempt; None if the receiver answered 2xx, else what went wrong."""
        timestamp = int(time.time())
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"kintofs/{__version__}",
                ID_HEADER: position,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                answer.read(MAX_ANSWER_BYTES)
                status = answer.status
        except urllib.error.HTTPError as error:
            error.close()
            return f"HTTP {error.code}"
        except urllib.error.URLError as error:
            return str(error.reason)
        except (OSError, http.client.HTTPException, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        return None if 200 <= status < 300 else f"HTTP {status}"

    # -- the position file -----------------------------------------------------

    def _load_position(self):
        try:
            document = atomic.read_json(self.state_path)
        except (OSError, ValueError) as error:
            logger.error(
                "webhook %s: %s is unreadable (%s): starting from now, earlier changes are not sent",
                self.label,
                self.state_path,
                error,
            )
            document = None
        position = document.get("position") if isinstance(document, dict) else None
        if parse_position(position) is not None:
            return position
        if document is not None:
            logger.error(
                "webhook %s: %s holds no position: starting from now", self.label, self.state_path
            )
        self.position = self.start_position
        self._save_position()
        return self.position

    def _save_position(self):
        document = {
            "url": self.label,
            "bucket": self.bucket,
            "collection": self.collection,
            "position": self.position,
        }
        try:
            atomic.write_json(self.state_path, document, fsync=self.fsync)
        except Exception as error:  # a full or read-only disk: keep delivering
            if not self._save_failed:
                logger.error(
                    "webhook %s: cannot write %s (%s): after a restart, changes since %s "
                    "are sent again",
                    self.label,
                    self.state_path,
                    error,
                    self.position,
                )
            self._save_failed = True
        else:
            if self._save_failed:
                logger.info("webhook %s: %s written again", self.label, self.state_path)
            self._save_failed = False


class Webhooks:
    """Every hook of the ``webhooks`` setting, delivered while this process holds
    the lock of ``_webhooks`` in the data directory."""

    def __init__(self, hub, hooks, root, *, fsync=True, **options):
        self.root = root
        self.hooks = [Webhook(hub, hook, root, fsync=fsync, **options) for hook in hooks]
        self.cond = threading.Condition()
        self.stopping = False
        self._lock_fd = None
        self._thread = threading.Thread(target=self._run, name="kintofs-webhooks", daemon=True)

    def start(self):
        if self.hooks:
            self._thread.start()
        return self

    def _run(self):
        fd = self._open_lock()
        waiting = False
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    logger.info(
                        "webhooks: another process on %s delivers them; waiting for it to stop",
                        self.root,
                    )
                    waiting = True
                with self.cond:
                    if self.cond.wait_for(lambda: self.stopping, LOCK_RETRY_SECONDS):
                        os.close(fd)
                        return
        with self.cond:
            if self.stopping:
                if fd is not None:
                    os.close(fd)
                return
            self._lock_fd = fd
            if waiting:
                logger.info("webhooks: this process delivers them now")
            self._remove_leftovers()
            for hook in self.hooks:
                hook.start()

    def _open_lock(self):
        folder = layout.webhooks_folder(self.root)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(layout.webhooks_lock_path(self.root), flags, 0o600)
        except OSError as error:
            logger.error(
                "webhooks: cannot use %s (%s): delivering without positions on disk "
                "(changes made while kintofs is stopped will not be sent)",
                folder,
                error,
            )
            return None

    def _remove_leftovers(self):
        """A write cut short by a crash leaves a temp file; nothing reads it."""
        folder = layout.webhooks_folder(self.root)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            if name.startswith(layout.TEMP_PREFIX):
                try:
                    atomic.remove_quietly(os.path.join(folder, name))
                except OSError:
                    pass

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for hook in self.hooks:
            hook.stop()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        if self._thread.ident is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        for hook in self.hooks:
            hook.join(max(0.0, deadline - time.monotonic()))
            if hook.thread.is_alive():
                logger.warning(
                    "webhook %s: a POST still in flight at exit; its change may be sent "
                    "again after the restart (same id)",
                    hook.label,
                )
        with self.cond:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # another process may deliver now
                self._lock_fd = None


def start_webhooks(service):
    """Start delivering the ``webhooks`` setting's hooks (nothing if there are none)."""
    settings = service.settings
    return Webhooks(
        service.push.hub, settings["webhooks"], service.store.root, fsync=settings["fsync"]
    ).start()

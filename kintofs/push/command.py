"""change_command: a shell command run after changes, once they stop for a moment.

The ``change_command`` setting is run as ``/bin/sh -c <the setting>`` (the
string exactly as configured: nothing of any change or request is ever put
into it) once changes have stopped for ``change_command_delay_seconds``,
and at the latest ``MAX_WAIT_SECONDS`` (or the delay, if longer) after the
first change it has not run for, so that a steady stream of writes cannot
hold it back for ever.  One run at a time, on one thread of its own: changes
made during a run are run for once it has ended (after the delay again).  At
stop, changes not yet run for get their run at once.

What counts as a change: whatever the push hub streams (buckets, groups,
collections, records: through the API, or a file edited by hand that the
watcher adopts), told by the hub without it polling any list, plus the
changes of the other kinds the API makes (accounts), told by the change
feed.  Another process's writes to the same data directory are not seen.

The command gets the daemon's environment plus three variables holding only
numbers and the data directory: ``KFS_CHANGE_COUNT`` (the changes since the
last run), ``KFS_CHANGE_TIMESTAMP`` (the newest change's timestamp, in
milliseconds) and ``KFS_DATA_DIR``.  (Not ``KINTOFS_*``: a ``kintofs``
command run by it would take them for settings.)  Its standard input is
empty; its output and exit status are logged; nothing it does reaches a
request, which never waits for it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

from ..feed import AFTER_COMMIT
from .hub import STREAMED_KINDS, Scope, Subscriber

logger = logging.getLogger(__name__)

SHELL = "/bin/sh"
MAX_WAIT_SECONDS = 60.0  # the longest a change waits for its run (unless the delay is longer)
MAX_LOGGED_OUTPUT = 4000  # characters of the command's output in a log line
STOP_WAIT_SECONDS = 10.0  # how long stop() waits for the last run


class _EveryList(Scope):
    """Every streamed list, without the hub polling one: the hub tells this
    subscriber what it reads anyway (a change of this process, a hand edit the
    watcher adopted, or a list another subscriber follows)."""

    def lists(self, store):
        return []


class ChangeCommand:
    def __init__(self, service, command, delay, *, max_wait=MAX_WAIT_SECONDS, shell=SHELL):
        self.service, self.command = service, command
        self.delay, self.max_wait = float(delay), max(float(max_wait), float(delay))
        self.shell = shell
        self.root = service.store.root
        self.cond = threading.Condition()
        self.pending = 0  # changes not yet run for
        self.newest = 0  # the newest change's timestamp
        self.first_at = self.last_at = 0.0  # monotonic times of the first and last pending change
        self.runs = 0
        self.stopping = False
        self._subscriber = Subscriber(
            _EveryList(), None, self._event, lambda: None, sees_everything=True
        )
        self._thread = threading.Thread(
            target=self._run, name="kintofs-change-command", daemon=True
        )

    def start(self):
        if not self.command:
            return self
        self.service.push.hub.subscribe(self._subscriber)  # live changes only
        self.service.feed.subscribe(self._change, AFTER_COMMIT)
        self._thread.start()
        return self

    # -- told (the hub's thread, or a request's after its commit): be quick ----

    def _event(self, event):
        self._told(event.ts)
        return True  # never behind: only a count is kept

    def _change(self, change):
        if change.kind not in STREAMED_KINDS:  # the hub tells the others
            self._told(change.timestamp)

    def _told(self, ts):
        now = time.monotonic()
        with self.cond:
            if self.stopping:
                return
            if not self.pending:
                self.first_at = now
            self.pending += 1
            self.newest = max(self.newest, ts or 0)
            self.last_at = now
            self.cond.notify_all()

    # -- the thread --------------------------------------------------------------

    def _run(self):
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if not self.pending:
                    return  # stopping, nothing left to run for
                while not self.stopping:
                    due = min(self.last_at + self.delay, self.first_at + self.max_wait)
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
                count, newest = self.pending, self.newest
                self.pending = 0
            try:
                self._execute(count, newest)
            except Exception:  # never the end of the thread
                logger.exception("change_command: could not run")

    def _execute(self, count, newest):
        environment = dict(os.environ)
        environment.update(
            KFS_CHANGE_COUNT=str(count), KFS_CHANGE_TIMESTAMP=str(newest), KFS_DATA_DIR=self.root
        )
        started = time.monotonic()
        try:
            done = subprocess.run(
                [self.shell, "-c", self.command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,  # a Ctrl-C to the daemon does not cut it short
                check=False,
            )
        except OSError as error:
            logger.error("change_command could not start: %s", error)
            return
        self.runs += 1
        seconds = time.monotonic() - started
        output = done.stdout.decode("utf-8", "replace").strip()
        if len(output) > MAX_LOGGED_OUTPUT:
            output = output[:MAX_LOGGED_OUTPUT] + f"... ({len(output)} characters)"
        said = f"; output:\n{output}" if output else ""
        if done.returncode == 0:
            logger.info("change_command ran for %d changes in %.2f s%s", count, seconds, said)
            return
        if done.returncode < 0:
            status = f"was killed by signal {-done.returncode}"
        else:
            status = f"failed with exit status {done.returncode}"
        logger.warning("change_command %s (%d changes, %.2f s)%s", status, count, seconds, said)

    def stop(self):
        """Run for the changes still pending, then end (waits STOP_WAIT_SECONDS at most)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.service.push.hub.unsubscribe(self._subscriber)
        if self._thread.ident is not None:
            self._thread.join(STOP_WAIT_SECONDS)
            if self._thread.is_alive():
                logger.warning("change_command still running at exit: left to finish")


def start_change_command(service):
    """Start running the ``change_command`` setting after changes (nothing if it is "")."""
    settings = service.settings
    return ChangeCommand(
        service, settings["change_command"], settings["change_command_delay_seconds"]
    ).start()

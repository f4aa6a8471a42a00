"""A limit on failed logins per client address (Kinto has none; errno 117).

An auth policy that can fail (accounts: an existing account, a wrong
password) reports each failure with ``service.record_failed_login(addr)``.
Once an address has ``login_rate_limit`` failures within the last
``login_rate_window_seconds``, its requests that carry credentials answer
``429`` errno 117 with ``Retry-After`` until the oldest failure leaves the
window; requests without credentials are still served.  ``basicauth``
accepts any credentials, so it never fails and never counts.

The address is the TCP peer (``REMOTE_ADDR``): behind a reverse proxy every
client shares the proxy's address, so set ``login_rate_limit = 0`` there and
limit at the proxy.
"""

import math
import threading
import time
from collections import OrderedDict, deque

import bottle

from . import errors

# Addresses remembered at most; beyond this the stalest are forgotten, so
# many addresses cannot grow memory without bound.
MAX_TRACKED_ADDRESSES = 10000


class LoginRateLimiter:
    """Failed logins per address in a sliding window (thread-safe)."""

    def __init__(self, limit, window_seconds, clock=time.monotonic):
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._failures = OrderedDict()  # address -> deque of failure times, oldest first
        self._guard = threading.Lock()

    def record_failure(self, address):
        if not self.limit:
            return
        with self._guard:
            now = self.clock()
            failures = self._recent(address, now) or deque()
            failures.append(now)
            self._failures[address] = failures
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)

    def retry_after(self, address):
        """Seconds until ``address`` may log in again; 0 when it may now."""
        if not self.limit or not self._failures:
            return 0  # no failure anywhere (the usual case): no lock to take
        with self._guard:
            now = self.clock()
            failures = self._recent(address, now)
            if not failures or len(failures) < self.limit:
                return 0
            # Blocked until enough failures leave the window to go below the limit.
            unblocked_at = failures[len(failures) - self.limit] + self.window
            return max(1, math.ceil(unblocked_at - now))

    def _recent(self, address, now):
        """The failures of ``address`` still in the window (caller holds the guard)."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures


def client_address(environ):
    return environ.get("REMOTE_ADDR") or ""


def install(service):
    """Give ``service`` its limiter and the ``record_failed_login`` hook."""
    settings = service.settings
    limiter = LoginRateLimiter(settings["login_rate_limit"], settings["login_rate_window_seconds"])
    service.login_limiter = limiter

    def record_failed_login(address=None):
        """Count a failed login; ``address`` defaults to the current request's."""
        if address is None:
            address = client_address(bottle.request.environ)
        limiter.record_failure(address)

    service.record_failed_login = record_failed_login


def refuse_if_blocked(service, environ):
    """Raise Kinto's 429 for a request with credentials from a blocked address."""
    if not environ.get("HTTP_AUTHORIZATION"):
        return
    wait = service.login_limiter.retry_after(client_address(environ))
    if wait:
        raise errors.too_many_requests(wait)

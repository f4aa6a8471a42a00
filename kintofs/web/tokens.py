"""Single-use pagination tokens of plural DELETE (Kinto's issue #1171).

A paginated DELETE hands out a ``Next-Page`` token; following it deletes the
next page.  Replaying it must not delete another page, so each DELETE token's
nonce is remembered here until it is used or expires.  The memory is the
daemon's own: a token issued by one daemon is refused by another (Kinto with
an in-memory cache behaves the same).
"""

import threading
import time

# Kinto's default pagination_token_validity_seconds.
VALIDITY_SECONDS = 600
# Bound on remembered nonces, so that a flood of paginated DELETEs cannot grow memory.
MAX_TOKENS = 100_000


class SingleUseTokens:
    def __init__(self, validity=VALIDITY_SECONDS, clock=time.monotonic):
        self.validity = validity
        self.clock = clock
        self._expiry = {}  # nonce -> deadline, in issue order
        self._guard = threading.Lock()

    def issue(self, nonce):
        with self._guard:
            self._forget_expired()
            while len(self._expiry) >= MAX_TOKENS:
                del self._expiry[next(iter(self._expiry))]
            self._expiry[nonce] = self.clock() + self.validity

    def consume(self, nonce):
        """True once for a nonce issued less than ``validity`` seconds ago."""
        with self._guard:
            deadline = self._expiry.pop(nonce, None)
            return deadline is not None and deadline > self.clock()

    def _forget_expired(self):
        now = self.clock()
        while self._expiry:
            nonce, deadline = next(iter(self._expiry.items()))
            if deadline > now:
                return
            del self._expiry[nonce]

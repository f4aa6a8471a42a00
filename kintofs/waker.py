"""Waking a thread that sleeps in ``selector.select()`` from another thread.

The request gate and the push sender each run one such loop.  A byte written
to a socketpair makes the reading end readable, so ``select`` returns; the
loop then drains it.  A full pair means the loop is already due to wake.
"""

import selectors
import socket


class Waker:
    """The wake-up pair of one selector loop.  Its key's ``data`` is None."""

    def __init__(self, selector):
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        selector.register(self._reader, selectors.EVENT_READ, None)

    def wake(self):
        """Make the loop's ``select`` return (from any thread)."""
        try:
            self._writer.send(b"\0")
        except OSError:
            pass  # already due to wake (full pair), or stopping

    def drain(self):
        """Read the wake-ups (the loop's own thread), so ``select`` sleeps again."""
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass

"""Push: every stored change, told live to the subscribers that may read it.

``hub.py`` turns changes into events: it reads what changed from the lists
themselves (their change order, the same that answers ``_since``), whatever
made the change (a request, a batch, a hand edit adopted by the watcher,
another process on the same data directory), checks the subscriber's read
permission when the event is sent, and replays what a reconnecting
subscriber missed.  ``sender.py`` writes the events to the subscribers'
sockets from one thread, so that an idle stream costs a socket and a few
objects, never a request worker.  The HTTP side (the stream endpoints, and
taking the connection from cheroot) is in ``kintofs/web/streams.py``.

Nothing here knows about files: the store's lists are read through their
public methods only.
"""

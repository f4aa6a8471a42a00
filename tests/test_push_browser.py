"""A real browser follows a push stream (issue 14).

Headless Chromium, driven by Playwright, opens a page served from another
origin (a tiny http.server on its own port) whose script follows a
collection's stream with ``new EventSource(url + "?_auth=Basic ...")``,
the way a web app would: EventSource cannot send an Authorization header,
and a cross-origin stream is only readable if kintofs answers it with
``Access-Control-Allow-Origin``.  The test writes a record over HTTP, then
edits its file by hand (the daemon's watcher makes that a revision), and
checks that the browser got both, with their ids, actions and data; and
that a second, anonymous EventSource on the same page got nothing until the
collection was made public.

Playwright launches the system's Chromium (``executable_path``): it needs
no browser download.  Without a chromium binary (Debian: ``apt-get install
chromium``, which .ci/run does) or without playwright, the test skips.
"""

import http.server
import json
import os
import shutil
import threading
import time
from urllib.parse import quote, urlencode

import pytest
from conftest import ALICE, Api, assert_status, basic_auth

COLLECTION = "/buckets/b/collections/c"
RECORDS = COLLECTION + "/records"


def find_chromium():
    named = os.environ.get("KFS_CHROMIUM")  # KFS_, not KINTOFS_: those are daemon settings
    if named:
        return shutil.which(named)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary found (Debian: apt-get install chromium; .ci/run installs it)",
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)

# The web app: one EventSource per stream named in the page's query string,
# each stream's events collected into an array the test reads.
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>kintofs push</title>
<script>
const streams = new URLSearchParams(location.search);
window.seen = {};
window.failures = [];
window.sources = [];
for (const [name, url] of streams) {
  const events = window.seen[name] = [];
  const source = new EventSource(url);
  for (const type of ["create", "update", "delete"]) {
    source.addEventListener(type, (event) => events.push({
      type: event.type, id: event.lastEventId, origin: event.origin, data: JSON.parse(event.data),
    }));
  }
  source.onerror = () => window.failures.push(`${name}: error, readyState ${source.readyState}`);
  window.sources.push(source);
}
</script>
"""


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/app.html":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format, *args):
        pass  # quiet


@pytest.fixture
def page_server():
    """The web app's origin: http://127.0.0.1:<its own port>, not kintofs's."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-proxy-server", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


NOT_PROBES = "window.seen.alice.filter((event) => !event.data.uri.endsWith('/probe'))"


def poll(page, expression, check, timeout=15, then=None):
    """Evaluate ``expression`` in ``page`` until ``check(value)`` holds; the value.
    ``then()``, if given, runs after each miss (to write again, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if check(value):
            return value
        if time.monotonic() > deadline:
            failures = page.evaluate("window.failures")
            raise AssertionError(f"the browser has {value!r} (EventSource errors: {failures})")
        if then is not None:
            then()
        time.sleep(0.1)


def write_by_hand(path, document):
    with open(path, "w", encoding="utf-8") as f:  # not atomic, like an editor
        json.dump(document, f)


def test_a_browser_sees_http_writes_and_hand_edits(start_server, page_server, browser):
    daemon = start_server()
    api = Api(daemon, ALICE)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put(COLLECTION), 201)  # alice's alone: anonymous may not read it
    assert_status(api.get(RECORDS), 200)  # the first read makes the records folder
    records = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")

    stream = f"{daemon.url}/events{COLLECTION}"
    streams = {"alice": f"{stream}?_auth={quote(basic_auth(ALICE))}", "anonymous": stream}
    page_url = page_server + "/app.html?" + urlencode(streams)
    assert page_server != daemon.root_url  # the stream is cross-origin for the page
    page = browser.new_page()
    page.goto(page_url)
    poll(page, "window.sources.map((s) => s.readyState)", lambda states: states == [1, 1])

    # A probe edited by hand until the browser sees it: the watcher watches
    # the new records folder a moment after it appears, and a stream is
    # followed a moment after it opens.  From then on nothing is missed.
    attempts = []

    def probe():
        if not attempts or time.monotonic() - attempts[-1] > 1:
            attempts.append(time.monotonic())
            write_by_hand(os.path.join(records, "probe.json"), {"attempt": len(attempts)})

    poll(page, "window.seen.alice.length", lambda count: count > 0, then=probe)
    time.sleep(0.5)  # a probe write still being adopted comes now, not among the events below

    # Over HTTP...
    created = assert_status(api.put(RECORDS + "/r1", json={"data": {"title": "over HTTP"}}), 201)
    created = created.json()["data"]
    poll(page, NOT_PROBES, lambda events: len(events) == 1)
    # ... then by hand, in the record's file.
    with open(os.path.join(records, "r1.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    write_by_hand(os.path.join(records, "r1.json"), dict(on_disk, title="edited by hand"))
    events = poll(page, NOT_PROBES, lambda events: len(events) == 2)

    edited = assert_status(api.get(RECORDS + "/r1"), 200).json()["data"]
    assert edited["title"] == "edited by hand"
    assert edited["last_modified"] > created["last_modified"]
    uri = RECORDS + "/r1"
    assert events == [
        {
            "type": "create",
            "id": str(created["last_modified"]),
            "origin": daemon.root_url,
            "data": {
                "action": "create",
                "uri": uri,
                "resource_name": "record",
                "data": created,
                "timestamp": created["last_modified"],
            },
        },
        {
            "type": "update",
            "id": str(edited["last_modified"]),
            "origin": daemon.root_url,
            "data": {
                "action": "update",
                "uri": uri,
                "resource_name": "record",
                "data": edited,
                "timestamp": edited["last_modified"],
            },
        },
    ]

    # The anonymous stream got none of it; once the collection is public, it
    # gets the next change (so it was following all along).
    assert page.evaluate("window.seen.anonymous") == []
    assert_status(api.patch(COLLECTION, json={"permissions": {"read": ["system.Everyone"]}}), 200)
    public = assert_status(api.put(RECORDS + "/r2", json={"data": {}}), 201).json()["data"]
    anonymous = poll(page, "window.seen.anonymous", lambda events: len(events) == 1)
    assert [(e["type"], e["id"], e["data"]["uri"]) for e in anonymous] == [
        ("create", str(public["last_modified"]), RECORDS + "/r2")
    ]
    assert page.evaluate("window.failures") == []  # no error, no reconnection
    assert page.evaluate("window.sources.map((s) => s.readyState)") == [1, 1]

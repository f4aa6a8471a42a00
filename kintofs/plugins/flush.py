"""``POST /v1/__flush__``: wipe every object (for clients' test suites only)."""
from ..web import errors


def setup(service):
    service.capabilities["flush_endpoint"] = {
        "description": "The __flush__ endpoint can be used to remove all data from all backends.",
        "url": "https://kinto.readthedocs.io/en/latest/api/1.x/flush.html",
    }

    @service.app.route("/v1/__flush__", ["POST"])
    def flush():
        service.store.flush()
        service.memberships.invalidate()  # every daemon on this folder forgets the groups
        return errors.json_response(202, {})

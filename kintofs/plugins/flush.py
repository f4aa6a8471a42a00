"""``POST /v1/__flush__``: wipe every object (for clients' test suites only)."""

from ..web import errors


def setup(service):
    service.add_capability(
        "flush_endpoint",
        {
            "description": "The __flush__ endpoint can be used to remove all data from all backends.",
            "url": "https://kinto.readthedocs.io/en/latest/api/1.x/flush.html",
        },
    )

    def flush(state):
        service.store.flush()
        service.memberships.invalidate()  # every daemon on this folder forgets the groups
        return errors.json_response(202, {})

    service.add_route("/v1/__flush__", ["POST"], flush)

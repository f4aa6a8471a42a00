"""Where a kind of object departs from Kinto's generic resource rules.

:class:`~kintofs.web.resource.ResourceView` calls these at fixed points of
its method semantics.  The defaults are the generic behaviour of buckets,
groups, collections and records; a plugin's kind (accounts) subclasses
:class:`KindHooks` instead of copying the views.
"""

from ..acl.principals import EVERYONE


class KindHooks:
    def before_create(self, view):
        """A plural POST starts (before its body is validated)."""

    def reachable(self, view, object_id):
        """False if this caller must see the stored object ``object_id`` as
        missing (checked after authorization)."""
        return True

    def restrict_list(self, view, visible):
        """The ids a plural GET or DELETE may touch, once authorized:
        ``visible`` is None (every object) or a set of ids."""
        return visible

    def prepare_data(self, view, object_id, data, current):
        """Check (raise a Kinto error) or transform ``data`` before it is
        stored; ``object_id`` is None on a POST that named no id (one is
        generated next), ``current`` the stored object or None on creation."""
        return data

    def writer_principal(self, view, object_id):
        """The principal added to the ``write`` ACE of what the caller writes."""
        return view.state.userid or EVERYONE

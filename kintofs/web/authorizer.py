"""May this caller do this, here: Kinto's permission rules (kintofs.acl)
applied to the objects along one request's path.

The ancestors' ACLs come from the request's own lookup
(:meth:`RequestState.stored`), so a request reads each of them once however
many checks it makes.  Each check tries the caller's principals without its
groups first (:meth:`RequestState.grants`): the group memberships are looked
up only when those are not enough.
"""

from .. import acl


class Authorizer:
    """The permission checks for objects of ``kind`` under ``parent``."""

    def __init__(self, state, kind, parent):
        self.state, self.kind, self.parent = state, kind, tuple(parent)

    def path_acls(self, own_acl=None):
        """ACLs along the path: {kind: acl} for the ancestors and the object."""
        acls = {}
        for depth, (parent_kind, _) in enumerate(self.parent):
            stored = self.state.stored(self.parent[: depth + 1])
            acls[parent_kind] = stored.acl if stored else {}
        if own_acl is not None:
            acls[self.kind] = own_acl
        return acls

    def settings_allow(self, operation):
        """Do ``<kind>_<perm>_principals`` settings grant ``operation`` (acl.rules)?"""
        granted = acl.settings_principals(
            self.state.settings, self.kind, operation, top_level=not self.parent
        )
        if not granted:
            return False
        return self.state.grants(lambda principals: not granted.isdisjoint(principals))

    def allowed(self, permission, own_acl):
        """May the caller use ``permission`` on an object whose ACL is ``own_acl``?"""
        if self.settings_allow(permission):
            return True
        acls = self.path_acls(own_acl)
        return self.state.grants(
            lambda principals: acl.allowed(principals, self.kind, permission, acls)
        )

    def require(self, permission, own_acl):
        """Raise the caller's denial (401 or 403) unless :meth:`allowed`."""
        if not self.allowed(permission, own_acl):
            raise self.state.denied()

    def create_allowed(self):
        """May the caller create an object of this kind here?"""
        if self.settings_allow("create"):
            return True
        if not self.parent:
            return False
        parent_kind, asked, acls = self.parent[-1][0], f"{self.kind}:create", self.path_acls()
        return self.state.grants(
            lambda principals: acl.allowed(principals, parent_kind, asked, acls)
        )

    def require_create(self):
        if not self.create_allowed():
            raise self.state.denied()

    def list_allowed(self, permission, operation=None):
        """May the caller read (or write) every object of the list?"""
        if self.settings_allow(operation or ("list" if permission == "read" else "write")):
            return True
        if not self.parent:
            return False
        parent_kind = self.parent[-1][0]
        asked = "list" if permission == "read" else "write"
        acls = self.path_acls()
        return self.state.grants(
            lambda principals: acl.allowed(principals, parent_kind, asked, acls)
        )

    def visible_ids(self, permission, objects):
        """None if every object is visible, else the ids the caller may see.

        Protocol 9.5: the parent's grant shows all; else the objects (of
        ``objects()``, ``{id: stored}``) whose own ACL grants it; else an empty
        set for those who may create; else a denial.
        """
        if self.list_allowed(permission):
            return None
        principals = self.state.principals
        own = {
            object_id
            for object_id, stored in objects().items()
            if acl.grants_by_own_acl(principals, self.kind, permission, stored.acl)
        }
        if own or self.create_allowed():
            return own
        raise self.state.denied()

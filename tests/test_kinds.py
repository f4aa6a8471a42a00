"""The one table of kinds (kintofs/kinds.py) and what the other layers derive from it."""

import pytest

from kintofs import kinds
from kintofs.acl import rules


def test_uris_and_paths_round_trip():
    path = (("bucket", "b"), ("collection", "c"), ("record", "r1"))
    assert kinds.uri(path) == "/buckets/b/collections/c/records/r1"
    assert kinds.parse_uri("/buckets/b/collections/c/records/r1") == path
    assert kinds.uri((("bucket", "b"), ("history", "h"))) == "/buckets/b/history/h"
    assert kinds.uri((("account", "alice"),)) == "/accounts/alice"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "buckets/b",
        "/buckets",
        "/buckets/b/records/r",
        "/collections/c",
        "/buckets/b/collections",
        "/buckets/b/accounts/a",
        "/nothing/x",
    ],
)
def test_a_uri_of_no_kind_chain_is_none(text):
    assert kinds.parse_uri(text) is None


def test_ancestors_follow_parents():
    assert kinds.ancestors("record") == ("bucket", "collection")
    assert kinds.ancestors("group") == ("bucket",)
    assert kinds.ancestors("bucket") == ()


def test_every_parent_is_a_container_kind():
    for kind in kinds.KINDS.values():
        if kind.parent is not None:
            assert kinds.KINDS[kind.parent].container, kind.name
        assert kinds.of_plural(kind.plural) is kind


def test_inheritance_is_kintos_tree():
    # Kinto's tree, written out once more so that an edit of the table is a conscious one.
    expected = {
        ("bucket", "read"): {"bucket": {"write", "read", "collection:create", "group:create"}},
        ("bucket", "write"): {"bucket": {"write"}},
        ("bucket", "collection:create"): {"bucket": {"write", "collection:create"}},
        ("bucket", "group:create"): {"bucket": {"write", "group:create"}},
        ("bucket", "list"): {"bucket": {"write", "read"}},
        ("bucket", "history:create"): {},
        ("group", "read"): {"bucket": {"write", "read"}, "group": {"write", "read"}},
        ("group", "write"): {"bucket": {"write"}, "group": {"write"}},
        ("collection", "read"): {
            "bucket": {"write", "read"},
            "collection": {"write", "read", "record:create"},
        },
        ("collection", "write"): {"bucket": {"write"}, "collection": {"write"}},
        ("collection", "record:create"): {
            "bucket": {"write"},
            "collection": {"write", "record:create"},
        },
        ("collection", "list"): {"bucket": {"write", "read"}, "collection": {"write", "read"}},
        ("record", "read"): {
            "bucket": {"write", "read"},
            "collection": {"write", "read"},
            "record": {"write", "read"},
        },
        ("record", "write"): {"bucket": {"write"}, "collection": {"write"}, "record": {"write"}},
        ("account", "read"): {"account": {"write", "read"}},
        ("account", "write"): {"account": {"write"}},
        ("history", "read"): {"bucket": {"write", "read"}, "history": {"write", "read"}},
        ("history", "write"): {"bucket": {"write"}, "history": {"write"}},
    }
    assert {
        key: {k: set(v) for k, v in holders.items()} for key, holders in rules.INHERITANCE.items()
    } == expected


def test_implied_permissions_on_the_same_object():
    assert kinds.implied("bucket", "collection:create") == {"collection:create", "read:attributes"}
    assert kinds.implied("collection", "write") == {
        "write",
        "read",
        "read:attributes",
        "record:create",
    }
    assert kinds.implied("record", "write") == {"write", "read"}
    assert kinds.implied("root", "bucket:create") == {"bucket:create"}

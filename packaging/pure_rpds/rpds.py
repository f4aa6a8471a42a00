"""A pure-Python stand-in for rpds-py, used only inside kintofs.pyz.

jsonschema (4.18 and later) and referencing use three persistent data
structures from rpds-py, a compiled (Rust) extension built per CPU and per
Python version. Python cannot import a compiled extension from a zip file, so
packaging/build_pyz.py leaves rpds-py out of kintofs.pyz and puts this module
in its place under the same name. Installs made with pip (a virtualenv, the
container) use the real rpds-py.

Same API and results as rpds-py for what its users call (tests/
test_packaging.py compares both on random operations), but each "update"
copies the whole structure: O(n) where rpds-py shares structure. That is
fine for what kintofs keeps in them: the few dozen JSON schemas of a
registry, the handful of URIs on a resolution path.
"""

from collections.abc import ItemsView, Iterable, KeysView, Mapping, Set, ValuesView

__all__ = ["HashTrieMap", "HashTrieSet", "List"]


class _Persistent:
    """Holds its content in ``_items``, never changed after construction."""

    __slots__ = ("_items",)

    @classmethod
    def _of(cls, items):
        """A new instance around ``items`` (already of the right type)."""
        new = cls.__new__(cls)
        new._items = items
        return new


class HashTrieMap(_Persistent, Mapping):
    """An immutable mapping; ``insert``/``remove``/``update`` return new maps."""

    __slots__ = ()

    def __init__(self, value=(), **kwds):
        items = dict(value)
        items.update(kwds)
        self._items = items

    @classmethod
    def convert(cls, value):
        return value if isinstance(value, cls) else cls(value)

    @classmethod
    def fromkeys(cls, keys, value=None):
        return cls._of(dict.fromkeys(keys, value))

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __contains__(self, key):
        return key in self._items

    def keys(self):
        return KeysView(self)

    def values(self):
        return ValuesView(self)

    def items(self):
        return ItemsView(self)

    def insert(self, key, value):
        return self._of({**self._items, key: value})

    def remove(self, key):
        if key not in self._items:
            raise KeyError(key)
        return self.discard(key)

    def discard(self, key):
        if key not in self._items:
            return self
        items = dict(self._items)
        del items[key]
        return self._of(items)

    def update(self, *maps, **kwds):
        items = dict(self._items)
        for each in maps:
            items.update(each)
        items.update(kwds)
        return self._of(items)

    # rpds-py compares a map with maps of its own type only.
    def __eq__(self, other):
        if not isinstance(other, HashTrieMap):
            return NotImplemented
        return self._items == other._items

    def __hash__(self):
        return hash(frozenset(self._items.items()))

    def __repr__(self):
        return f"HashTrieMap({self._items!r})"

    def __reduce__(self):
        return HashTrieMap, (self._items,)


class HashTrieSet(_Persistent, Set):
    """An immutable set; ``insert``/``remove``/``update`` return new sets."""

    __slots__ = ()

    def __init__(self, value=()):
        self._items = frozenset(value)

    @classmethod
    def _from_iterable(cls, values):
        return cls(values)

    def __contains__(self, value):
        return value in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def insert(self, value):
        return HashTrieSet(self._items | {value})

    def remove(self, value):
        if value not in self._items:
            raise KeyError(value)
        return self.discard(value)

    def discard(self, value):
        return HashTrieSet(self._items - {value}) if value in self._items else self

    def update(self, *iterables):
        return HashTrieSet(self._items.union(*iterables))

    def union(self, other):
        return self | other

    def intersection(self, other):
        return self & other

    def difference(self, other):
        return self - other

    def symmetric_difference(self, other):
        return self ^ other

    def __hash__(self):
        return hash(self._items)

    def __repr__(self):
        return f"HashTrieSet({set(self._items)!r})"

    def __reduce__(self):
        return HashTrieSet, (tuple(self._items),)


class List(_Persistent, Iterable):
    """An immutable list, changed at the front only, as rpds-py's."""

    __slots__ = ()

    def __init__(self, value=(), *more):
        self._items = (value, *more) if more else tuple(value)

    @property
    def first(self):
        if not self._items:
            raise IndexError("empty list has no first element")
        return self._items[0]

    @property
    def rest(self):
        return self._of(self._items[1:])

    def push_front(self, value):
        return self._of((value, *self._items))

    def drop_first(self):
        if not self._items:
            raise IndexError("empty list has no first element")
        return self.rest

    def __iter__(self):
        return iter(self._items)

    def __reversed__(self):
        return reversed(self._items)

    def __len__(self):
        return len(self._items)

    def __eq__(self, other):
        if not isinstance(other, List):
            return NotImplemented
        return self._items == other._items

    def __hash__(self):
        return hash(self._items)

    def __repr__(self):
        return f"List({list(self._items)!r})"

    def __reduce__(self):
        return List, (self._items,)

"""Querystring semantics of Kinto's plural endpoints (protocol doc, section 8).

Pure functions, independent of HTTP and storage: parse a querystring into a
`Query`, then filter, sort, paginate, project and count plain JSON objects.

Values are compared with one total order, shared by filters, sorting and
pagination tokens:
null < strings < numbers < booleans < arrays < objects < missing field.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import itertools
import json
import math
import operator
import re
import uuid
from dataclasses import dataclass

ID_FIELD = "id"
MODIFIED_FIELD = "last_modified"
DELETED_FIELD = "deleted"

# Polling parameters and the comparison they stand for on last_modified.
TIMESTAMP_PARAMS = {"_since": "gt", "_before": "lt", "_to": "lt"}
# Parameters typed as integers by Kinto's querystring schema.
INTEGER_PARAMS = ("_before", "_limit", "_since", "_to", MODIFIED_FIELD)

OPERATORS = (
    "lt",
    "min",
    "max",
    "not",
    "eq",
    "gt",
    "in",
    "exclude",
    "like",
    "has",
    "contains_any",
    "contains",
)
FILTER_NAME = re.compile(r"({})_([\w.]+)".format("|".join(OPERATORS)))
SORT_ITEM = re.compile(r"([-+]?)([\w.]+)")
TIMESTAMP_STRING = re.compile(r'[0-9]+|"[0-9]+"')

MAX_INTEGER = 2**63
# Query values (and token contents) nested deeper than this are not JSON to us.
MAX_VALUE_DEPTH = 100
ONE_DAY_MS = 24 * 3600 * 1000
TOKEN_ERROR = "_token has invalid content"

COMPARISONS = {
    "eq": operator.eq,
    "not": operator.ne,
    "lt": operator.lt,
    "max": operator.le,
    "gt": operator.gt,
    "min": operator.ge,
}


class _Missing:
    """Marker for an absent field; it sorts after every JSON value."""

    def __repr__(self):
        return "MISSING"


MISSING = _Missing()


class QueryError(ValueError):
    """A bad querystring. The HTTP layer turns it into Kinto's 400 errno 107."""

    location = "querystring"

    def __init__(self, name, description):
        self.name = name
        self.description = description
        prefix = f"{name} in querystring" if name else "querystring"
        super().__init__(f"{prefix}: {description}")


@dataclass(frozen=True)
class Filter:
    """One condition: `operator` is one of OPERATORS, `field` a dotted path."""

    field: str
    operator: str
    value: object


@dataclass
class Query:
    """A parsed querystring; see parse_query()."""

    filters: list
    sort: list
    limit: int | None
    token: str | None
    fields: list | None
    includes_tombstones: bool
    deprecated_to: bool
    since: int | None


@dataclass
class Page:
    """One page of results; `limit` is the effective limit (for Next-Page)."""

    objects: list
    next_token: str | None
    limit: int


# ---------------------------------------------------------------- values


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _loads(text):
    """json.loads without NaN and infinities (they would break the total order)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _too_deep(value, limit=MAX_VALUE_DEPTH):
    """Whether arrays and objects nest deeper than `limit` in a JSON value."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _json_value(raw):
    """Parse a raw value as JSON, keeping it as a string when that fails.

    A value nested deeper than MAX_VALUE_DEPTH stays a string too, as one too
    deep for json.loads does: comparing it (recursive sort keys) could
    otherwise exhaust the stack. No stored object nests that deep by default.
    A list (the values of a repeated parameter) is returned unchanged, as Kinto does.
    """
    if not isinstance(raw, str):
        return raw
    try:
        value = _loads(raw)
    except (ValueError, RecursionError):
        return raw
    return raw if _too_deep(value) else value


def _typed_json_value(raw):
    """Like _json_value, but booleans stay raw strings (Kinto's typed fields)."""
    value = _json_value(raw)
    return raw if isinstance(value, bool) else value


def _comma_list(raw):
    """Split a comma-separated value; a repeated parameter is already a list."""
    return raw.split(",") if isinstance(raw, str) else list(raw)


def lookup(obj, path):
    """Value at a dotted path, or MISSING. The longest existing key prefix wins.

    `a.b.c` is the key `a.b.c` if obj has it, else the longest key among
    `a.b`, `a` that obj has, then the rest of the path inside its value (a dict).
    """
    return _getter(path)(obj)


# A dotted path with at most this many dots and characters prepares its few
# candidate keys once (their hashes are then cached); a longer one is looked
# up by scanning each object's keys, so that no path costs more than linear time.
_FEW_DOTS = 8
_SHORT_PATH = 1000


def _dots(path):
    """Positions of the dots in path, in order."""
    found, at = [], path.find(".")
    while at >= 0:
        found.append(at)
        at = path.find(".", at + 1)
    return found


def _getter(path):
    """obj -> lookup(obj, path), with the path prepared once.

    A plain key is one dict access. A dotted path costs, per object, time
    linear in the object and the path whatever the path (thousands of dots
    included), where splitting and re-joining parts would be quadratic.
    """
    if "." not in path:
        return lambda obj: obj.get(path, MISSING)
    dots = _dots(path)
    if len(dots) <= _FEW_DOTS and len(path) <= _SHORT_PATH:
        return _prepared_getter(path, dots)
    dot_set = frozenset(dots)
    return lambda obj: _scan_lookup(obj, path, dot_set)


def _prepared_getter(path, dots):
    """lookup for a short path: every candidate key is a string made once."""
    # Where a level's part of the path may start, that part, and its dotted
    # prefixes (longest first) with where the rest starts.
    levels = {}
    for start in [0] + [dot + 1 for dot in dots]:
        prefixes = [(path[start:dot], dot + 1) for dot in reversed(dots) if dot >= start]
        levels[start] = (path[start:], prefixes)

    def get(obj):
        start = 0
        while True:
            whole, prefixes = levels[start]
            if whole in obj:
                return obj[whole]
            for head, rest in prefixes:
                if head in obj:
                    obj, start = obj[head], rest
                    break
            else:
                return MISSING
            if not isinstance(obj, dict):
                return MISSING

    return get


def _scan_lookup(obj, path, dots):
    """lookup for a long path: one pass over each level's keys (linear in the object)."""
    size, start = len(path), 0
    while True:
        best_end, best = -1, None
        for key in obj:
            end = start + len(key)
            if end == size:
                if path.startswith(key, start):
                    return obj[key]
            elif end > best_end and end in dots and path.startswith(key, start):
                best_end, best = end, key
        if best is None:
            return MISSING
        obj, start = obj[best], best_end + 1
        if not isinstance(obj, dict):
            return MISSING


def sort_key(value):
    """A tuple ordering JSON values (and MISSING) in Kinto's total order.

    Equal keys mean equal values: type-sensitive (1 != "1", 1 != true) but
    2 == 2.0; arrays and objects compare structurally.
    """
    if value is MISSING:
        return (6,)
    if value is None:
        return (0,)
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, bool):  # before numbers: bool is an int in Python
        return (3, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, list):
        return (4, tuple(sort_key(item) for item in value))
    if isinstance(value, dict):
        return (5, tuple(sorted((key, sort_key(item)) for key, item in value.items())))
    raise TypeError(f"not a JSON value: {value!r}")


# ---------------------------------------------------------------- parsing


def _group_params(params):
    """Name (stripped) -> raw value; a repeated name gets the list of its values."""
    grouped = {}
    for name, value in params:
        name = name.strip()
        if name not in grouped:
            grouped[name] = value
        elif isinstance(grouped[name], list):
            grouped[name].append(value)
        else:
            grouped[name] = [grouped[name], value]
    return grouped


def _integer_param(name, raw):
    """Kinto's integer query fields: an int in [0, 2**63], or the empty-ish value."""
    value = _typed_json_value(raw)
    if value != 0 and not value:
        return value  # null, "" ...: treated as "not given" by Kinto's schema
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise QueryError(name, f'"{value}" is not a number') from None
    if number < 0:
        raise QueryError(name, f"{number} is less than minimum value 0")
    if number > MAX_INTEGER:
        raise QueryError(name, f"{number} is greater than maximum value {MAX_INTEGER}")
    return number


def _id_param(raw):
    """Kinto's `id` query field: a string (or an empty-ish value)."""
    value = _typed_json_value(raw)
    if value and not isinstance(value, str):
        raise QueryError(ID_FIELD, f"{value} is not a string: {{'id': ''}}")
    return value


def _typed_values(grouped):
    """Validate the parameters that Kinto's querystring schema types."""
    typed = {}
    for name in sorted(grouped):  # Kinto reports errors sorted by name
        if name in INTEGER_PARAMS:
            typed[name] = _integer_param(name, grouped[name])
        elif name == ID_FIELD:
            typed[name] = _id_param(grouped[name])
    return typed


def _filter_value(name, raw):
    """Parse a filter value: in_/exclude_ split on commas, contains_ as a list."""
    if name.startswith("contains_"):
        value = _json_value(raw)
        return value if isinstance(value, list) else [value]
    if name.startswith(("in_", "exclude_")):
        return [_json_value(piece) for piece in _comma_list(raw)]
    return _json_value(raw)


def _timestamp(value, now_ms):
    """A valid timestamp (integer or "integer", >= 0, < now + 24h) or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not TIMESTAMP_STRING.fullmatch(value):
            return None
        try:
            value = int(value.strip('"'))
        except ValueError:  # more digits than int() converts: out of range anyway
            return None
    if not isinstance(value, (int, float)):
        return None
    if not 0 <= int(value) < now_ms + ONE_DAY_MS:
        return None
    return value


def _timestamp_filter_value(operator_, value, now_ms):
    """Validated (and normalized) value of a last_modified filter, or None."""
    if operator_ in ("in", "exclude"):
        return None  # Kinto 26 checks the whole list as one timestamp: never valid
    stamp = _timestamp(value, now_ms)
    if stamp is None:
        return None
    return value if operator_ in ("like", "has") else stamp


def _valid_members(field, values):
    """in_/exclude_ on id need strings, on last_modified integers."""
    if field == ID_FIELD:
        return all(isinstance(v, str) for v in values)
    if field == MODIFIED_FIELD:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    return True


def _has_nul(value):
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _known(field, known):
    return known is None or field.split(".")[0] in known


def _build_filter(name, value, now_ms, known):
    """One field filter, validated with Kinto's checks in Kinto's order."""
    match = FILTER_NAME.fullmatch(name)
    operator_, field = match.groups() if match else ("eq", name)
    if not _known(field, known):
        raise QueryError(name, f"Unknown filter field '{name}'")
    invalid = QueryError(name, f"Invalid value for {name}")
    if operator_ == "like" and not isinstance(value, str):
        raise invalid
    if operator_ in ("in", "exclude") and not _valid_members(field, value):
        raise invalid
    if "\x00" in field or _has_nul(value):
        raise QueryError(name, "Invalid character 0x00")
    if field == MODIFIED_FIELD:
        value = _timestamp_filter_value(operator_, value, now_ms)
        if value is None:
            raise invalid
    if field in (ID_FIELD, MODIFIED_FIELD) and operator_ in ("contains", "contains_any"):
        raise QueryError(name, f"Field '{field}' is not an array")
    if field == ID_FIELD and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ids are strings: not_id=1 means "1"
    return Filter(field, operator_, value)


def _extract_filters(grouped, typed, now_ms, known):
    """Filters from every non-control parameter, plus _since/_before/_to."""
    filters = []
    for name, raw in grouped.items():
        value = typed[name] if name in typed else _filter_value(name, raw)
        if name in TIMESTAMP_PARAMS:
            if value is None:
                continue  # "null" means not specified
            if _timestamp(value, now_ms) is None:
                raise QueryError(name, f"Invalid value for {name}")
            filters.append(Filter(MODIFIED_FIELD, TIMESTAMP_PARAMS[name], value))
        elif not name.startswith("_"):
            filters.append(_build_filter(name, value, now_ms, known))
    return filters


def _extract_sort(raw, known, tiebreak):
    """_sort items as (field, +1/-1), with Kinto's final tie-breaker."""
    sort = []
    for item in _comma_list(raw) if raw is not None else []:
        match = SORT_ITEM.fullmatch(item.strip())
        if not match:
            continue  # e.g. the empty item of a trailing comma
        sign, field = match.groups()
        if not _known(field, known):
            raise QueryError(None, f"Unknown sort field '{field}'")
        sort.append((field, -1 if sign == "-" else 1))
    if tiebreak != MODIFIED_FIELD:  # permissions endpoint: never by last_modified
        sort = [item for item in sort if item[0] != MODIFIED_FIELD]
    if tiebreak not in [field for field, _ in sort]:
        sort.append((tiebreak, -1))
    return sort


def _extract_fields(raw, known):
    """_fields, with id and last_modified always added; None when absent."""
    fields = [field for field in _comma_list(raw) if field] if raw is not None else []
    if not fields:
        return None
    if known is not None:
        unknown = sorted({field.split(".")[0] for field in fields} - known)
        if unknown:
            error = QueryError(
                "Invalid _fields parameter", f"Fields {','.join(unknown)} do not exist"
            )
            error.location = "body"  # sic: Kinto reports this one "in body"
            raise error
    return fields + [ID_FIELD, MODIFIED_FIELD]


def _extract_token(raw):
    """The raw _token, checked now so that every request with a bad one fails."""
    if isinstance(raw, list):
        raise QueryError(None, TOKEN_ERROR)
    if not raw:
        return None
    _token_object(raw)
    return raw


def _since_value(filters):
    """Lower bound given by _since / gt_last_modified, if any."""
    bounds = [f.value for f in filters if f.field == MODIFIED_FIELD and f.operator == "gt"]
    return int(max(bounds)) if bounds else None


def parse_query(params, *, now_ms, strict_fields=None, default_sort_tiebreak=MODIFIED_FIELD):
    """Parse (name, value) pairs into a Query, or raise QueryError.

    strict_fields: known top-level fields of a strict resource (None: schemaless).
    default_sort_tiebreak: "uri" for the permissions endpoint, which also drops
    every sort item and filter on last_modified (after validating them).
    """
    grouped = _group_params(params)
    known = None
    if strict_fields is not None:
        known = set(strict_fields) | {ID_FIELD, MODIFIED_FIELD, DELETED_FIELD}
    typed = _typed_values(grouped)
    filters = _extract_filters(grouped, typed, now_ms, known)
    limit = typed.get("_limit")
    sort = _extract_sort(grouped.get("_sort"), known, default_sort_tiebreak)
    fields = _extract_fields(grouped.get("_fields"), known)
    token = _extract_token(grouped.get("_token"))
    tombstones = any(name in grouped for name in TIMESTAMP_PARAMS)
    tombstones = tombstones or any(f.field == MODIFIED_FIELD for f in filters)
    if default_sort_tiebreak != MODIFIED_FIELD:
        filters = [f for f in filters if f.field != MODIFIED_FIELD]
        tombstones = False
    return Query(
        filters=filters,
        sort=sort,
        limit=limit if isinstance(limit, int) and limit > 0 else None,
        token=token,
        fields=fields,
        includes_tombstones=tombstones,
        deprecated_to="_to" in grouped,
        since=_since_value(filters),
    )


def parse_fields(params, *, strict_fields=None):
    """Only _fields, for object GET (Kinto's object querystring has nothing else)."""
    known = None
    if strict_fields is not None:
        known = set(strict_fields) | {ID_FIELD, MODIFIED_FIELD, DELETED_FIELD}
    return _extract_fields(_group_params(params).get("_fields"), known)


# ---------------------------------------------------------------- filtering


def like_matcher(pattern):
    """text -> whether it matches Kinto's like_ pattern, case-insensitively.

    `*` matches any run of characters (none included); a pattern without any
    `*` matches anywhere in the text (a substring). Every other character is
    literal. Case is ignored by comparing the str.lower() of both sides, as
    SQL's ILIKE (Kinto's PostgreSQL backend) does.

    No backtracking: the pieces between the stars are looked for in order
    with str.find; the first piece must start the text, the last must end it,
    and no two pieces overlap. The time is linear in the text and the pattern
    (a fixed-string search per piece), whatever the number of stars.
    """
    if "*" not in pattern:
        pattern = f"*{pattern}*"
    first, *middle, last = pattern.lower().split("*")
    middle = [piece for piece in middle if piece]  # `**` is `*`
    fixed = len(first) + len(last)
    if not fixed and len(middle) == 1:  # `*x*`, and a pattern without stars
        needle = middle[0]
        return lambda text: needle in text.lower()

    def match(text):
        text = text.lower()
        if len(text) < fixed or not text.startswith(first) or not text.endswith(last):
            return False
        position, end = len(first), len(text) - len(last)
        for piece in middle:  # each search starts where the previous piece ended
            found = text.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    return match


def _contains(value, wanted_keys, every):
    """value is an array holding every (or any) of the wanted sort keys (a frozenset).

    Set operations keep this linear in the array, however many values are wanted.
    """
    if not isinstance(value, list):
        return False
    present = {sort_key(item) for item in value}
    return wanted_keys <= present if every else not wanted_keys.isdisjoint(present)


def _compile_filter(flt):
    """A predicate for one filter, with the filter's own value prepared once."""
    get = _getter(flt.field)
    op, value = flt.operator, flt.value
    if op == "has":
        wanted = bool(value)
        return lambda obj: (get(obj) is not MISSING) == wanted
    if op == "like":
        like = like_matcher(value)
        return lambda obj: isinstance(found := get(obj), str) and like(found)
    if op in ("contains", "contains_any"):
        keys, every = frozenset(sort_key(item) for item in value), op == "contains"
        return lambda obj: _contains(get(obj), keys, every)
    if (
        op in ("in", "exclude")
        and all(type(item) is str for item in value)
        and "." not in flt.field
    ):
        # The common case (in_status=a,b): a plain set of strings.
        strings, wanted, field = frozenset(value), op == "in", flt.field
        return lambda obj: (type(found := obj.get(field)) is str and found in strings) == wanted
    if op in ("in", "exclude"):
        keys, wanted = frozenset(sort_key(item) for item in value), op == "in"
        return lambda obj: (_ascending_key(get(obj)) in keys) == wanted
    compare, target = COMPARISONS[op], sort_key(value)
    return lambda obj: compare(_ascending_key(get(obj)), target)


def compile_filters(filters):
    """One predicate for all filters (a missing field is the greatest value)."""
    predicates = [_compile_filter(flt) for flt in filters]
    if not predicates:
        return lambda obj: True
    if len(predicates) == 1:
        return predicates[0]
    return lambda obj: all(predicate(obj) for predicate in predicates)


def matches(obj, filters):
    """True when obj satisfies every filter."""
    return compile_filters(filters)(obj)


# ---------------------------------------------------------------- ordering


NEWEST_FIRST = [(MODIFIED_FIELD, -1)]


def _total_order(sort):
    """Kinto's sort plus a last `id` tie-breaker, so that no two objects tie."""
    sort = list(sort)
    if ID_FIELD in [field for field, _ in sort]:
        return sort
    direction = sort[-1][1] if sort else -1
    return sort + [(ID_FIELD, direction)]


class _Descending:
    """Inverts the order of a value Python cannot negate (strings, arrays, objects)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return self.value == other.value

    def __lt__(self, other):
        return self.value > other.value

    def __gt__(self, other):
        return self.value < other.value

    def __le__(self, other):
        return self.value >= other.value

    def __ge__(self, other):
        return self.value <= other.value

    def __hash__(self):
        return hash(self.value)


def _ascending_key(value):
    """sort_key, with the common scalar types first (this runs per object and field)."""
    kind = type(value)
    if kind is str:
        return (1, value)
    if kind is int or kind is float:
        return (2, value)
    return sort_key(value)


def _descending_key(value):
    """A key whose ascending order is the descending order of sort_key.

    Numbers and booleans are negated, so that their tuples compare in C;
    only strings, arrays and objects need the _Descending wrapper.
    """
    kind = type(value)
    if kind is int or kind is float:
        return (-2, -value)
    if kind is str:
        return (-1, _Descending(value))
    key = sort_key(value)
    if len(key) == 1:
        return (-key[0],)
    rank, inner = key
    return (-rank, -inner) if rank == 3 else (-rank, _Descending(inner))


def _field_key(field, direction):
    """obj -> the key of one sort field, in its direction."""
    convert = _ascending_key if direction > 0 else _descending_key
    if "." not in field:
        return lambda obj: convert(obj.get(field, MISSING))
    get = _getter(field)
    return lambda obj: convert(get(obj))


def _order_key(order):
    """obj -> a tuple that sorts objects in `order` (smallest first).

    A field repeated in `order` (`_sort=a,-a,a,...`) counts once, at its first
    place: objects tied there have equal values, so its later places tie too.
    The fields' keys are laid end to end in one flat tuple, which compares
    about twice as fast as a tuple of tuples; the order is the same, as the
    length of a field's key follows from its first item (the type's rank).
    """
    first_places: dict[str, int] = {}
    for field, direction in order:
        first_places.setdefault(field, direction)
    keys = [_field_key(field, direction) for field, direction in first_places.items()]
    if len(keys) == 1:
        return keys[0]
    if len(keys) == 2:
        first, second = keys
        return lambda obj: (*first(obj), *second(obj))
    if len(keys) == 3:
        first, second, third = keys
        return lambda obj: (*first(obj), *second(obj), *third(obj))
    return lambda obj: tuple(itertools.chain.from_iterable(key(obj) for key in keys))


def sort_objects(objects, sort):
    """A new list in Kinto's order (missing values last ascending, first descending)."""
    return sorted(objects, key=_order_key(_total_order(sort)))


def in_newest_first_order(query):
    """Whether the query's order is a list's natural one (-last_modified, then -id)."""
    return query.sort == NEWEST_FIRST


class SortedObjects:
    """A list's live objects in one sort order, kept in it as they change:
    a sorted page costs a binary search and the page, not a sort of the list.

    Holds :class:`~kintofs.fsstore.base.Stored` objects (anything with a
    ``.data``), one reference each; built and updated by the list that owns
    it (``ObjectList.derived``).
    """

    __slots__ = ("_order_key", "_key", "_sorted")

    def __init__(self, sort, stored_objects):
        self._order_key = order_key = _order_key(_total_order(sort))
        self._key = lambda stored: order_key(stored.data)
        self._sorted = sorted(stored_objects, key=self._key)

    def __len__(self):
        return len(self._sorted)

    def update(self, changes):
        """``(previous, current)`` Stored pairs (None where absent)."""
        key, ordered = self._key, self._sorted
        for previous, current in changes:
            if previous is not None:
                # Keys are unique (the order ends with the id): one place.
                index = bisect.bisect_left(ordered, key(previous), key=key)
                if index == len(ordered) or ordered[index] is not previous:
                    index = _position(ordered, previous.data["id"])  # a key changed in place
                if index is not None:
                    del ordered[index]
            if current is not None:
                bisect.insort(ordered, current, key=key)

    def after(self, cursor=None):
        """The objects' data in order, strictly after ``cursor`` (the sort
        values of a token's object), from a copy that later changes leave as
        it is (copying references is cheap; reading on can stop after one page)."""
        if cursor is None:
            start = 0
        else:
            start = bisect.bisect_right(self._sorted, self._order_key(cursor), key=self._key)
        return (stored.data for stored in self._sorted[start:])


def _position(ordered, object_id):
    """Where the object ``object_id`` is in ``ordered``, found by walking (None if absent)."""
    return next((i for i, stored in enumerate(ordered) if stored.data["id"] == object_id), None)


# ---------------------------------------------------------------- pagination


def _encode_token(obj, order):
    """Opaque url-safe token holding the sort values of the page's last object."""
    last = {}
    for field, _ in order:
        value = lookup(obj, field)
        if value is not MISSING:
            last[field] = value
    payload = {"last_object": last, "nonce": uuid.uuid4().hex}
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _token_payload(token):
    """The JSON object inside a token; QueryError when there is none."""
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
        data = _loads(text)
    except (ValueError, RecursionError):
        raise QueryError(None, TOKEN_ERROR) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("last_object"), dict)
        or _too_deep(data["last_object"])
    ):
        raise QueryError(None, TOKEN_ERROR)
    return data


def token_nonce(token):
    """The nonce that makes a token unique (None if it has none)."""
    nonce = _token_payload(token).get("nonce")
    return nonce if isinstance(nonce, str) else None


def resume_timestamp(query):
    """last_modified of the object a token resumes after (None without a token)."""
    if not query.token:
        return None
    return _token_payload(query.token)["last_object"].get(MODIFIED_FIELD)


def _token_object(token):
    """The sort values of the object a token resumes after; QueryError when
    it is not a valid token."""
    last = _token_payload(token)["last_object"]
    stamp = last.get(MODIFIED_FIELD, 0)
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
        raise QueryError(None, TOKEN_ERROR)
    return last


def cursor(query):
    """The sort values of the object the query's token resumes after (None without one)."""
    return _token_object(query.token) if query.token else None


def effective_limit(query, paginate_by, max_fetch=10000):
    """Page size: _limit capped by paginate_by, and always by max_fetch."""
    limit = query.limit or paginate_by
    if limit and paginate_by:
        limit = min(limit, paginate_by)
    return min(limit, max_fetch) if limit else max_fetch


def _first_after(objects, order, after, count, presorted):
    """The `count` first objects in `order` strictly after the object `after`, in order.

    Unsorted input is ranked on the first sort field alone (cheap keys that
    compare in C); full keys are computed only for the few objects that can
    make the page: those up to the count-th smallest first key, ties included.
    """
    key = _order_key(order)
    cursor = None if after is None else key(after)
    if presorted:
        if cursor is not None:
            objects = (obj for obj in objects if key(obj) > cursor)
        return list(itertools.islice(objects, count))
    lead = _field_key(*order[0])
    if cursor is None:
        ranked = [(lead(obj), obj) for obj in objects]
    else:
        start = lead(after)
        ranked = [
            (first, obj)
            for obj in objects
            if (first := lead(obj)) > start or (first == start and key(obj) > cursor)
        ]
    if len(ranked) > count:
        threshold = heapq.nsmallest(count, [first for first, _ in ranked])[-1]
        ranked = [(first, obj) for first, obj in ranked if first <= threshold]
    return sorted((obj for _, obj in ranked), key=key)[:count]


def paginate(objects, query, *, paginate_by=None, max_fetch=10000, presorted=False):
    """Filter, resume after the token (keyset), order, cut and project one page.

    `objects` may be any iterable.  With `presorted`, it already comes in the
    query's order, and reading stops as soon as the page is full.
    """
    order = _total_order(query.sort)
    after = cursor(query)
    limit = effective_limit(query, paginate_by, max_fetch)
    predicate = compile_filters(query.filters)
    found = _first_after(filter(predicate, objects), order, after, limit + 1, presorted)
    page = found[:limit]
    next_token = None
    if len(found) > limit and page:
        next_token = _encode_token(page[-1], order)
    if query.fields:
        page = list(map(projector(query.fields), page))
    return Page(objects=page, next_token=next_token, limit=limit)


# ---------------------------------------------------------------- counting, projection


def _is_tombstone(obj):
    return obj.get(DELETED_FIELD) is True and set(obj) <= {ID_FIELD, MODIFIED_FIELD, DELETED_FIELD}


def count(objects, query):
    """Number of live objects matching the filters (tombstones never count)."""
    predicate = compile_filters(query.filters)
    return sum(1 for obj in objects if not _is_tombstone(obj) and predicate(obj))


def _copy_path(source, parts, target):
    """Copy the path `parts` of source into target: `a.b` keeps only b inside a dict a."""
    last = len(parts) - 1
    for depth, head in enumerate(parts):
        if head not in source:
            return
        value = source[head]
        if depth == last or not isinstance(value, dict):
            target[head] = value
            return
        if target.get(head) is value:
            return  # the whole of `head` is already kept
        source, target = value, target.setdefault(head, {})


def projector(fields):
    """obj -> project(obj, fields), with the paths split once (not once per object)."""
    paths = []
    for path in dict.fromkeys([*fields, ID_FIELD, MODIFIED_FIELD]):
        parts = path.split(".")
        if len(parts) > 1 and not parts[-1]:
            parts.pop()  # `a.` is `a`, as a path ends at its last dot
        paths.append(parts)

    def project_one(obj):
        result: dict = {}
        for parts in paths:
            _copy_path(obj, parts, result)
        return result

    return project_one


def project(obj, fields):
    """Subset of obj for _fields; id and last_modified are always kept (shallow copy)."""
    return projector(fields)(obj)

"""``json.dumps`` with its encoder made once instead of on every call.

``json.dumps(value, separators=...)`` builds a ``JSONEncoder`` and, inside
it, the C encoder, then throws both away: a third of what encoding a small
response body costs.  :func:`dumps_function` builds them once and gives the
very same text.  It leaves out the circular-reference check, so that one
encoder serves every thread at once: what is encoded here comes from JSON
(stored objects, request bodies) or is built by the code, and holds no cycle.
"""

import json
from json import encoder as _encoder

# A document of every JSON type, to check the fast encoder against json.dumps.
_SAMPLE = {
    "s": 'é "\\\n\u2028\U0001f600',
    "i": -12,
    "f": 1.5,
    "e": 1e300,
    "b": [True, False, None],
    "o": {"nested": [{}, []]},
}


def dumps_function(*, ensure_ascii=True, separators=(", ", ": ")):
    """A function of one value giving ``json.dumps(value, ensure_ascii=...,
    separators=...)``; the plain encoder where the C one is missing."""
    reference = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=separators)
    if _encoder.c_make_encoder is None:
        return reference.encode
    item_separator, key_separator = separators
    encode_string = _encoder.encode_basestring_ascii if ensure_ascii else _encoder.encode_basestring
    make = _encoder.c_make_encoder
    # The arguments JSONEncoder.iterencode gives it, but no markers (no cycle check).
    encode = make(
        None, reference.default, encode_string, None, key_separator, item_separator,
        False, False, True,
    )  # fmt: skip

    def dumps(value):
        return "".join(encode(value, 0))

    if dumps(_SAMPLE) != reference.encode(_SAMPLE):  # another Python's C encoder
        return reference.encode
    return dumps

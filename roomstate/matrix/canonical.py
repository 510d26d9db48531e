"""Canonical JSON, as the Matrix specification's appendix "Canonical JSON" defines it.

"The shortest UTF-8 JSON encoding with dictionary keys lexicographically sorted
by Unicode codepoint. Numbers in the JSON must be integers in the range
``[-(2**53)+1, (2**53)-1]``, represented without exponents or decimal places."
The encoding itself is matrix-org's ``canonicaljson`` package (the spec's own
reference code: ``json.dumps(ensure_ascii=False, separators=(',', ':'),
sort_keys=True)``). What it does not check is checked here, with an
:class:`~roomstate.errors.InvalidEventError` that names the field path
(``content.foo.bar``; list items as ``prev_events[0]``):

- strict mode (room versions with ``strict_canonical_json``, v6 and later): an
  integer outside the range above, or any float, is refused. Room versions 1–5
  "might not be fully compliant with these restrictions" and servers "SHOULD be
  capable of handling" such JSON, so there both are encoded as Python's ``json``
  encodes them (floats by ``repr``), as Synapse does;
- in every mode: a value JSON has no encoding for (NaN and the infinities, a
  set, bytes, a non-string key, a string holding a lone surrogate).
"""
from collections.abc import Mapping

from canonicaljson import encode_canonical_json

from ..errors import InvalidEventError

__all__ = ["MAX_INT", "MIN_INT", "check_json", "encode"]

MIN_INT = -(2**53) + 1
MAX_INT = 2**53 - 1


def encode(value, strict=True, path=""):
    """The canonical JSON bytes of ``value``; InvalidEventError naming the bad field.

    ``strict`` refuses floats and integers out of range (room versions 6 and
    later); ``path`` names ``value`` itself in an error ("" for an event: its
    fields are then named from the top, ``content.foo``).
    """
    check_json(value, strict, path)
    try:
        return encode_canonical_json(value)
    except (TypeError, ValueError, UnicodeEncodeError) as e:  # pragma: no cover - check_json refuses these first
        raise InvalidEventError(path or "event", f"has no canonical JSON encoding: {e}") from None


def check_json(value, strict, path):
    """Raise InvalidEventError naming the first field of ``value`` with no canonical encoding."""
    if not path:
        path = "event"
        prefix = ""
    else:
        prefix = path + "."
    t = type(value)
    if t is str:
        if not value.isascii():
            _check_unicode(value, path)
    elif t is int:
        if strict and not MIN_INT <= value <= MAX_INT:
            raise InvalidEventError(path, f"integer {value} is outside [-(2**53)+1, 2**53-1]")
    elif t is dict or (t is not bool and isinstance(value, Mapping)):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEventError(path, f"has a key that is not a string: {k!r}")
            check_json(v, strict, prefix + k)
    elif t is list or t is tuple:
        for i, v in enumerate(value):
            check_json(v, strict, f"{path}[{i}]")
    elif t is bool or value is None:
        pass
    elif t is float:
        if strict:
            raise InvalidEventError(path, f"floats are not allowed in canonical JSON, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidEventError(path, f"{value!r} has no JSON encoding")
    elif isinstance(value, str):
        check_json(str(value), strict, path)
    elif isinstance(value, int):
        check_json(int(value), strict, path)
    elif isinstance(value, float):
        check_json(float(value), strict, path)
    else:
        raise InvalidEventError(path, f"{type(value).__name__} is not a JSON value")


def _check_unicode(s, path):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEventError(path, "string holds a lone surrogate: it has no UTF-8 encoding") from None

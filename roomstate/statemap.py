"""Read-only views of a state, backed by numeric entries."""
from collections.abc import ItemsView, KeysView, Mapping, ValuesView

import numpy as np

from . import _core, _names


class StateMap(_names.StateView, Mapping):
    """A read-only ``Mapping[(type, state_key), event_id]``.

    ``entries`` is the numpy structured array of ``(type, state_key, event)``
    NIDs sorted by key; strings are looked up only for what is read — one key
    by binary search, or every entry at once (from the NID caches in one C
    loop, what they miss in bulk) when the map is iterated.  Key tuples are
    shared between maps of the same store.
    """

    __slots__ = ()  # the entries, the reader and the listed strings are StateView's, at the C level

    def __len__(self):
        return len(self.entries)

    def _index(self, key):
        """The position of ``key`` in the entries (and the string lists), or -1."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return -1
        type_, state_key = key
        if not isinstance(type_, str) or not isinstance(state_key, str):
            return -1
        tnid, knid = self._reader.key_nids(type_, state_key)
        if not tnid or not knid:
            return -1
        return _core.find(self.entries, tnid, knid)

    def _event_id(self, i):
        return self._reader.event_ids([int(self.entries[i]["event"])])[0]

    def __contains__(self, key):
        return self._index(key) >= 0

    def keys(self):
        return _Keys(self)

    def items(self):
        return _Items(self)

    def values(self):
        return _Values(self)

    def event_ids(self):
        """Event IDs of every entry, in key order."""
        return list(self._strings()[1])

    def to_dict(self):
        return dict(zip(*self._strings()))

    def __eq__(self, other):
        if isinstance(other, StateMap) and other._reader is self._reader:
            a, b = self.entries, other.entries
            return len(a) == len(b) and bool(np.array_equal(a, b))
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other.items())
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        n = len(self)
        if n <= 8:
            return f"StateMap({self.to_dict()!r})"
        return f"StateMap(<{n} entries>)"


# Views iterating the listed strings directly (the abc views yield one item at a time).
class _Keys(KeysView):
    __slots__ = ()

    def __iter__(self):
        return iter(self._mapping)


class _Items(ItemsView):
    __slots__ = ()

    def __iter__(self):
        return zip(*self._mapping._strings())


class _Values(ValuesView):
    __slots__ = ()

    def __iter__(self):
        return iter(self._mapping._strings()[1])


class StateDiff:
    """The change from the state after one event to the state after another.

    ``added`` maps keys to their event in the second state where it differs
    from the first (new or changed keys); ``removed`` maps keys to their event
    in the first state where it differs from the second (gone or changed keys).
    """

    __slots__ = ("added", "removed")

    def __init__(self, added, removed):
        self.added = added
        self.removed = removed

    def __eq__(self, other):
        if not isinstance(other, StateDiff):
            return NotImplemented
        return self.added == other.added and self.removed == other.removed

    def __repr__(self):
        return f"StateDiff(added={self.added!r}, removed={self.removed!r})"

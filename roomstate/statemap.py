"""Read-only views of a state, backed by numeric entries."""
from collections.abc import Mapping

import numpy as np

from . import _core
from .ids import EVENT


class StateMap(Mapping):
    """A read-only ``Mapping[(type, state_key), event_id]``.

    ``entries`` is the numpy structured array of ``(type, state_key, event)``
    NIDs sorted by key; strings are looked up only for what is read — one key
    by binary search, or the whole map at once (in bulk) when it is iterated.
    """

    __slots__ = ("_store", "_entries", "_loader", "_dict")

    def __init__(self, store, entries=None, loader=None):
        self._store = store
        self._entries = entries
        self._loader = loader
        self._dict = None

    @property
    def entries(self):
        if self._entries is None:
            self._entries = self._loader()
            self._loader = None
        return self._entries

    def __len__(self):
        return len(self.entries)

    def _index(self, key):
        if not (isinstance(key, tuple) and len(key) == 2):
            return -1
        type_, state_key = key
        if not isinstance(type_, str) or not isinstance(state_key, str):
            return -1
        tnid, knid = self._store._nids_of_key(type_, state_key)
        if not tnid or not knid:
            return -1
        return _core.find(self.entries, tnid, knid)

    def __getitem__(self, key):
        if self._dict is not None:
            return self._dict[key]
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        return self._store._names(EVENT, [int(self.entries[i]["event"])])[0]

    def __contains__(self, key):
        if self._dict is not None:
            return key in self._dict
        return self._index(key) >= 0

    def _strings(self):
        """Every entry as strings, looked up in bulk once."""
        if self._dict is None:
            e = self.entries
            types, skeys, events = self._store._names_of_entries(e)
            self._dict = dict(zip(zip(types, skeys), events))
        return self._dict

    def __iter__(self):
        return iter(self._strings())

    def keys(self):
        return self._strings().keys()

    def items(self):
        return self._strings().items()

    def values(self):
        return self._strings().values()

    def event_ids(self):
        """Event IDs of every entry, in key order."""
        return list(self._strings().values())

    def to_dict(self):
        return dict(self._strings())

    def __eq__(self, other):
        if isinstance(other, StateMap) and other._store is self._store:
            a, b = self.entries, other.entries
            return len(a) == len(b) and bool(np.array_equal(a, b))
        if isinstance(other, Mapping):
            return self._strings() == dict(other.items())
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        n = len(self)
        if n <= 8:
            return f"StateMap({self.to_dict()!r})"
        return f"StateMap(<{n} entries>)"


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

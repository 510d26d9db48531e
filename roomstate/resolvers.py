"""Resolvers: choose the state of conflicted keys when a room's DAG merges.

A resolver is any callable ``resolver(ctx) -> Mapping[(type, state_key), event_id]``.
The merged state is the unconflicted state overlaid with what it returns; a
conflicted key it leaves out is dropped.  A built-in resolver may also have a
NID-level fast path (``Resolver.on_nids``), which decides the conflicted rows
of a merge without turning them into strings; it must give the same answer.
"""
from .errors import ConflictError


class ResolverContext:
    """What a resolver sees.

    ``room_id``; ``room_version`` (read when first asked for); ``state_sets``:
    the state after each prev event (StateMaps); ``conflicted``:
    ``{(type, state_key): {event_id, ...}}`` — the events the key has in the
    prev states that hold it; ``unconflicted``: a StateMap of the keys every
    prev state agrees on; ``store``: the StateStore.
    """

    __slots__ = ("room_id", "state_sets", "conflicted", "unconflicted", "store", "_room_version")

    def __init__(self, room_id, state_sets, conflicted, unconflicted, store):
        self.room_id = room_id
        self.state_sets = state_sets
        self.conflicted = conflicted
        self.unconflicted = unconflicted
        self.store = store
        self._room_version = None

    @property
    def room_version(self):
        """The room's version, as its create event names it."""
        if self._room_version is None:
            self._room_version = self.store.room_version(self.room_id)
        return self._room_version

    def depth(self, event_id):
        """The stored depth of an event."""
        return self.store.event_depth(event_id)


def raise_on_conflict(ctx):
    """Refuse to merge conflicting states."""
    if ctx.conflicted:
        raise ConflictError(ctx.room_id, ctx.conflicted.keys())
    return {}


def newest_event(ctx):
    """Per conflicted key, the candidate with the largest ``(depth, event_id)``."""
    depth = ctx.store.event_depth
    return {key: max(candidates, key=lambda e: (depth(e), e)) for key, candidates in ctx.conflicted.items()}


def newest_event_on_nids(events, aligned, rows, result):
    """:func:`newest_event` on NIDs: event IDs are read only when two candidates share a depth.

    ``aligned`` (a :class:`roomstate._core.Aligned`) holds the candidates of each row;
    ``result[i]`` is set for each of ``rows``.
    """
    depth = events.depth
    for i in rows.tolist():
        depths = {e: depth(e) for e in aligned.candidates(i)}  # one record read per candidate
        top = max(depths.values())
        tied = [e for e, d in depths.items() if d == top]
        result[i] = tied[0] if len(tied) == 1 else max(tied, key=events.event_id)


def matrix(ctx):
    """The Matrix specification's state resolution (v1, v2 or v2.1, by the room version).

    The store runs it on NIDs (:mod:`roomstate.matrixres`); called as a function of a
    context, it resolves the context's state sets through ``ctx.store.resolve_state``
    and returns what differs from the unconflicted state."""
    resolved = ctx.store.resolve_state(ctx.room_id, ctx.state_sets, resolver="matrix")
    unconflicted = ctx.unconflicted
    return {key: eid for key, eid in resolved.items() if unconflicted.get(key) != eid}


class Resolver:
    """A resolver as the merger uses it: the string-level function, and an optional
    NID-level one (``on_nids``); ``in_store``: the merger runs the store's own
    implementation (:mod:`roomstate.matrixres`) instead of either."""

    __slots__ = ("on_strings", "on_nids", "in_store")

    def __init__(self, on_strings, on_nids=None, in_store=False):
        self.on_strings = on_strings
        self.on_nids = on_nids
        self.in_store = in_store

    def __call__(self, ctx):
        return self.on_strings(ctx)


BUILTIN: "dict[str, Resolver]" = {}


def register(name, on_strings, on_nids=None):
    """Make a resolver available by name (``resolver="name"``)."""
    BUILTIN[name] = Resolver(on_strings, on_nids)


BUILTIN["matrix"] = Resolver(matrix, in_store=True)
register("raise_on_conflict", raise_on_conflict)
register("newest_event", newest_event, newest_event_on_nids)


def resolver_of(resolver):
    """The :class:`Resolver` for a name, a callable, or None (the default)."""
    if resolver is None:
        return BUILTIN["matrix"]
    if isinstance(resolver, Resolver):
        return resolver
    if isinstance(resolver, str):
        try:
            return BUILTIN[resolver]
        except KeyError:
            raise ValueError(f"unknown resolver {resolver!r}; built in: {', '.join(BUILTIN)}") from None
    if not callable(resolver):
        raise TypeError(f"resolver must be callable, got {type(resolver).__name__}")
    for builtin in BUILTIN.values():  # the function of a built-in, passed itself, keeps its fast path
        if builtin.on_strings is resolver:
            return builtin
    return Resolver(resolver)

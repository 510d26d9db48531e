"""Resolvers: choose the state of conflicted keys when a room's DAG merges.

A resolver is any callable ``resolver(ctx) -> Mapping[(type, state_key), event_id]``.
The merged state is the unconflicted state overlaid with what it returns; a
conflicted key it leaves out is dropped.
"""
from .errors import ConflictError


class ResolverContext:
    """What a resolver sees.

    ``room_id``; ``state_sets``: the state after each prev event (StateMaps);
    ``conflicted``: ``{(type, state_key): {event_id, ...}}`` — the events the
    key has in the prev states that hold it; ``unconflicted``: a StateMap of
    the keys every prev state agrees on; ``store``: the StateStore.
    """

    __slots__ = ("room_id", "state_sets", "conflicted", "unconflicted", "store")

    def __init__(self, room_id, state_sets, conflicted, unconflicted, store):
        self.room_id = room_id
        self.state_sets = state_sets
        self.conflicted = conflicted
        self.unconflicted = unconflicted
        self.store = store

    def depth(self, event_id):
        """The stored depth of an event."""
        return self.store.event_depth(event_id)


def raise_on_conflict(ctx):
    """The default: refuse to merge conflicting states."""
    if ctx.conflicted:
        raise ConflictError(ctx.room_id, ctx.conflicted.keys())
    return {}


def newest_event(ctx):
    """Per conflicted key, the candidate with the largest ``(depth, event_id)``."""
    depth = ctx.store.event_depth
    return {key: max(candidates, key=lambda e: (depth(e), e)) for key, candidates in ctx.conflicted.items()}


BUILTIN = {"raise_on_conflict": raise_on_conflict, "newest_event": newest_event}

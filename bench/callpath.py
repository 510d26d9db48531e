"""Count the calls between roomstate's modules that one operation makes.

    ROOMSTATE_PURE=1 python setup.py build_ext --inplace   # the .py modules interpreted
    python bench/callpath.py

Run on a build whose Python modules are interpreted (``ROOMSTATE_PURE=1``):
compiled ones call each other without Python frames, which a profiler cannot
see.  A call counts when the callee is a roomstate function (Python or a
Cython builtin) and its module differs from the caller's; "store" counts the
calls that enter ``roomstate.store`` from another module.
"""
import collections
import sys

import roomstate


def _module_of(frame):
    return frame.f_globals.get("__name__", "")


def count(fn):
    between = collections.Counter()
    into_store = 0

    def profile(frame, event, arg):
        nonlocal into_store
        if event == "call":
            callee = _module_of(frame)
            caller = _module_of(frame.f_back) if frame.f_back is not None else ""
        elif event == "c_call":
            # A compiled function names its module; a method of a compiled class, its class's.
            callee = getattr(arg, "__module__", None) or type(getattr(arg, "__self__", None)).__module__ or ""
            caller = _module_of(frame)
        else:
            return
        if callee.startswith("roomstate") and callee != caller:
            between[(caller, callee)] += 1
            if callee == "roomstate.store":
                into_store += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return sum(between.values()), into_store, between


def main():
    with roomstate.open(":memory:" if "--memory" in sys.argv else __import__("tempfile").mkdtemp() + "/s",
                        resolver="newest_event") as store:
        store.add_event({"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""})
        store.add_event({"event_id": "$a", "room_id": "!r", "type": "m.room.member", "state_key": "@a:x",
                         "content": {"membership": "join"}, "prev_events": ["$c"]})
        store.add_event({"event_id": "$t1", "room_id": "!r", "type": "m.room.topic", "state_key": "",
                         "prev_events": ["$a"]})
        store.add_event({"event_id": "$t2", "room_id": "!r", "type": "m.room.topic", "state_key": "",
                         "prev_events": ["$a"]})
        cases = {
            "add_event (a state event)": lambda: store.add_event(
                {"event_id": "$b", "room_id": "!r", "type": "m.room.member", "state_key": "@b:x",
                 "content": {"membership": "join"}, "prev_events": ["$t1"]}),
            "add_event (a merge of two prevs)": lambda: store.add_event(
                {"event_id": "$m", "room_id": "!r", "type": "m.room.message", "prev_events": ["$b", "$t2"]}),
            "state_after": lambda: dict(store.state_after("$m")),
        }
        for name, fn in cases.items():
            total, into_store, between = count(fn)
            print(f"{name}: {total} calls between modules, {into_store} into roomstate.store")
            if "-v" in sys.argv:
                for (a, b), n in between.most_common():
                    print(f"    {n:4} {a} -> {b}")


if __name__ == "__main__":
    main()

"""Differential tests against Synapse, the reference homeserver: event IDs and redaction.

Synapse is AGPL: it is an oracle here and nowhere else (never imported by
roomstate). Install it with the ``oracle`` extra (in its own virtualenv:
``python -m venv --system-site-packages VENV && VENV/bin/pip install matrix-synapse``)
and run ``VENV/bin/python -m pytest -m oracle``; without it these tests skip.

Synapse 1.16x computes both in Rust: ``make_event_from_dict(...).event_id`` and
``synapse.synapse_rust.events.redact_event_dict`` (older Synapse:
``synapse.events.utils.prune_event_dict``).
"""
import json
import warnings

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from roomstate.matrix import compute_event_id, compute_room_id, redact
from matrix_strategies import VERSION_IDS, pdus

pytestmark = pytest.mark.oracle

with warnings.catch_warnings():
    # Importing Synapse imports Twisted's web modules and jsonschema, which warn
    # DeprecationWarning at import time (nothing of ours); filterwarnings=error
    # would turn those into errors.  Only the import is covered by this filter.
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip("synapse")
    import synapse.storage  # noqa: F401  (first: Synapse's modules import each other in a circle otherwise)
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.events import make_event_from_dict

    try:
        from synapse.synapse_rust.events import redact_event_dict
    except ImportError:  # Synapse before its Rust events
        from synapse.events.utils import prune_event_dict as redact_event_dict

EXAMPLES = 200  # per room version and test: 12 versions, 2 tests, 4,800 examples


def _plain(d):
    return json.loads(json.dumps(d))


def per_version(test):
    """Run ``test(version, pdu)`` on EXAMPLES PDUs of each room version."""

    @pytest.mark.parametrize("version", VERSION_IDS)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def run(version, data):
        pdu = data.draw(pdus(version))
        note(json.dumps(pdu))
        test(version, pdu)

    run.__name__ = test.__name__
    return run


@per_version
def test_event_id_matches_synapse(version, pdu):
    theirs = make_event_from_dict(dict(pdu), KNOWN_ROOM_VERSIONS[version])
    assert compute_event_id(pdu, version) == theirs.event_id
    if pdu["type"] == "m.room.create" and "room_id" not in pdu:
        assert compute_room_id(pdu) == theirs.room_id


@per_version
def test_redaction_matches_synapse(version, pdu):
    theirs = _plain(redact_event_dict(KNOWN_ROOM_VERSIONS[version], dict(pdu)))
    # Synapse keeps an (emptied) "unsigned" for its own bookkeeping; the spec's
    # algorithm strips it, and no hash covers it.
    theirs.pop("unsigned", None)
    assert _plain(redact(pdu, version)) == theirs

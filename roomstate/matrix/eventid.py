"""Event IDs, room IDs (room version 12) and the two event hashes.

Server-server API, "Calculating the reference hash for an event": "1. The event
is put through the redaction algorithm. 2. The signatures and unsigned
properties are removed from the event, if present. 3. The event is converted
into Canonical JSON. 4. A sha256 hash is calculated on the resulting JSON
object." Room version 3: the event ID is ``$`` and the reference hash in
unpadded standard base64; from version 4 in URL-safe unpadded base64 (rooms
v3, v4, "Event IDs").

An ``event_id`` key in a v3+ event is not part of the PDU format; it is left
out of the hash (the redaction algorithm would otherwise keep it).

Room versions 1 and 2 do not derive event IDs: "Event IDs in this room version
have the format ``$opaque_id:domain``", chosen by the sending server, and the
event carries it. :func:`compute_event_id` returns that given ID for them (so
that it answers "the event ID of this event" in every room version) and raises
InvalidEventError when the event has none.

Room version 12 (MSC4291, rooms v12 auth rule 1.2): the create event has no
``room_id``; "the room ID is the event ID of the event with sigil ``!`` instead
of ``$``".
"""
import base64
import hashlib

from ..errors import InvalidEventError
from . import canonical
from .redaction import redact
from .versions import RoomVersion, room_version

__all__ = ["compute_event_id", "compute_room_id", "content_hash", "reference_hash"]

_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _version(v):
    return v if isinstance(v, RoomVersion) else room_version(v)


def reference_hash(pdu, room_version):
    """The sha256 digest (32 bytes) of the redacted event, without signatures and unsigned."""
    v = _version(room_version)
    pruned = redact(pdu, v)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)  # not kept by any version's redaction: here for the spec's step 2
    pruned.pop("event_id", None)
    return hashlib.sha256(canonical.encode(pruned, v.strict_canonical_json)).digest()


def content_hash(pdu, strict=True):
    """The sha256 digest of the unredacted event without ``unsigned``, ``signatures``, ``hashes``.

    Server-server API, "Calculating the content hash for an event". Checking it
    against ``hashes.sha256`` is the caller's part, with the signatures.
    """
    d = {k: val for k, val in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(canonical.encode(d, strict)).digest()


def compute_event_id(pdu, room_version):
    """The event ID of a PDU in room version ``room_version`` (a RoomVersion or its identifier).

    v3 and later: ``$`` + the unpadded base64 reference hash. v1–v2: the
    ``event_id`` the event carries (servers name them; nothing is computed).
    """
    v = _version(room_version)
    if v.event_format == 1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise InvalidEventError(
                "event_id",
                f"missing: events of room version {v.identifier} carry their own event ID"
                " (it is not a hash, so it cannot be computed)",
            )
        return str(event_id)
    digest = base64.b64encode(reference_hash(pdu, v)).rstrip(b"=")
    if v.url_safe_ids:
        digest = digest.translate(_URL_SAFE)
    return "$" + digest.decode("ascii")


def compute_room_id(create_pdu, room_version=None):
    """The room ID of a room version 12 room: its create event's event ID with ``!`` for ``$``.

    The room version is the create event's ``content.room_version`` unless
    given; it must derive room IDs from the create event (v12 and later). A
    create event carrying a ``room_id`` is refused (rooms v12, auth rule 1.2).
    """
    if room_version is None:
        content = create_pdu.get("content")
        if not hasattr(content, "get"):
            raise InvalidEventError("content", "the create event's content must be an object")
        room_version = content.get("room_version", "1")
    v = _version(room_version)
    if not v.room_id_from_create:
        raise InvalidEventError(
            "content.room_version",
            f"room version {v.identifier} names rooms by their own room_id; only room version 12"
            " and later derive the room ID from the create event",
        )
    if create_pdu.get("type") != "m.room.create":
        raise InvalidEventError("type", f"must be m.room.create to name a room, got {create_pdu.get('type')!r}")
    if "room_id" in create_pdu:
        raise InvalidEventError("room_id", f"a room version {v.identifier} create event has no room_id")
    return "!" + compute_event_id(create_pdu, v)[1:]

"""What to do with each event of a batch, decided in memory from the aggregates' applied versions
and parked set (pure: no I/O, so the rules are tested without a database or a stream)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from orders.v1 import events_pb2
from projector.views.base import EVENT_TYPES
from server.platform import messaging, tenancy, upcasting

Key = tuple[str, str, str]  # tenant_id, aggregate_type, aggregate_id
TENANT_INVALID = "tenant_invalid"
# An event of a schema version this projector does not know yet (a newer command side wrote it):
# parked with the rest of its aggregate, and applied by `orders dlq replay` once the projector is
# upgraded.
UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    DEAD = "dead"


@dataclass(frozen=True)
class Incoming:
    """A delivered message, reduced to what the decision and a dead letter need."""

    stream_seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    num_delivered: int = 1


@dataclass
class Decision:
    item: Incoming
    outcome: Outcome
    envelope: events_pb2.Envelope | None = None
    key: Key = ("", "", "")
    reason: str = ""
    error: str = ""


def key_from_subject(subject: str) -> Key:
    """orders.events.<tenant>.<type>.<partition>.<id>: who an undecodable message belongs to. A
    subject of the layout before tenants led (<type>.<partition>.<id>, its partition in second
    place) names no tenant: "" then, which parks no tenant's aggregate."""
    prefix = messaging.SUBJECT_PREFIX + "."
    rest = subject[len(prefix):] if subject.startswith(prefix) else ""
    parts = rest.split(".", 3)
    if len(parts) == 4 and all(parts) and parts[2].isdigit() and not parts[1].isdigit():
        return (parts[0], parts[1], parts[3])
    parts = rest.split(".", 2)
    if len(parts) == 3 and parts[0] and parts[2] and parts[1].isdigit():
        return ("", parts[0], parts[2])
    return ("", "unknown", subject[:64])


# An item decoded: its envelope (when it could be read) and key, and when it must become a dead
# letter, the reason and error.
Decoded = tuple[events_pb2.Envelope | None, Key, str, str]


def decode(item: Incoming) -> Decoded:
    """The envelope, upcast to its newest schema version, and its key; or the reason and error that
    make it a dead letter: a message that cannot be read (or not yet, by this version of the code),
    or an event whose tenant is no valid tenant id or not its subject's (no read model ever gets a
    row of a tenant the servers would refuse)."""
    try:
        env = events_pb2.Envelope.FromString(item.data)
    except (DecodeError, ValueError) as exc:
        return None, key_from_subject(item.subject), "undecodable", repr(exc)
    kind = env.WhichOneof("payload")
    if kind is None or kind not in EVENT_TYPES:
        return None, key_from_subject(item.subject), "unknown_type", "no known payload in the envelope"
    if not env.aggregate_id or not env.aggregate_type or env.aggregate_version < 1:
        return None, key_from_subject(item.subject), "invalid", "no aggregate id, type or version >= 1"
    key = (env.tenant_id, env.aggregate_type, env.aggregate_id)
    if not tenancy.is_valid(env.tenant_id):
        return env, key, TENANT_INVALID, f"the event's tenant is not {tenancy.RULE}"
    subject_tenant = key_from_subject(item.subject)[0]
    if subject_tenant and subject_tenant != env.tenant_id:
        return env, key, TENANT_INVALID, "the event's tenant is not its subject's"
    try:
        upcasting.upcast(env)  # every view reads the newest form of each event
    except upcasting.UnknownSchemaVersionError as exc:
        return env, key, UNKNOWN_SCHEMA_VERSION, str(exc)
    return env, key, "", ""


# Raises for an event no handler may apply (ORDERS_PROJECTOR_FAULT_AGGREGATES in tests).
Check = Callable[[events_pb2.Envelope], None]


def no_check(env: events_pb2.Envelope) -> None:
    """Every decodable event of a known type may be applied."""


def decide(
    items: Sequence[Incoming],
    applied: dict[Key, int],
    parked: set[Key],
    check: Check,
    max_gap_deliveries: int,
    decoded: Sequence[Decoded] | None = None,
) -> list[Decision]:
    """Decides every item in delivery order; updates `applied` and `parked` as it goes, so a
    batch holding v1 and v2 of one order applies both, and events behind a new dead letter park.
    Parking is per tenant: a dead letter of one tenant's o-1 never holds back another's o-1."""
    decisions: list[Decision] = []
    for n, item in enumerate(items):
        env, key, reason, error = decode(item) if decoded is None else decoded[n]
        if reason:
            if env is None or reason == UNKNOWN_SCHEMA_VERSION:
                # Unreadable (of any version), or not readable yet: hold back the rest of its aggregate.
                parked.add(key)
            decisions.append(Decision(item, Outcome.DEAD, env, key, reason=reason, error=error))
            continue
        assert env is not None
        current = applied.get(key, 0)
        version = env.aggregate_version
        if version <= current:
            decisions.append(Decision(item, Outcome.DUPLICATE, env, key))
        elif key in parked:
            decisions.append(Decision(item, Outcome.DEAD, env, key, reason="parked_behind",
                                      error="an earlier event of this aggregate is a dead letter"))
        elif version > current + 1:
            if item.num_delivered >= max_gap_deliveries:
                parked.add(key)
                decisions.append(Decision(item, Outcome.DEAD, env, key, reason="gap",
                                          error=f"version {version} waited for {current + 1} in vain"))
            else:
                decisions.append(Decision(item, Outcome.GAP, env, key))
        else:
            try:
                check(env)
            except Exception as exc:  # a failing handler parks its aggregate, never the projector
                parked.add(key)
                decisions.append(Decision(item, Outcome.DEAD, env, key, reason="handler_failed", error=repr(exc)))
                continue
            applied[key] = version
            decisions.append(Decision(item, Outcome.APPLIED, env, key))
    return decisions


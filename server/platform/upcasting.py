"""Stored events in their newest form. Every reader of stored events (the projector, a rebuild,
a dead-letter replay, the saga) parses them here, and one upcaster per step turns an event of one
schema version into the next, so readers are written against the newest version alone.

The rules (docs/events.md): a new field whose default is true of every event already written is
additive and keeps the version; a field whose default would be wrong for old events, or any change
of meaning, makes a new schema version of that event, written by the command side, with an upcaster
from the version before. Stored bytes are never rewritten: events are upcast as they are read."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orders.v1 import events_pb2, types_pb2
from server.domain.money import Money

# Payload field -> the schema version the command side writes; every other payload is at 1.
CURRENT: Mapping[str, int] = {
    # 2: line_totals, each line's exact amount (a version 1 event has none: empty is not "zero").
    "order_placed": 2,
    # 2: the personal fields sealed with the customer's data key (sealed_personal_data); version 1
    # carried them in clear. Readers take them through platform.personal.registered_personal.
    "customer_registered": 2,
}

Upcaster = Callable[[events_pb2.Envelope], None]


class UnknownSchemaVersionError(ValueError):
    """An event of a schema version newer than this code knows: written by a newer command side.
    Readers are upgraded before writers; until then such an event must not be read as an older one."""


def schema_version(payload: str) -> int:
    """The version the command side writes for `payload` (an Envelope payload field name)."""
    return CURRENT.get(payload, 1)


def _order_placed_1_to_2(env: events_pb2.Envelope) -> None:
    """Version 1 had no line totals: each is the line's quantity times its unit price, exactly as
    the command side computes them for version 2 (the domain's OrderLine.amount)."""
    placed = env.order_placed
    del placed.line_totals[:]
    for line in placed.lines:
        price = Money(line.unit_price.currency_code, line.unit_price.units, line.unit_price.nanos)
        amount = price.times(line.quantity)
        placed.line_totals.append(types_pb2.Money(currency_code=amount.currency_code, units=amount.units,
                                                  nanos=amount.nanos))


def _customer_registered_1_to_2(env: events_pb2.Envelope) -> None:
    """Nothing moves: a version 1 event keeps its fields in clear (no key was ever made for it),
    and an empty sealed_personal_data tells readers so. Stored bytes are never rewritten, so
    personal data written before version 2 is erased only by a forget's scrub of the write model,
    not in those old events (docs/privacy.md)."""


# (payload, version) -> the upcaster that makes it version + 1.
UPCASTERS: Mapping[tuple[str, int], Upcaster] = {
    ("order_placed", 1): _order_placed_1_to_2,
    ("customer_registered", 1): _customer_registered_1_to_2,
}


def upcast(env: events_pb2.Envelope) -> events_pb2.Envelope:
    """`env` in its payload's newest schema version, changed in place (an unset version is 1)."""
    payload = env.WhichOneof("payload")
    if payload is None:
        return env
    newest = CURRENT.get(payload, 1)
    version = env.schema_version or 1
    if version > newest:
        raise UnknownSchemaVersionError(
            f"{payload} of schema version {version}; this reader knows versions up to {newest}")
    while version < newest:
        UPCASTERS[(payload, version)](env)
        version += 1
    env.schema_version = version
    return env


def parse(data: bytes) -> events_pb2.Envelope:
    """A stored event (a serialised Envelope), upcast to its newest schema version. Raises
    DecodeError for bytes that are no Envelope and UnknownSchemaVersionError as `upcast`."""
    return upcast(events_pb2.Envelope.FromString(data))


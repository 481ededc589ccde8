"""OpenTelemetry semantic-convention attributes for the spans made by hand: NATS publishes and
consumes (messaging) and WatchOrders pushes (RPC). Names follow the conventions the locked
opentelemetry-semantic-conventions package knows (a unit test compares them); values that the
conventions leave to each system are ours: `messaging.system` is "nats", as NATS's own
instrumentations write it."""

from __future__ import annotations

from typing import Any

# Messaging (docs/messaging/messaging-spans.md of the conventions).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_DESTINATION_TEMPLATE = "messaging.destination.template"
MESSAGING_DESTINATION_PARTITION_ID = "messaging.destination.partition.id"
MESSAGING_DESTINATION_SUBSCRIPTION_NAME = "messaging.destination.subscription.name"
MESSAGING_CONSUMER_GROUP_NAME = "messaging.consumer.group.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_MESSAGE_CONVERSATION_ID = "messaging.message.conversation_id"
MESSAGING_MESSAGE_BODY_SIZE = "messaging.message.body.size"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
NATS = "nats"
SEND, PROCESS = "send", "process"  # messaging.operation.type values

# RPC. The gRPC instrumentation's server spans, in the same traces, still write the experimental
# attributes (rpc.system, rpc.service, rpc.method as the bare method name); ours write the same,
# so one query finds both, plus the stable rpc.system.name, which takes nothing away.
RPC_SYSTEM = "rpc.system"
RPC_SYSTEM_NAME = "rpc.system.name"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
GRPC = "grpc"


def messaging(operation_type: str, destination: str, *, template: str = "", **extra: Any) -> dict[str, Any]:
    """A NATS span's attributes: the operation (its name is its type: the spans are named
    "<operation> <destination>"), the destination and, where the name holds ids, its template."""
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: NATS,
        MESSAGING_OPERATION_TYPE: operation_type,
        MESSAGING_OPERATION_NAME: operation_type,
        MESSAGING_DESTINATION_NAME: destination,
    }
    if template:
        attributes[MESSAGING_DESTINATION_TEMPLATE] = template
    attributes.update(extra)
    return attributes


def grpc_method(full_service: str, method: str) -> dict[str, Any]:
    """A span's attributes for work done inside one gRPC method of `full_service`."""
    return {RPC_SYSTEM: GRPC, RPC_SYSTEM_NAME: GRPC, RPC_SERVICE: full_service, RPC_METHOD: method}

"""One trace per order across the processes, correlation ids everywhere, metrics that move, and
no personal data in logs or spans. Spans go to an in-process OTLP collector via the real exporter."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import grpc
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import query_service_pb2 as query_pb
from server.platform import messaging
from server.platform.process import free_port
from tests.e2e.client import BadRequest, commands, detail, new_id, place_request, queries, status_of
from tests.e2e.otlp import Collector, Span, by_trace
from tests.harness import Stack, sample, scrape, serving, wait_until

RPC = ("rpc.system", "rpc.system.name", "rpc.service", "rpc.method")

pytestmark = pytest.mark.e2e
ROLES = ("command-server", "query-server", "relay", "projector")
PRODUCER, CONSUMER = 4, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


@pytest.fixture(scope="module")
def metrics() -> dict[str, str]:
    """Each role's Prometheus endpoint in the traced stack."""
    return {role: f"127.0.0.1:{free_port()}" for role in ROLES}


@pytest.fixture(scope="module")
def traced(database_url: str, nats_url: str, collector: Collector, metrics: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(database_url, nats_url, tmp_path_factory.mktemp("traced"),
                  extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    for role in ROLES:
        stack.start(role, METRICS_ADDR=metrics[role])
    wait_until(lambda: stack.alive() and serving(stack.command_addr) and serving(stack.query_addr), what="SERVING")
    yield stack
    stack.stop_all()


def test_one_trace_runs_from_the_call_through_the_outbox_to_the_publish(traced: Stack, collector: Collector) -> None:
    _, cmd = commands(traced.command_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    correlation_id = f"corr-{new_id('x')}"
    metadata = (("x-correlation-id", correlation_id),)
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com"), metadata=metadata)

    _, call = cmd.PlaceOrder.with_call(place_request(order_id, customer_id), metadata=metadata, timeout=10)

    assert dict(call.trailing_metadata())["x-correlation-id"] == correlation_id
    # A rejected call echoes it too, beside the status details in the same trailers.
    with pytest.raises(grpc.RpcError) as rejected:
        cmd.PlaceOrder(place_request("", customer_id), metadata=metadata, timeout=10)
    assert dict(rejected.value.trailing_metadata())["x-correlation-id"] == correlation_id
    assert detail(status_of(rejected.value), BadRequest).field_violations[0].field == "order_id"

    def publish_trace() -> tuple[Span, dict[str, Span]] | None:
        spans = collector.spans()
        producer = next((s for s in spans if s.kind == PRODUCER
                         and s.attributes.get("messaging.destination.name", "").endswith(order_id)), None)
        if producer is None:
            return None
        trace = {s.span_id: s for s in by_trace(spans, producer.trace_id)}
        # Each process exports on its own schedule: wait for the command server's spans too.
        return (producer, trace) if needed <= {s.name for s in trace.values()} else None

    needed = {"/orders.v1.CommandService/PlaceOrder", "outbox write order"}
    producer, trace = wait_until(publish_trace, what="the relay's publish span and the command server's spans")
    server = next(s for s in trace.values() if s.name == "/orders.v1.CommandService/PlaceOrder")
    assert server.service == "orders-command-server" and producer.service == "orders-relay"
    # The publish descends from the call: relay span -> ... -> the gRPC server span.
    ancestors, span = [], producer
    while span.parent_id in trace:
        span = trace[span.parent_id]
        ancestors.append(span.name)
    assert "/orders.v1.CommandService/PlaceOrder" in ancestors
    assert {s.attributes.get("correlation_id") for s in trace.values()} == {correlation_id}
    assert producer.attributes["messaging.system"] == "nats"
    assert producer.attributes["causation_id"] == next(
        s.attributes["causation_id"] for s in trace.values() if s.name == "outbox write order")


def test_one_trace_follows_an_order_from_the_call_to_the_watcher(traced: Stack, collector: Collector) -> None:
    _, cmd = commands(traced.command_addr)
    channel, _ = queries(traced.query_addr)
    customer_id, order_id = new_id("c"), new_id("o")
    correlation_id = f"corr-{new_id('x')}"
    metadata = (("x-correlation-id", correlation_id),)
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com"), metadata=metadata)
    watch = channel.unary_stream("/orders.v1.QueryService/WatchOrders",
                                 request_serializer=query_pb.WatchOrdersRequest.SerializeToString,
                                 response_deserializer=query_pb.WatchOrdersResponse.FromString)
    stream = watch(query_pb.WatchOrdersRequest(customer_id=customer_id), metadata=metadata, timeout=60)
    # A stream echoes the id in its headers, while it is open.
    assert dict(stream.initial_metadata())["x-correlation-id"] == correlation_id
    versions: list[int] = []
    caught_up, placed_seen = threading.Event(), threading.Event()

    def read() -> None:
        for message in stream:
            if message.HasField("heartbeat"):
                caught_up.set()
            elif message.update.summary.order_id == order_id:
                versions.append(message.update.summary.version)
                placed_seen.set()
                if message.update.summary.version == 2:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert caught_up.wait(30), "the watch never caught up"

    place = place_request(order_id, customer_id)
    placed = cmd.PlaceOrder(place, metadata=metadata, timeout=10)
    # The projector announces an order once per batch, in the trace of its latest event: were the
    # confirmation to reach it in the same batch, the placement's trace would end at the relay.
    assert placed_seen.wait(30), "the watch did not deliver version 1 within 30 s"
    cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=placed.version),
                     metadata=metadata, timeout=10)
    reader.join(30)
    stream.cancel()
    assert not reader.is_alive(), f"the watch did not deliver version 2 within 30 s (saw {versions})"

    assert versions[-1] == 2

    def placed_trace() -> dict[str, Span] | None:
        spans = collector.spans()
        producer = next((s for s in spans if s.kind == PRODUCER and s.service == "orders-relay"
                         and s.attributes.get("messaging.destination.name", "").endswith(order_id)
                         and s.attributes.get("messaging.message.id")), None)
        if producer is None:
            return None
        trace = {s.span_id: s for s in by_trace(spans, producer.trace_id)}
        # Each process exports on its own schedule: wait for every hop's span to arrive.
        return trace if {*chain, "outbox write order"} <= {s.name for s in trace.values()} else None

    # call (which records the event) -> relay publish -> projector's notice -> push
    chain = ["push WatchOrders", "send orders.views", "send orders.events.order", "/orders.v1.CommandService/PlaceOrder"]
    trace = wait_until(placed_trace, what="a trace reaching the watcher's push")
    by_name = {s.name: s for s in trace.values()}
    assert {s.service for s in trace.values()} >= {
        "orders-command-server", "orders-relay", "orders-projector", "orders-query-server"}
    assert trace[by_name["outbox write order"].parent_id].name == "/orders.v1.CommandService/PlaceOrder"
    assert by_name["/orders.v1.CommandService/PlaceOrder"].attributes["orders.aggregate_id"] == order_id
    for child, parent in zip(chain, chain[1:]):
        assert trace[by_name[child].parent_id].name == parent, (child, parent)
    missing = sorted((s.service, s.name) for s in trace.values() if s.attributes.get("correlation_id") != correlation_id)
    assert missing == []
    # The command caused everything in its trace: its request id is every span's causation id.
    missing = sorted((s.service, s.name) for s in trace.values() if s.attributes.get("causation_id") != place.request_id)
    assert missing == []
    sent = by_name["send orders.events.order"]
    batch = wait_until(lambda: next((s for s in collector.spans() if s.name == "process orders.events"
                                     and (sent.trace_id, sent.span_id) in s.links), None),
                       what="the projector's batch span linking the publish")
    assert batch.kind == CONSUMER and batch.service == "orders-projector"

    # Each hop speaks the semantic conventions: messaging on the NATS hops, RPC on the push.
    assert (sent.attributes["messaging.system"], sent.attributes["messaging.operation.type"],
            sent.attributes["messaging.operation.name"]) == ("nats", "send", "send")
    partition = sent.attributes["messaging.destination.partition.id"]
    assert sent.attributes["messaging.destination.name"] == f"orders.events.default.order.{partition}.{order_id}"
    assert sent.attributes["messaging.destination.template"] == messaging.EVENT_SUBJECT_TEMPLATE
    assert int(sent.attributes["messaging.message.body.size"]) > 0
    notice = by_name["send orders.views"]
    assert (notice.attributes["messaging.system"], notice.attributes["messaging.operation.type"],
            notice.attributes["messaging.destination.name"], notice.attributes["messaging.destination.template"]) == (
        "nats", "send", "orders.views.default", messaging.NOTICE_SUBJECT_TEMPLATE)
    assert (batch.attributes["messaging.system"], batch.attributes["messaging.operation.type"],
            batch.attributes["messaging.operation.name"], batch.attributes["messaging.destination.name"],
            batch.attributes["messaging.consumer.group.name"]) == ("nats", "process", "process", "orders.events.>",
                                                                   "projector")
    assert int(batch.attributes["messaging.batch.message_count"]) >= 1
    push = by_name["push WatchOrders"]
    assert {k: push.attributes.get(k) for k in RPC} == {
        "rpc.system": "grpc", "rpc.system.name": "grpc", "rpc.service": "orders.v1.QueryService",
        "rpc.method": "WatchOrders"}
    # ... named as the gRPC instrumentation names the stream's own server span.
    server_span = wait_until(lambda: next((s for s in collector.spans()
                                           if s.name == "/orders.v1.QueryService/WatchOrders"), None),
                             what="the WatchOrders server span")
    assert {k: server_span.attributes[k] for k in ("rpc.system", "rpc.service", "rpc.method")} == {
        k: push.attributes[k] for k in ("rpc.system", "rpc.service", "rpc.method")}


def test_metrics_endpoints_move_when_orders_flow(traced: Stack, metrics: dict[str, str]) -> None:
    _, cmd = commands(traced.command_addr)
    customer_id = new_id("c")
    before_command = scrape(metrics["command-server"])
    before_relay = scrape(metrics["relay"])
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com"))

    cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)

    after = scrape(metrics["command-server"])
    # go-grpc-prometheus's series and label values: grpc_type, and codes as grpc-go prints them.
    method = {"grpc_type": "unary", "grpc_service": "orders.v1.CommandService", "grpc_method": "PlaceOrder"}
    for name in ("grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total",
                 "grpc_server_handling_seconds_count"):
        assert sample(after, name, **method) == sample(before_command, name, **method) + 1, name
    ok = {**method, "grpc_code": "OK"}
    assert sample(after, "grpc_server_handled_total", **ok) == sample(before_command, "grpc_server_handled_total", **ok) + 1
    wait_until(lambda: sample(scrape(metrics["relay"]), "orders_relay_published_total")
               >= sample(before_relay, "orders_relay_published_total") + 2, what="the relay's counter to move")
    assert "orders_outbox_depth" in scrape(metrics["relay"])


def test_grpc_metrics_carry_the_labels_of_go_grpc_prometheus(traced: Stack, metrics: dict[str, str]) -> None:
    _, cmd = commands(traced.command_addr)
    channel, query = queries(traced.query_addr)
    before_command, before_query = scrape(metrics["command-server"]), scrape(metrics["query-server"])
    invalid = {"grpc_type": "unary", "grpc_service": "orders.v1.CommandService", "grpc_method": "PlaceOrder",
               "grpc_code": "InvalidArgument"}
    watch = {"grpc_type": "server_stream", "grpc_service": "orders.v1.QueryService", "grpc_method": "WatchOrders"}

    with pytest.raises(grpc.RpcError):
        cmd.PlaceOrder(place_request("", new_id("c")), timeout=10)
    stream = query.WatchOrders(query_pb.WatchOrdersRequest(customer_id=new_id("c")), timeout=30)
    assert next(stream).HasField("heartbeat")  # nothing to send but the caught-up heartbeat
    stream.cancel()

    after = scrape(metrics["command-server"])
    assert sample(after, "grpc_server_handled_total", **invalid) == sample(
        before_command, "grpc_server_handled_total", **invalid) + 1
    canceled = {**watch, "grpc_code": "Canceled"}
    wait_until(lambda: sample(scrape(metrics["query-server"]), "grpc_server_handled_total", **canceled)
               == sample(before_query, "grpc_server_handled_total", **canceled) + 1, what="the stream counted as Canceled")
    query_after = scrape(metrics["query-server"])
    assert sample(query_after, "grpc_server_msg_sent_total", **watch) >= sample(
        before_query, "grpc_server_msg_sent_total", **watch) + 1
    # Never the Python enum's names: dashboards written for grpc-go would find nothing.
    assert not re.search(r'grpc_code="[A-Z_]{4,}"', after + query_after)
    channel.close()


def test_names_and_emails_never_reach_logs_or_spans(traced: Stack, collector: Collector) -> None:
    _, cmd = commands(traced.command_addr)
    name, email = "Zelda Quux-Private", "zelda.private@example.com"
    customer_id = new_id("c")
    cmd.RegisterCustomer(pb.RegisterCustomerRequest(
        request_id=new_id("r"), customer_id=customer_id, display_name=name, email=email))
    cmd.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10)
    wait_until(lambda: any(s.kind == PRODUCER and s.attributes.get("messaging.destination.name", "").endswith(customer_id)
                           for s in collector.spans()), what="the customer's event to be published")

    logs = "".join(traced.log(role) for role in ROLES)
    spans = repr(collector.spans())
    for secret in (name, email, "Zelda", "zelda"):
        assert secret not in logs and secret not in spans
    assert re.search(r'"trace_id": "[0-9a-f]{32}"', logs)  # the logs do link to traces

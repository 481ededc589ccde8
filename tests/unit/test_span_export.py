"""Spans shipped to the exporting process are rebuilt there as the originals; the OTEL_ variables choose its exporters."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from server.telemetry import setup_tracing
from server.telemetry.span_export import (
    ShippingSpanProcessor,
    deliver,
    exporter,
    otlp_protocol,
    pack,
    plain,
    rebuilt,
    trace_exporters,
)


def recording(resource: Resource | None = None, limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider, and the exporter that keeps the spans it finishes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def finished_spans() -> list[ReadableSpan]:
    """Spans with everything an exporter reads: remote and local parents, links, events, an error,
    trace state, every attribute type, and limits that drop attributes, events and links."""
    limits = SpanLimits(max_attributes=6, max_events=2, max_links=2, max_event_attributes=1, max_link_attributes=1)
    provider, memory = recording(Resource.create({"service.name": "orders-test"}), limits)
    tracer = provider.get_tracer("orders", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0",
                                 attributes={"scope.kind": "test"})
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "opaque1")]))
    linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span("/orders.v1.CommandService/PlaceOrder", context=parent_ctx, kind=SpanKind.SERVER,
                                      attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0}) as server:
        server.set_attributes({"orders.aggregate_version": 3, "ratio": 0.5, "ok": True, "ids": ("a", "b"),
                               "counts": (1, 2), "one.too.many": "x", "two.too.many": "y"})
        child = tracer.start_span("outbox write order", kind=SpanKind.CLIENT,
                                  links=[Link(remote), Link(linked), Link(linked, {"kept": "1", "dropped": "2"})])
        child.add_event("first")
        child.add_event("second")
        child.add_event("retry", {"attempt": 1, "dropped": True})
        child.set_status(StatusCode.ERROR, "OperationalError")
        child.end()
    with provider.get_tracer("other").start_as_current_span("process orders.events", kind=SpanKind.CONSUMER):
        pass
    return list(memory.get_finished_spans())


def shipped(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """What the exporting process hands its exporters of `spans`."""
    return rebuilt(pack([plain(span) for span in spans]))


def described(span: ReadableSpan) -> dict[str, Any]:
    """All that the SDK's exporters read of a span, as plain values to compare."""
    ctx, parent = span.context, span.parent
    assert ctx is not None
    return {
        "name": span.name, "trace_id": ctx.trace_id, "span_id": ctx.span_id, "trace_state": dict(ctx.trace_state),
        "parent": None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        "kind": span.kind, "start_time": span.start_time, "end_time": span.end_time,
        "attributes": dict(span.attributes or {}), "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context.trace_id, link.context.span_id, link.context.is_remote, dict(link.attributes or {}),
                   link.dropped_attributes) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": (dict(span.resource.attributes), span.resource.schema_url),
        "scope": span.instrumentation_scope,
    }


def assert_rebuilt_as(originals: Sequence[ReadableSpan], copies: Sequence[ReadableSpan]) -> None:
    assert [described(span) for span in copies] == [described(span) for span in originals]
    # and so the OTLP request the exporter sends is the one the originals make
    assert encode_spans(copies) == encode_spans(originals)


def test_shipped_spans_are_rebuilt_as_the_originals() -> None:
    spans = finished_spans()
    assert [s.dropped_attributes for s in spans] == [0, 3, 0]
    assert spans[0].dropped_events == 1 and spans[0].dropped_links == 1

    copies = shipped(spans)

    assert_rebuilt_as(spans, copies)
    assert copies[0].events[-1].dropped_attributes == 1 and copies[0].links[-1].dropped_attributes == 1


def test_spans_of_different_resources_stay_apart() -> None:
    spans = finished_spans()
    other, memory = recording(Resource.create({"service.name": "orders-other"}))
    other.get_tracer("orders").start_span("elsewhere").end()
    mixed = [spans[0], *memory.get_finished_spans(), spans[1]]

    copies = shipped(mixed)

    assert sorted(map(described, copies), key=repr) == sorted(map(described, mixed), key=repr)
    assert len(encode_spans(copies).resource_spans) == 2


_texts = st.text(max_size=6)
_attributes = st.dictionaries(
    st.sampled_from(["a", "b", "c", "orders.id"]),
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), _texts,
              *(st.lists(scalar, max_size=3).map(tuple)
                for scalar in (st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), _texts))),
    max_size=4)
_ids = st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans())
_span_specs = st.fixed_dictionaries({
    "name": _texts, "kind": st.sampled_from(SpanKind), "attributes": _attributes,
    "parent": st.none() | _ids, "links": st.lists(st.tuples(_ids, _attributes), max_size=3),
    "events": st.lists(st.tuples(_texts, _attributes), max_size=3),
    "status": st.sampled_from([(StatusCode.UNSET, None), (StatusCode.OK, None), (StatusCode.ERROR, None),
                               (StatusCode.ERROR, "boom")]),
    "trace_state": st.lists(st.tuples(st.sampled_from(["vendor", "other@tenant"]), st.sampled_from(["a", "b1"])),
                            max_size=2, unique_by=lambda kv: kv[0]),
})


@given(st.lists(_span_specs, min_size=1, max_size=5), st.integers(1, 4))
def test_any_recorded_spans_are_rebuilt_as_the_originals(specs: list[dict[str, Any]], limit: int) -> None:
    """Names, ids, parents (remote or not), kinds, times, attributes of every type, events, links,
    statuses and trace state, with limits that drop some, survive the trip to the child."""
    limits = SpanLimits(max_attributes=limit, max_events=limit, max_links=limit,
                        max_event_attributes=limit, max_link_attributes=limit)
    provider, memory = recording(Resource.create({"service.name": "orders-test"}), limits)
    tracer = provider.get_tracer("orders")
    for spec in specs:
        context = None
        if spec["parent"] is not None:
            trace_id, span_id, remote = spec["parent"]
            parent = SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                                 trace_state=TraceState(spec["trace_state"]))
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        links = [Link(SpanContext(t, s, is_remote=r), attributes) for (t, s, r), attributes in spec["links"]]
        span = tracer.start_span(spec["name"], context=context, kind=spec["kind"], attributes=spec["attributes"],
                                 links=links)
        for name, attributes in spec["events"]:
            span.add_event(name, attributes)
        span.set_status(*spec["status"])
        span.end()
    spans = list(memory.get_finished_spans())

    assert_rebuilt_as(spans, shipped(spans))


class Code(enum.IntEnum):
    OK = 0


class Name(str):
    def __str__(self) -> str:
        return "not the value"


def test_attributes_of_subclasses_are_shipped_as_their_base_types() -> None:
    """An IntEnum or a str subclass, which the SDK accepts as attribute values: their own values,
    whatever their classes' __str__ says."""
    provider, memory = recording()
    provider.get_tracer("orders").start_span("span", attributes={"code": Code.OK, "name": Name("n")}).end()
    spans = list(memory.get_finished_spans())

    (copy,) = shipped(spans)

    assert dict(copy.attributes or {}) == {"code": 0, "name": "n"}
    assert encode_spans([copy]) == encode_spans(spans)


class Encoding(SpanExporter):
    """Encodes as the OTLP exporters do, and keeps what it would have sent."""

    def __init__(self) -> None:
        self.sent: list[ExportTraceServiceRequest] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.sent.append(encode_spans(spans))
        return SpanExportResult.SUCCESS


def test_a_span_that_cannot_be_encoded_is_dropped_alone() -> None:
    """A name with a lone surrogate is not text a request can carry: the SDK's encoder fails the
    whole batch on it; only that span is left out."""
    provider, memory = recording()
    tracer = provider.get_tracer("orders")
    for name in ("before", "bad \udc80", "after"):
        tracer.start_span(name).end()
    encoding = Encoding()

    deliver(encoding, shipped(memory.get_finished_spans()))

    assert [span.name for request in encoding.sent for rs in request.resource_spans
            for scope in rs.scope_spans for span in scope.spans] == ["before", "after"]


# --- the OTEL_ variables ------------------------------------------------------------------------

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


@pytest.mark.parametrize(("env", "chosen"), [
    ({}, ()),  # no endpoint: spans are made (trace ids in logs) but not exported
    (ENDPOINT, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ("otlp",)),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),  # asked for: the SDK's default endpoint
    ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
    ({"OTEL_TRACES_EXPORTER": " Console , otlp"} | ENDPOINT, ("console", "otlp")),
    ({"OTEL_TRACES_EXPORTER": "none"} | ENDPOINT, None),
])
def test_otel_traces_exporter_chooses_the_exporters(env: dict[str, str], chosen: tuple[str, ...] | None) -> None:
    assert trace_exporters(env) == chosen


@pytest.mark.parametrize("value", ["zipkin", "jaeger", "otlp,none", "logging"])
def test_an_unsupported_traces_exporter_is_refused_at_set_up(value: str) -> None:
    with pytest.raises(ValueError, match=r"OTEL_TRACES_EXPORTER=.*otlp, console or none"):
        setup_tracing("command-server", {"OTEL_TRACES_EXPORTER": value})


@pytest.mark.parametrize(("env", "protocol"), [
    ({}, "grpc"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc"),
])
def test_the_traces_protocol_overrides_the_general_one(env: dict[str, str], protocol: str) -> None:
    assert otlp_protocol(env) == protocol


def test_an_unsupported_protocol_is_refused_at_set_up_naming_its_variable() -> None:
    env = ENDPOINT | {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}
    with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'.*grpc or http/protobuf"):
        setup_tracing("command-server", env)


@pytest.mark.parametrize(("name", "env", "kind"), [
    ("otlp", {}, GRPCSpanExporter),
    ("otlp", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HTTPSpanExporter),
    ("console", {}, ConsoleSpanExporter),
])
def test_the_child_exports_with_the_sdks_exporter(name: str, env: dict[str, str], kind: type[SpanExporter]) -> None:
    chosen = exporter(name, env)
    try:
        assert type(chosen) is kind
    finally:
        chosen.shutdown()


class RecordOnly(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


def test_only_sampled_spans_are_shipped() -> None:
    processor = ShippingSpanProcessor({"OTEL_BSP_SCHEDULE_DELAY": "60000"})
    try:
        for name, sampler in (("recorded", RecordOnly()), ("sampled", ALWAYS_ON)):
            provider = TracerProvider(sampler=sampler)
            provider.add_span_processor(processor)
            provider.get_tracer("orders").start_span(name).end()

        assert [name for _, _, (name, *_) in processor._queue] == ["sampled"]
    finally:
        processor.shutdown()

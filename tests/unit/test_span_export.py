"""Spans packed for the exporting process and framed there are exactly the OTLP request the SDK's
encoder makes of them."""

from __future__ import annotations

import enum

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from server.telemetry.span_export import exporter, frame, pack, plain


def recording(resource: Resource | None = None, limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider, and the exporter that keeps the spans it finishes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def finished_spans() -> list[ReadableSpan]:
    """Spans with everything the encoder reads: remote and local parents, links, events, an error,
    trace state, every attribute type, and limits that drop attributes, events and links."""
    limits = SpanLimits(max_attributes=6, max_events=2, max_links=2, max_event_attributes=1, max_link_attributes=1)
    provider, memory = recording(Resource.create({"service.name": "orders-test"}), limits)
    tracer = provider.get_tracer("orders", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0")
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "opaque1")]))
    linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span("/orders.v1.CommandService/PlaceOrder", context=parent_ctx, kind=SpanKind.SERVER,
                                      attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0}) as server:
        server.set_attributes({"orders.aggregate_version": 3, "ratio": 0.5, "ok": True, "ids": ("a", "b"),
                               "counts": (1, 2), "one.too.many": "x", "two.too.many": "y"})
        child = tracer.start_span("outbox write order", kind=SpanKind.CLIENT,
                                  links=[Link(linked, {"kept": "1", "dropped": "2"}), Link(remote), Link(linked)])
        child.add_event("retry", {"attempt": 1, "dropped": True})
        child.add_event("second")
        child.add_event("third")
        child.set_status(StatusCode.ERROR, "OperationalError")
        child.end()
    with tracer.start_as_current_span("process orders.events", kind=SpanKind.CONSUMER):
        pass
    return list(memory.get_finished_spans())


def received(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    """What the exporting process sends of `spans`: the request it parses from its frame of them."""
    return ExportTraceServiceRequest.FromString(frame(pack([plain(span) for span in spans])))


def test_shipped_spans_encode_as_the_originals() -> None:
    spans = finished_spans()
    assert [s.dropped_attributes for s in spans] == [0, 3, 0]
    assert spans[0].dropped_events == 1 and spans[0].dropped_links == 1

    request = received(spans)

    assert request == encode_spans(spans)
    assert request.SerializeToString() == encode_spans(spans).SerializeToString()


def test_spans_of_different_resources_stay_apart() -> None:
    spans = finished_spans()
    other, memory = recording(Resource.create({"service.name": "orders-other"}))
    other.get_tracer("orders").start_span("elsewhere").end()
    mixed = [spans[0], *memory.get_finished_spans(), spans[1]]

    request = received(mixed)

    assert request == encode_spans(mixed)
    assert len(request.resource_spans) == 2


_texts = st.text(st.characters(exclude_categories=()), max_size=6)  # lone surrogates too
_scalars = st.one_of(st.booleans(), st.integers(), st.floats(), _texts, st.binary(max_size=4))
_values = st.one_of(_scalars, *(st.lists(st.one_of(scalar, st.none()), max_size=3).map(tuple)
                                for scalar in (st.booleans(), st.integers(), st.floats(), _texts)),
                    st.dictionaries(_texts, _scalars, max_size=2))


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), _values, max_size=3), min_size=1, max_size=4))
def test_any_attributes_encode_as_the_sdk_does(attribute_sets: list[dict[str, AttributeValue]]) -> None:
    """Values that are equal across types (True, 1, 1.0), values seen before (reused encodings),
    mappings, and values the SDK's encoder leaves out (integers past 64 bits, lone surrogates), on
    spans, events and links, encode as the SDK encodes each span's own."""
    provider, memory = recording(Resource.create({"service.name": "orders-test"}))
    tracer = provider.get_tracer("orders")
    linked = SpanContext(0x1234, 0x5678, is_remote=True)
    for attributes in attribute_sets:
        span = tracer.start_span("span", attributes=attributes, links=[Link(linked, attributes)])
        span.add_event("event", attributes)
        span.end()
    spans = list(memory.get_finished_spans())

    for _ in range(2):  # the second time, every encoding that can be reused comes from the cache
        assert received(spans) == encode_spans(spans)


def test_text_values_of_any_length_encode_as_the_sdk_does() -> None:
    """Around the lengths where a KeyValue's length prefixes stop fitting in one byte, with
    characters of one to four bytes."""
    provider, memory = recording()
    tracer = provider.get_tracer("orders")
    for key in ("k", "orders.a.rather.long.attribute.key"):
        for length in (*range(0, 4), *range(80, 130), 300, 20_000):
            for char in ("a", "é", "€", "𝄞"):
                tracer.start_span("span", attributes={key: char * length}).end()
    spans = list(memory.get_finished_spans())

    assert received(spans) == encode_spans(spans)


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

    assert received(spans) == encode_spans(spans)


def test_the_exporter_sends_the_request_it_is_given() -> None:
    """The SDK's exporter still has the two hooks the child's exporter overrides."""
    assert {"_translate_data", "_count_data"} <= set(vars(OTLPSpanExporter))
    request = received(finished_spans())
    otlp = exporter()
    try:
        assert otlp._translate_data(request) is request
        assert otlp._count_data(request) == 3
    finally:
        otlp.shutdown()


def test_a_span_that_cannot_be_encoded_is_dropped_alone() -> None:
    """A name with a lone surrogate is not text the request can carry: the SDK's encoder fails the
    whole batch on it; here only that span is left out."""
    provider, memory = recording()
    tracer = provider.get_tracer("orders")
    tracer.start_span("before").end()
    tracer.start_span("bad \udc80").end()
    tracer.start_span("after").end()
    spans = list(memory.get_finished_spans())

    assert received(spans) == encode_spans([spans[0], spans[2]])

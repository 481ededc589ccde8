"""The projector's cheap reads of what a message carries agree with the libraries' own: the
stream sequence and delivery count with nats-py's metadata, the linked span context with the
W3C propagator, for every input; and the relay's cheap write of a span context with the
propagator's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from projector.consumer import FETCH_BATCH, incoming
from server import telemetry

numbers = st.integers(min_value=0, max_value=2**63)
token = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)


def message(reply: str) -> Msg:
    return Msg(_client=None, subject="orders.events.order.3.o-1", reply=reply, data=b"x",  # type: ignore[arg-type]
               headers={"correlation_id": "c"})


@given(token, token, numbers, numbers, numbers, numbers, numbers)
def test_sequence_and_deliveries_as_nats_py_reads_them(stream: str, consumer: str, delivered: int, stream_seq: int,
                                                       consumer_seq: int, at: int, pending: int) -> None:
    v1 = f"$JS.ACK.{stream}.{consumer}.{delivered}.{stream_seq}.{consumer_seq}.{at}.{pending}"
    v2 = f"$JS.ACK.hub.ACCHASH.{stream}.{consumer}.{delivered}.{stream_seq}.{consumer_seq}.{at}.{pending}.r4nd0m"
    for reply in (v1, v2, v2.rsplit(".", 1)[0]):
        msg = message(reply)
        item = incoming(msg)
        assert (item.stream_seq, item.num_delivered) == (msg.metadata.sequence.stream, msg.metadata.num_delivered)
        assert (item.subject, item.data, item.headers) == (msg.subject, msg.data, msg.headers)


def propagator_view(headers: dict[str, str]) -> trace.SpanContext:
    return trace.get_current_span(TraceContextTextMapPropagator().extract(headers)).get_span_context()


hex_digits = st.text("0123456789abcdef", min_size=1, max_size=34)
traceparents = st.one_of(
    st.builds(lambda t, s, f: f"00-{t:032x}-{s:016x}-{f:02x}", st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1),
              st.integers(0, 255)),
    st.builds(lambda v, t, s, f: f"{v}-{t}-{s}-{f}", st.sampled_from(["00", "01", "ff", "0", "AA"]), hex_digits,
              hex_digits, hex_digits),
    st.builds(lambda t, extra: f"00-{t:032x}-00f067aa0ba902b7-01{extra}", st.integers(1, 2**128 - 1),
              st.sampled_from(["", "-", "-xyz", " ", "\t"])),
    st.text(max_size=60),
)


@given(traceparents, st.sampled_from([None, "vendor=opaque1", "bad state"]))
def test_span_context_as_the_propagator_reads_it(traceparent: str, tracestate: str | None) -> None:
    headers = {"traceparent": traceparent, "correlation_id": "c"}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    assert telemetry.event_span_context(headers) == propagator_view(headers)


def test_the_headers_an_event_carries_read_back_to_their_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("command") as span:
        headers = telemetry.event_headers("corr", "cause")
    linked = telemetry.event_span_context(headers)
    assert linked.trace_id == span.get_span_context().trace_id and linked.span_id == span.get_span_context().span_id
    assert linked == propagator_view(headers) and linked.is_valid
    assert trace.get_current_span(telemetry.event_context(headers)).get_span_context() == linked
    assert not telemetry.event_span_context({}).is_valid


def test_a_full_batch_span_can_link_every_message() -> None:
    """The SDK drops links beyond its limit; the projector's batch span links each message."""
    assert FETCH_BATCH <= telemetry.MAX_LINKS


span_contexts = st.builds(
    lambda t, s, f, state: trace.SpanContext(t, s, is_remote=False, trace_flags=trace.TraceFlags(f),
                                             trace_state=trace.TraceState(state)),
    st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1), st.integers(0, 255),
    st.sampled_from([[], [("vendor", "opaque1")]]),
)


@given(span_contexts)
def test_the_relay_writes_a_span_context_as_the_propagator_does(span_context: trace.SpanContext) -> None:
    ours: dict[str, str] = {"correlation_id": "c"}
    theirs = dict(ours)
    telemetry.event_span_into(ours, span_context)
    TraceContextTextMapPropagator().inject(theirs, trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    assert ours == theirs

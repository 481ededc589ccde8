"""Observability set-up for every process: traces (OpenTelemetry, OTLP) and Prometheus metrics;
plus helpers to carry trace context through the outbox and NATS headers."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.telemetry.logs import CAUSATION_ID, CORRELATION_ID

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
_CARRIED = (CORRELATION_ID, CAUSATION_ID)
MAX_LINKS = 1024

tracer = trace.get_tracer("orders")


def setup_tracing(role: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A tracer provider for this process, honouring the OTEL_ variables.

    OTEL_TRACES_EXPORTER chooses the exporters (`trace_exporters`): `otlp` (over OTEL_EXPORTER_OTLP_PROTOCOL's
    transport, `otlp_protocol`) and `console` run in a helper process; `none`, like OTEL_SDK_DISABLED=true,
    turns tracing off. Unset, spans are exported over OTLP when an endpoint is configured
    (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); without one, spans are not
    recorded, but still give logs their trace ids and still propagate. Raises ValueError for a value
    it does not support.
    """
    # Imported here: the export process runs that module as __main__, and must not find it already imported.
    from server.telemetry.span_export import ShippingSpanProcessor, trace_exporters

    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or (exporters := trace_exporters(env)) is None:
        return None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": f"orders-{role}"}
    # A projector batch span links every message of its batch (duplicates and dead letters too):
    # up to projector.consumer.FETCH_BATCH (1,000), beyond the SDK's default of 128 (OTEL_SPAN_LINK_COUNT_LIMIT still decides when set).
    links = int(env.get("OTEL_SPAN_LINK_COUNT_LIMIT") or MAX_LINKS)
    # Without an exporter nothing would read a recorded span: spans are made but not recorded
    # (ALWAYS_OFF), which still gives each call and event its trace context, for logs and for the
    # processes downstream, at a fraction of the cost (attributes, links, processors).
    sampler = None if exporters else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create(attributes), span_limits=SpanLimits(max_links=links),
                              sampler=sampler)
    if role != "command-server":
        # Only these two baggage entries become span attributes: never tokens or personal data.
        # The command server's spans carry them without it (the server span from the call, the
        # outbox write from its event), and its work on every span is a cost PlaceOrder's hot
        # path need not pay.
        provider.add_span_processor(BaggageSpanProcessor(lambda key: key in _CARRIED))
    if exporters:
        # Encoded and exported by a helper process, not under this process's GIL; the console
        # exporter too, which formats each span as indented JSON and writes it out as it goes.
        provider.add_span_processor(ShippingSpanProcessor(env))
    trace.set_tracer_provider(provider)
    return provider


def metrics_bind(addr: str) -> tuple[str, int]:
    """Where METRICS_ADDR (host:port) listens. An empty host means this machine only (127.0.0.1):
    metrics show what the service does, so reaching them from elsewhere takes an explicit host
    (0.0.0.0, [::] or an interface's address)."""
    host, _, port = addr.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    return host or "127.0.0.1", int(port)


def serve_metrics(addr: str | None) -> None:
    """Serves this process's Prometheus metrics on `addr` (host:port); no address, no endpoint."""
    if not addr:
        return
    from prometheus_client import start_http_server

    host, port = metrics_bind(addr)
    start_http_server(port, addr=host)


# --- context across the outbox and NATS --------------------------------------------------------


_W3C = TraceContextTextMapPropagator()


def event_headers(correlation_id: str, causation_id: str) -> dict[str, str]:
    """What an event carries of the command's context, in its row and then in its NATS headers:
    the ids and the W3C trace context, so whatever handles the event later continues the trace
    (see `event_context`)."""
    carrier = {CORRELATION_ID: correlation_id, CAUSATION_ID: causation_id}
    _W3C.inject(carrier)
    return carrier


# The traceparent `event_headers` writes (version 00, no tracestate beside it).
_OWN_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def event_span_context(headers: Mapping[str, str]) -> trace.SpanContext:
    """Just the span context `event_headers` carries (invalid when there is none): what a link to
    the event's trace needs. Relay and projector ask it for every event, so the form this code
    writes is read directly, at a third of the propagator's cost; any other goes to the propagator."""
    match = _OWN_TRACEPARENT.fullmatch(headers.get("traceparent", ""))
    if match is None or "tracestate" in headers or match[1] == "0" * 32 or match[2] == "0" * 16:
        return trace.get_current_span(_W3C.extract(headers)).get_span_context()
    return trace.SpanContext(int(match[1], 16), int(match[2], 16), is_remote=True,
                             trace_flags=trace.TraceFlags(int(match[3], 16)))


def event_context(headers: Mapping[str, str]) -> context.Context:
    """The context `event_headers` carries: the event's span (`event_span_context`), with the ids
    back in baggage (read from their own headers, which costs a third of parsing a baggage header)."""
    carried = event_span_context(headers)
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(carried)) if carried.is_valid else context.Context()
    for key in _CARRIED:
        if headers.get(key):
            ctx = baggage.set_baggage(key, headers[key], ctx)
    return ctx


def event_span_into(headers: dict[str, str], span_context: trace.SpanContext) -> None:
    """Writes a span's W3C trace context into `headers`, as `event_context` reads it. The relay
    writes one per event: a valid span context without trace state (the form `event_headers`
    makes) is formatted directly, as the propagator formats it; any other goes to the propagator."""
    if span_context.is_valid and not span_context.trace_state:
        headers["traceparent"] = (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
                                  f"-{span_context.trace_flags:02x}")
    else:
        _W3C.inject(headers, context=trace.set_span_in_context(trace.NonRecordingSpan(span_context)))


def records_spans() -> bool:
    """Whether a span this process starts may be recorded: not with tracing off (no SDK provider)
    nor without an exporter (`setup_tracing`'s ALWAYS_OFF). A hot path asks once, and builds a
    span's attributes and baggage only when a span can hold them."""
    provider = trace.get_tracer_provider()
    return isinstance(provider, TracerProvider) and provider.sampler is not ALWAYS_OFF


def inject_into(headers: dict[str, str], ctx: context.Context) -> None:
    """Writes `ctx`'s trace context and baggage into `headers` without making it current."""
    propagate.inject(headers, context=ctx)


def extract(headers: Mapping[str, Any] | None) -> context.Context:
    """The trace context and baggage in `headers` (names matched case-insensitively), as `inject_into` writes them."""
    return propagate.extract({str(k).lower(): str(v) for k, v in (headers or {}).items()})


def correlation_id() -> str | None:
    value = baggage.get_baggage(CORRELATION_ID)
    return None if value is None else str(value)


def causation_id() -> str | None:
    value = baggage.get_baggage(CAUSATION_ID)
    return None if value is None else str(value)


def with_ids(ctx: context.Context, correlation_id: str, causation_id: str) -> context.Context:
    """`ctx` with the correlation and causation ids in its baggage."""
    return baggage.set_baggage(CAUSATION_ID, causation_id, baggage.set_baggage(CORRELATION_ID, correlation_id, ctx))


@contextmanager
def ids(correlation_id: str, causation_id: str) -> Iterator[None]:
    """Puts the correlation and causation ids in baggage for everything done inside."""
    ctx = baggage.set_baggage(CORRELATION_ID, correlation_id)
    ctx = baggage.set_baggage(CAUSATION_ID, causation_id, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)

"""Span export from a helper process: spans leave as plain values; the SDK's exporters encode and send them there."""

from __future__ import annotations

import collections
import logging
import marshal
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

log = logging.getLogger(__name__)

_HEADER = 4  # each batch: its length (little-endian), then the batch as `pack` writes it
_CHILD = [sys.executable, "-m", "server.telemetry.span_export"]

# --- which exporters, from the OTEL_ variables --------------------------------------------------

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")


def trace_exporters(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """The exporters OTEL_TRACES_EXPORTER names (a comma-separated list, case-insensitive), or
    None for `none`: no tracing at all. Unset, it means `otlp` when an OTLP endpoint is configured
    and no exporter otherwise, so a process run without a collector does not retry one in vain.
    Raises ValueError, naming the variable, for a value this server does not support."""
    configured = env.get("OTEL_TRACES_EXPORTER", "")
    names = tuple(dict.fromkeys(name.strip().lower() for name in configured.split(",") if name.strip()))
    if any(name not in EXPORTERS for name in names) or ("none" in names and len(names) > 1):
        raise ValueError(f"OTEL_TRACES_EXPORTER={configured!r} is not supported: use otlp, console or none, "
                         "or a comma-separated list of otlp and console")
    if names == ("none",):
        return None
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ("otlp",)
    if "otlp" in names:
        otlp_protocol(env)  # checked here, at set-up, rather than in the child
    return names


def otlp_protocol(env: Mapping[str, str]) -> str:
    """The OTLP transport: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
    else grpc (as the SDK's own auto-configuration defaults). Raises ValueError, naming the
    variable, for a protocol the SDK has no exporter for (http/json)."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value := env.get(variable, "").strip():
            if value.lower() not in PROTOCOLS:
                raise ValueError(f"{variable}={value!r} is not supported: use grpc or http/protobuf")
            return value.lower()
    return "grpc"


# --- shipping, in the traced process ------------------------------------------------------------


class ShippingSpanProcessor(SpanProcessor):
    """Queues finished, sampled spans; a thread ships them in batches to the exporting child.

    The SDK's exporters turn every span into protobuf objects (or JSON text) in Python and then
    send them: in a BatchSpanProcessor's thread, that is paid under the same GIL as the gRPC
    server's event loop. Here each span is taken apart into plain values as it ends (`plain`, read
    through the span's public properties), and the thread writes each batch of them, marshalled
    (`pack`), to a pipe. The child (`python -m server.telemetry.span_export`, started on the first
    batch) rebuilds them as the SDK's ReadableSpans (`rebuilt`) and hands them to the SDK's
    exporters, chosen and configured by the same OTEL_ variables (`trace_exporters`, `otlp_protocol`).

    Batching follows the BatchSpanProcessor's variables (OTEL_BSP_SCHEDULE_DELAY,
    OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE). As there, the serving thread never
    waits: spans beyond a full queue are dropped and counted, and a slow or broken collector only
    fills the pipe. The child exports what it was given before it exits when the pipe closes, also
    when this process is killed.
    """

    SHUTDOWN_SECONDS = 5.0

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """`env`: the OTEL_ variables for batching here and for the exporter in the child."""
        self._env = dict(os.environ if env is None else env)
        env = self._env
        self._max_queue = int(env.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048)
        self._batch = int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512)
        self._delay = int(env.get("OTEL_BSP_SCHEDULE_DELAY") or 5000) / 1000
        self._queue: collections.deque[Ended] = collections.deque()
        self._wake = threading.Event()
        self._flushes: collections.deque[threading.Event] = collections.deque()
        self._stopping = False
        self._abandoned = False  # shutdown gave up on the child: drop what is left
        self._child: subprocess.Popen[bytes] | None = None
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="OtelSpanShipper", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        # The sampled bit itself: TraceFlags.sampled reads it through a property, for every span.
        if (ctx := span.context) is None or not ctx.trace_flags & TraceFlags.SAMPLED:
            return
        if len(self._queue) >= self._max_queue:
            if not self.dropped:
                log.warning("the span export queue is full: spans are being dropped")
            self.dropped += 1
            return
        # Its values now, so the span's objects are freed at once rather than survive, queued,
        # into older generations of the garbage collector, whose collections they make slower.
        self._queue.append(plain(span))
        if len(self._queue) == self._batch:  # the shipper drains all there is once awake
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """True once every span queued before the call is in the child's hands (it exports them
        moments later)."""
        flushed = threading.Event()
        self._flushes.append(flushed)
        self._wake.set()
        return flushed.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Ships what is queued and lets the child export it. A child that takes no spans for
        SHUTDOWN_SECONDS (its collector unreachable, the pipe full) is killed and the rest
        dropped: a process stopping waits for that long, not for the exporter's retries."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=self.SHUTDOWN_SECONDS)
        if self._thread.is_alive():
            self._abandoned = True
            child = self._child
            if child is not None:
                child.kill()  # the shipper's write ends with a broken pipe; it drops the rest
            self._thread.join(timeout=self.SHUTDOWN_SECONDS)
        elif self._child is not None:
            _close(self._child, self.SHUTDOWN_SECONDS)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            stopping = self._stopping  # read before shipping: the last round ships all that came before
            # Flushes asked for before this point cover only spans queued before it: all shipped below.
            flushes = [self._flushes.popleft() for _ in range(len(self._flushes))]
            while self._queue:
                self._ship([self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))])
            for flushed in flushes:
                flushed.set()
            if stopping:
                break
        if self.dropped:
            log.warning("spans dropped: the export queue was full", extra={"spans": self.dropped})

    def _ship(self, spans: list[Ended]) -> None:
        if self._abandoned:
            self.dropped += len(spans)
            return
        data = pack(spans)
        if self._child is not None and self._child.poll() is not None:
            self._discard_child()  # it died: the next one starts below
        try:
            if self._child is None:
                self._child = subprocess.Popen(_CHILD, stdin=subprocess.PIPE, env=self._env)
            pipe: IO[bytes] = self._child.stdin  # type: ignore[assignment]
            pipe.write(len(data).to_bytes(_HEADER, "little") + data)
            pipe.flush()
        except OSError as exc:  # the child died mid-write: these spans are lost, the next batch starts a new one
            log.warning("span export process unavailable", extra={"error": repr(exc), "spans": len(spans)})
            self._discard_child()

    def _discard_child(self) -> None:
        if self._child is not None:
            _close(self._child)
        self._child = None


def _close(child: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    """Closes the child's pipe, so it exports what it holds and exits; kills it after `seconds`."""
    try:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=seconds)
    except (OSError, subprocess.TimeoutExpired):
        child.kill()
        child.wait()


# --- spans as plain values, in this process ------------------------------------------------------
#
# What the child needs of each span, as tuples, dicts and scalars that marshal writes in C. A batch
# is grouped by resource and scope, so each is written once:
# [(resource attributes, schema_url, [(scope, [span, ...]), ...]), ...].

Plain = tuple[Any, ...]
# A span as `plain` takes it apart: its resource and scope, and its own values.
Ended = tuple[Resource, InstrumentationScope | None, Plain]


def plain(span: ReadableSpan) -> Ended:
    """`span`'s resource and scope, which `pack` groups by, and what the child needs of the span
    itself: all that the OTLP encoder reads of it (the console exporter also prints the trace state
    of links, left out: a batch span can have a thousand links). Only sampled spans are shipped, so
    the trace flags are not; a parent is in the span's trace, so only its span id and whether it is
    remote are."""
    ctx, parent, status = span.context, span.parent, span.status
    assert ctx is not None
    events, links = span.events, span.links
    return span.resource, span.instrumentation_scope, (
        span.name, ctx.trace_id, ctx.span_id,
        tuple(ctx.trace_state.items()) if ctx.trace_state else (),
        None if parent is None else (parent.span_id, parent.is_remote),
        _KINDS.index(span.kind), span.start_time, span.end_time,
        _copy(span.attributes), span.dropped_attributes,
        tuple((e.timestamp, e.name, _copy(e.attributes), e.dropped_attributes) for e in events) if events else (),
        span.dropped_events,
        tuple((link.context.trace_id, link.context.span_id, link.context.is_remote, _copy(link.attributes),
               link.dropped_attributes) for link in links) if links else (),
        span.dropped_links,
        _STATUS_CODES.index(status.status_code), status.description,
    )


# Kinds and status codes travel as their places here: finding one costs a fraction of an enum's `.value`.
_KINDS = tuple(SpanKind)
_STATUS_CODES = tuple(StatusCode)


def pack(spans: Sequence[Ended]) -> bytes:
    """Spans from `plain` as one marshalled batch, for `rebuilt` in the child: grouped by resource
    and then by scope, each told apart by identity (a process has one resource and a scope per
    tracer), as the hashes of their values cost more. Equal scopes of two tracers may make two
    groups: the SDK's encoder groups by value again in the child."""
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[Plain]]]]] = {}
    for resource, scope, span in spans:
        if (group := groups.get(id(resource))) is None:
            group = groups[id(resource)] = (resource, {})
        if (members := group[1].get(id(scope))) is None:
            members = group[1][id(scope)] = (scope, [])
        members[1].append(span)
    batch = [(_copy(resource.attributes), resource.schema_url, [(_scope(scope), members) for scope, members in scopes.values()])
             for resource, scopes in groups.values()]
    try:
        return marshal.dumps(batch)
    except ValueError:  # a value of a subclass (an IntEnum, a str subclass): shipped as its base type
        return marshal.dumps(_base(batch))


def _scope(scope: InstrumentationScope | None) -> Plain | None:
    return None if scope is None else (scope.name, scope.version, _copy(scope.attributes), scope.schema_url)


def _copy(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The attributes as a dict. A span's are a read-only view of the SDK's BoundedAttributes,
    whose own copy costs a third of iterating over the view."""
    if isinstance(attributes, MappingProxyType):
        return attributes.copy()
    return dict(attributes) if attributes else None


def _base(value: Any) -> Any:
    """`value` with every scalar of a subclass as its base type, every sequence a tuple and every
    mapping a dict: values marshal can write, exported as the originals would be."""
    cls = value.__class__
    if cls in _MARSHALLED or value is None:
        return value
    if isinstance(value, Mapping):
        return {_base(k): _base(v) for k, v in value.items()}
    for base, convert in _BASES:  # bool has no subclasses
        if isinstance(value, base):
            return convert(value)  # the value itself, not what its class's __str__ or __int__ makes of it
    if isinstance(value, Sequence):
        return tuple(_base(item) for item in value)
    return value


_MARSHALLED = frozenset({bool, int, float, str, bytes})
_BASES: tuple[tuple[type, Callable[[Any], Any]], ...] = ((int, int.__int__), (float, float.__float__), (str, str.__str__), (bytes, bytes.__bytes__))


# --- the spans again, in the child ---------------------------------------------------------------


def rebuilt(packed: bytes) -> list[ReadableSpan]:
    """A batch from `pack` as the SDK's ReadableSpans, equal to the originals in all that `plain` takes."""
    spans: list[ReadableSpan] = []
    for attributes, schema_url, scopes in marshal.loads(packed):
        resource = Resource(attributes or {}, schema_url)
        for scope, members in scopes:
            instrumentation = None if scope is None else InstrumentationScope(scope[0], scope[1], scope[3], scope[2])
            spans.extend(_span(values, resource, instrumentation) for values in members)
    return spans


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _span(values: Plain, resource: Resource, scope: InstrumentationScope | None) -> ReadableSpan:
    (name, trace_id, span_id, trace_state, parent, kind, start, end, attributes, dropped_attributes,
     events, dropped_events, links, dropped_links, status_code, description) = values
    return ReadableSpan(
        name,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED,
                            trace_state=TraceState(list(trace_state)) if trace_state else None),
        parent=None if parent is None else SpanContext(trace_id, parent[0], is_remote=parent[1], trace_flags=_SAMPLED),
        resource=resource,
        attributes=_bounded(attributes, dropped_attributes),
        events=_dropping([Event(event_name, _bounded(event_attributes, event_dropped), timestamp)
                          for timestamp, event_name, event_attributes, event_dropped in events], dropped_events),
        links=_dropping([Link(SpanContext(link_trace_id, link_span_id, is_remote=remote, trace_flags=_SAMPLED),
                              _bounded(link_attributes, link_dropped))
                         for link_trace_id, link_span_id, remote, link_attributes, link_dropped in links], dropped_links),
        kind=_KINDS[kind],
        status=Status(_STATUS_CODES[status_code], description),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _bounded(attributes: dict[str, Any] | None, dropped: int) -> Mapping[str, Any] | None:
    """The attributes, and how many the span's limits dropped: the SDK reads that count from its
    BoundedAttributes, so only attributes that lost some need one."""
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=True)
    bounded.dropped = dropped
    return bounded


def _dropping(items: list[Any], dropped: int) -> Sequence[Any]:
    """Events or links, and how many the span's limits dropped (kept as the SDK keeps it, in a BoundedList)."""
    if not dropped:
        return items
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


# --- the exporting process ----------------------------------------------------------------------


def exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    """The SDK's exporter `name` (from `trace_exporters`). An OTLP exporter takes its endpoint,
    headers, TLS, compression, timeout and retries from the OTEL_ variables of this process."""
    if name == "console":
        return ConsoleSpanExporter()
    if otlp_protocol(env) == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

        return HTTPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def deliver(to: SpanExporter, spans: Sequence[ReadableSpan]) -> None:
    """Exports `spans`. A span the OTLP encoder cannot take (a name that is not text: a lone
    surrogate) fails its whole batch there: then the spans go one by one, and only it is dropped."""
    try:
        to.export(spans)
    except ValueError:
        for span in spans:
            try:
                to.export([span])
            except ValueError:
                log.warning("a span cannot be encoded; it is dropped", extra={"span": repr(span.name)})


def main() -> int:
    """Reads batches from stdin and exports their spans, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when export ends: it closes the pipe
    from server.telemetry.logs import setup_logging

    setup_logging("span-export", os.environ.get("LOG_LEVEL", "INFO"))
    exporters = [exporter(name, os.environ) for name in trace_exporters(os.environ) or ()]
    batches = sys.stdin.buffer
    try:
        while len(header := batches.read(_HEADER)) == _HEADER:
            spans = rebuilt(batches.read(int.from_bytes(header, "little")))
            for each in exporters:
                deliver(each, spans)
    finally:
        for each in exporters:
            each.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

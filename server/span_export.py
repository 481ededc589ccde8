"""Span export from a helper process, so encoding spans never takes the serving thread's time.

The OTLP exporter turns every span into protobuf objects in Python: about as much CPU as the
span itself cost to make, and in a BatchSpanProcessor's thread it is paid under the same GIL as
the gRPC server's event loop (a fifth of a command server's throughput). Here the process only
copies each finished span into plain tuples and writes them, marshalled, to a pipe; a child
process (`python -m server.span_export`, started on the first batch) encodes them into the OTLP
request the SDK's encoder would have made of the spans, and sends it with the SDK's own
OTLPSpanExporter, configured by the same OTEL_ variables.

Batching follows the BatchSpanProcessor's variables (OTEL_BSP_SCHEDULE_DELAY,
OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE). As there, the serving thread never
waits: spans beyond a full queue are dropped and counted, and a slow or broken collector only
fills the pipe. The child exports what it was given before it exits when the pipe closes, also
when this process is killed.
"""

from __future__ import annotations

import collections
import functools
import logging
import marshal
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, SpanFlags, Status
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

log = logging.getLogger(__name__)

_HEADER = 4  # each frame: its length (little-endian), then a marshalled list of span groups
_CHILD = [sys.executable, "-m", "server.span_export"]


class ShippingSpanProcessor(SpanProcessor):
    """Queues finished, sampled spans; a thread ships them in batches to the exporting child."""

    SHUTDOWN_SECONDS = 5.0

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """`env`: the OTEL_ variables for batching here and for the exporter in the child."""
        self._env = dict(os.environ if env is None else env)
        env = self._env
        self._max_queue = int(env.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048)
        self._batch = int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512)
        self._delay = int(env.get("OTEL_BSP_SCHEDULE_DELAY") or 5000) / 1000
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._flushes: collections.deque[threading.Event] = collections.deque()
        self._stopping = False
        self._abandoned = False  # shutdown gave up on the child: drop what is left
        self._child: subprocess.Popen[bytes] | None = None
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="OtelSpanShipper", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        if len(self._queue) >= self._max_queue:
            if not self.dropped:
                log.warning("the span export queue is full: spans are being dropped")
            self.dropped += 1
            return
        self._queue.append(span)
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

    def _ship(self, spans: list[ReadableSpan]) -> None:
        if self._abandoned:
            self.dropped += len(spans)
            return
        data = frame(spans)
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


# --- spans as plain values ----------------------------------------------------------------------


def frame(spans: Sequence[ReadableSpan]) -> bytes:
    """The spans, marshalled as `to_wire` lays them out, for `encode` in the child."""
    wired = to_wire(spans)
    try:
        return marshal.dumps(wired)
    except ValueError:  # an attribute of a subclass (an IntEnum, say), which marshal refuses
        return marshal.dumps(_plain(wired))


def _plain(value: Any) -> Any:
    """`value` with every str, bytes, bool, int and float as exactly that type."""
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, bool):  # before int: a bool is an int too
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    return value


def to_wire(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Spans as marshal-able values: one group per Resource object (a process has one), each with
    its spans as tuples."""
    groups: dict[int, tuple[Any, list[tuple[Any, ...]]]] = {}
    for span in spans:
        _, wired = groups.setdefault(id(span.resource), (span.resource, []))
        wired.append(_span(span))
    return [(dict(resource.attributes), resource.schema_url, wired) for resource, wired in groups.values()]


def _span(span: ReadableSpan) -> tuple[Any, ...]:
    ctx, parent, scope = span.context, span.parent, span.instrumentation_scope
    assert ctx is not None
    return (
        span.name, ctx.trace_id, ctx.span_id, tuple(ctx.trace_state.items()),
        None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        span.kind.value, span.start_time, span.end_time, dict(span.attributes or {}),
        [(e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes) for e in span.events],
        [(link.context.trace_id, link.context.span_id, link.context.is_remote, dict(link.attributes or {}),
          link.dropped_attributes) for link in span.links],
        span.status.status_code.value, span.status.description,
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
        None if scope is None else (scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})),
    )


def encode(groups: list[tuple[Any, ...]]) -> ExportTraceServiceRequest:
    """The OTLP request for the spans `to_wire` wrote: what the SDK's encoder makes of the
    originals, built straight from the tuples at less than half its cost."""
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=_key_values(attributes)), scope_spans=_scope_spans(wired),
                      schema_url=schema_url)
        for attributes, schema_url, wired in groups
    ])


def _scope_spans(wired: list[tuple[Any, ...]]) -> list[ScopeSpans]:
    by_scope: dict[Any, tuple[Any, list[Span]]] = {}
    for (name, trace_id, span_id, trace_state, parent, kind, start, end, attributes, events, links,
         status_code, status_description, dropped, scope) in wired:
        _, spans = by_scope.setdefault(None if scope is None else tuple(scope[:3]), (scope, []))
        spans.append(Span(
            trace_id=trace_id.to_bytes(16, "big"),
            span_id=span_id.to_bytes(8, "big"),
            trace_state=",".join(f"{key}={value}" for key, value in trace_state),
            parent_span_id=b"" if parent is None else parent[1].to_bytes(8, "big"),
            name=name,
            kind=kind + 1,  # the API's SpanKind counts from INTERNAL = 0, OTLP's from UNSPECIFIED = 0
            start_time_unix_nano=start,
            end_time_unix_nano=end,
            attributes=_key_values(attributes),
            events=[Span.Event(name=n, time_unix_nano=ts, attributes=_key_values(a), dropped_attributes_count=d)
                    for n, ts, a, d in events],
            links=[Span.Link(trace_id=t.to_bytes(16, "big"), span_id=s.to_bytes(8, "big"), attributes=_key_values(a),
                             dropped_attributes_count=d, flags=_flags(remote))
                   for t, s, remote, a, d in links],
            status=Status(code=status_code, message=status_description),
            dropped_attributes_count=dropped[0],
            dropped_events_count=dropped[1],
            dropped_links_count=dropped[2],
            flags=_flags(parent is not None and parent[2]),
        ))
    return [
        ScopeSpans(scope=InstrumentationScope(), spans=spans) if scope is None else
        ScopeSpans(scope=InstrumentationScope(name=scope[0], version=scope[1], attributes=_key_values(scope[3])),
                   spans=spans, schema_url=scope[2])
        for scope, spans in by_scope.values()
    ]


def _flags(remote: bool) -> int:
    return SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | (SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK if remote else 0)


def _key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    encoded = []
    for key, value in attributes.items():
        try:
            if value.__class__ in _REUSED:
                encoded.append(_reused_key_value(key, value.__class__.__name__, value))
            else:
                encoded.append(KeyValue(key=key, value=_any_value(value)))
        except (ValueError, UnicodeError):  # past 64 bits, a lone surrogate: left out, as the SDK does
            log.warning("a span attribute cannot be encoded; it is left out", extra={"attribute": key})
    return encoded


# Not floats: 0.0 and -0.0 are equal keys that encode differently.
_REUSED = frozenset({str, int, bool, bytes})


@functools.lru_cache(maxsize=4096)
def _reused_key_value(key: str, kind: str, value: Any) -> KeyValue:
    """Most attributes repeat from span to span (rpc.method, db.system.name, an event type): their
    encoding is kept and reused. `kind`, the value's class name, is part of the cache key: True
    and 1 are equal."""
    return KeyValue(key=key, value=_any_value(value))


def _any_value(value: Any) -> AnyValue:
    """As the SDK's encoder: attribute values are scalars or sequences of them."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (tuple, list)):
        return AnyValue(array_value=ArrayValue(values=[_any_value(item) for item in value]))
    return AnyValue()


# --- the exporting process ----------------------------------------------------------------------


def exporter() -> Any:
    """The SDK's OTLP exporter (endpoint, headers, TLS, compression, timeout and retries from the
    OTEL_ variables), sending the requests `encode` builds: its two translation hooks, which a
    unit test checks the SDK still has, pass them through."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    class Exporter(OTLPSpanExporter):
        def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
            return data  # type: ignore[no-any-return]

        def _count_data(self, data: Any) -> int:
            return sum(len(scope.spans) for spans in data.resource_spans for scope in spans.scope_spans)

    return Exporter()


def main() -> int:
    """Reads frames from stdin and exports their spans over OTLP, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when export ends: it closes the pipe
    from server.telemetry import setup_logging

    setup_logging("span-export", os.environ.get("LOG_LEVEL", "INFO"))
    otlp = exporter()
    frames = sys.stdin.buffer
    try:
        while len(header := frames.read(_HEADER)) == _HEADER:
            otlp.export(encode(marshal.loads(frames.read(int.from_bytes(header, "little")))))
    finally:
        otlp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

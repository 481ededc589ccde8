"""Span export from a helper process, so encoding spans never takes the serving thread's time.

The OTLP exporter turns every span into protobuf objects in Python: about as much CPU as the
span itself cost to make, and in a BatchSpanProcessor's thread it is paid under the same GIL as
the gRPC server's event loop (a fifth of a command server's throughput). Here the process only
copies each finished span into plain tuples and writes them, marshalled, to a pipe; a child
process (`python -m server.span_export`, started on the first batch) rebuilds the spans and
exports them with the SDK's own OTLPSpanExporter, configured by the same OTEL_ variables.

Batching follows the BatchSpanProcessor's variables (OTEL_BSP_SCHEDULE_DELAY,
OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE). As there, the serving thread never
waits: spans beyond a full queue are dropped and counted, and a slow or broken collector only
fills the pipe. The child exports what it was given before it exits when the pipe closes, also
when this process is killed.
"""

from __future__ import annotations

import collections
import logging
import marshal
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

_HEADER = 4  # each frame: its length (little-endian), then a marshalled list of span groups
_CHILD = [sys.executable, "-m", "server.span_export"]


class ShippingSpanProcessor(SpanProcessor):
    """Queues finished, sampled spans; a thread ships them in batches to the exporting child."""

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
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        if self._child is not None:
            _close(self._child)

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
        frame = marshal.dumps(to_wire(spans))
        if self._child is not None and self._child.poll() is not None:
            self._discard_child()  # it died: the next one starts below
        try:
            if self._child is None:
                self._child = subprocess.Popen(_CHILD, stdin=subprocess.PIPE, env=self._env)
            pipe: IO[bytes] = self._child.stdin  # type: ignore[assignment]
            pipe.write(len(frame).to_bytes(_HEADER, "little") + frame)
            pipe.flush()
        except OSError as exc:  # the child died mid-write: these spans are lost, the next batch starts a new one
            log.warning("span export process unavailable", extra={"error": repr(exc), "spans": len(spans)})
            self._discard_child()

    def _discard_child(self) -> None:
        if self._child is not None:
            _close(self._child)
        self._child = None


def _close(child: subprocess.Popen[bytes]) -> None:
    """Closes the child's pipe, so it exports what it holds and exits; kills it after 10 s."""
    try:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        child.kill()
        child.wait()


# --- spans as plain values ----------------------------------------------------------------------


def to_wire(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Spans as marshal-able values: one group per resource, each with its spans as tuples."""
    groups: dict[int, tuple[Resource, list[tuple[Any, ...]]]] = {}
    for span in spans:
        _, wired = groups.setdefault(id(span.resource), (span.resource, []))
        wired.append(_span(span))
    return [(dict(resource.attributes), resource.schema_url, wired) for resource, wired in groups.values()]


def _span(span: ReadableSpan) -> tuple[Any, ...]:
    ctx, parent, scope = span.context, span.parent, span.instrumentation_scope
    assert ctx is not None
    return (
        span.name, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), tuple(ctx.trace_state.items()),
        None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        span.kind.value, span.start_time, span.end_time, dict(span.attributes or {}),
        [(e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes) for e in span.events],
        [(link.context.trace_id, link.context.span_id, int(link.context.trace_flags), link.context.is_remote,
          dict(link.attributes or {}), link.dropped_attributes) for link in span.links],
        span.status.status_code.value, span.status.description,
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
        None if scope is None else (scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})),
    )


def _attributes(values: dict[str, Any], dropped: int) -> Attributes:
    """Attributes, with the count a limit dropped where there was one (the exporter reads it)."""
    if not dropped:
        return values
    bounded = BoundedAttributes(attributes=values, immutable=True)
    bounded.dropped = dropped
    return bounded


def _listed(values: list[Any], dropped: int) -> Sequence[Any]:
    if not dropped:
        return values
    bounded = BoundedList.from_seq(len(values), values)
    bounded.dropped = dropped
    return bounded


def from_wire(groups: list[tuple[Any, ...]]) -> list[ReadableSpan]:
    """The spans `to_wire` wrote, as ReadableSpans the OTLP exporter encodes as it would the originals."""
    spans: list[ReadableSpan] = []
    scopes: dict[tuple[Any, ...], InstrumentationScope] = {}
    for resource_attributes, schema_url, wired in groups:
        resource = Resource(resource_attributes, schema_url)
        for (name, trace_id, span_id, flags, trace_state, parent, kind, start, end, attributes, events, links,
             status_code, status_description, dropped, scope) in wired:
            if scope is not None and tuple(scope[:3]) not in scopes:
                scopes[tuple(scope[:3])] = InstrumentationScope(*scope[:3], attributes=scope[3] or None)
            spans.append(ReadableSpan(
                name=name,
                context=SpanContext(trace_id, span_id, False, TraceFlags(flags), TraceState(list(trace_state))),
                parent=None if parent is None else SpanContext(parent[0], parent[1], parent[2]),
                resource=resource,
                attributes=_attributes(attributes, dropped[0]),
                events=_listed([Event(n, _attributes(a, d), ts) for n, ts, a, d in events], dropped[1]),
                links=_listed([Link(SpanContext(t, s, remote, TraceFlags(f)), _attributes(a, d))
                               for t, s, f, remote, a, d in links], dropped[2]),
                kind=SpanKind(kind),
                status=Status(StatusCode(status_code), status_description),
                start_time=start,
                end_time=end,
                instrumentation_scope=None if scope is None else scopes[tuple(scope[:3])],
            ))
    return spans


# --- the exporting process ----------------------------------------------------------------------


def main() -> int:
    """Reads frames from stdin and exports their spans over OTLP, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when export ends: it closes the pipe
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from server.telemetry import setup_logging

    setup_logging("span-export", os.environ.get("LOG_LEVEL", "INFO"))
    exporter = OTLPSpanExporter()
    frames = sys.stdin.buffer
    try:
        while len(header := frames.read(_HEADER)) == _HEADER:
            frame = frames.read(int.from_bytes(header, "little"))
            exporter.export(from_wire(marshal.loads(frame)))
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

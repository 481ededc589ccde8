"""Span export from a helper process, so sending spans never takes the serving thread's time.

The SDK's OTLP exporter turns every span into protobuf objects in Python and then sends them: in a
BatchSpanProcessor's thread, that is paid under the same GIL as the gRPC server's event loop.
Here a thread writes each batch of finished spans, as the serialized OTLP request (`frame`, written
directly at a fifth of what the SDK's encoder costs), to a pipe; a child process (`python -m
server.span_export`, started on the first batch) parses it and sends it with the SDK's own
OTLPSpanExporter, configured by the same OTEL_ variables.

Batching follows the BatchSpanProcessor's variables (OTEL_BSP_SCHEDULE_DELAY,
OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE). As there, the serving thread never
waits: spans beyond a full queue are dropped and counted, and a slow or broken collector only
fills the pipe. The child exports what it was given before it exits when the pipe closes, also
when this process is killed.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanContext, StatusCode

log = logging.getLogger(__name__)

_HEADER = 4  # each frame: its length (little-endian), then a serialized ExportTraceServiceRequest
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


# --- spans as OTLP bytes ------------------------------------------------------------------------
#
# The protobuf wire format of opentelemetry-proto's trace messages, written directly: building the
# messages as objects first costs several times as much. Field numbers are from trace.proto,
# common.proto and resource.proto; every value is what the SDK's encoder sets, so a request
# parsed from these bytes equals the one `encode_spans` builds (a unit test holds them to it).


def frame(spans: Sequence[ReadableSpan]) -> bytes:
    """The spans as a serialized ExportTraceServiceRequest: grouped by resource (a process has
    one) and instrumentation scope, as the SDK's encoder groups them."""
    groups: dict[int, tuple[Any, dict[Any, list[bytes]]]] = {}
    for span in spans:
        try:
            encoded = _span(span)
        except ValueError:  # a name that is not text (a lone surrogate): the SDK's encoder fails the whole batch
            log.warning("a span cannot be encoded; it is dropped", extra={"span": repr(span.name)})
            continue
        _, scopes = groups.setdefault(id(span.resource), (span.resource, {}))
        scopes.setdefault(span.instrumentation_scope, []).append(encoded)
    return b"".join(_field(b"\x0a", _resource_spans(resource, scopes)) for resource, scopes in groups.values())


def _resource_spans(resource: Any, scopes: dict[Any, list[bytes]]) -> bytes:
    encoded = bytearray()
    _attributes(encoded, b"\x0a", resource.attributes)
    parts = [_field(b"\x0a", encoded)]  # the Resource, always present
    for scope, spans in scopes.items():
        parts.append(_field(b"\x12", _scope_spans(scope, spans)))
    parts.append(_string(b"\x1a", resource.schema_url))
    return b"".join(parts)


def _scope_spans(scope: Any, spans: list[bytes]) -> bytes:
    if scope is None:
        return b"\x0a\x00" + b"".join(spans)  # an empty InstrumentationScope, as the SDK's encoder sends
    encoded = bytearray(_string(b"\x0a", scope.name) + _string(b"\x12", scope.version))
    _attributes(encoded, b"\x1a", scope.attributes)
    return _field(b"\x0a", encoded) + b"".join(spans) + _string(b"\x1a", scope.schema_url)


def _span(span: ReadableSpan) -> bytes:
    """One Span, with its field tag: ready to join into its ScopeSpans."""
    ctx, parent, status = span.context, span.parent, span.status
    assert ctx is not None
    out = bytearray(_ids(ctx))
    if ctx.trace_state:
        out += _string(b"\x1a", ",".join(f"{key}={value}" for key, value in ctx.trace_state.items()))
    if parent is not None:
        out += _PARENT.pack(b"\x22\x08", parent.span_id)
    out += _NAMES.get(span.name) or _kept(_NAMES, b"\x2a", span.name)  # names repeat: a method, an event type
    out += _KINDS[span.kind._value_]  # the API's SpanKind counts from INTERNAL = 0, OTLP's from UNSPECIFIED = 0
    out += _TIMES.pack(b"\x39", span.start_time or 0, b"\x41", span.end_time or 0)
    _attributes(out, b"\x4a", span.attributes)
    out += _count(b"\x50", span.dropped_attributes)
    for event in span.events:
        encoded = bytearray(b"\x09")
        encoded += event.timestamp.to_bytes(8, "little")
        encoded += _string(b"\x12", event.name)
        _attributes(encoded, b"\x1a", event.attributes)
        encoded += _count(b"\x20", event.dropped_attributes)
        out += _field(b"\x5a", encoded)
    out += _count(b"\x60", span.dropped_events)
    for link in span.links:
        encoded = bytearray(_ids(link.context))
        _attributes(encoded, b"\x22", link.attributes)
        encoded += _count(b"\x28", link.dropped_attributes)
        encoded += b"\x35"
        encoded += _flags(link.context.is_remote)
        out += _field(b"\x6a", encoded)
    out += _count(b"\x70", span.dropped_links)
    if status.status_code is StatusCode.UNSET and not status.description:
        out += b"\x7a\x00"  # most spans: an empty Status
    else:
        out += _field(b"\x7a", _string(b"\x12", status.description) + _count(b"\x18", status.status_code.value))
    out += b"\x85\x01"
    out += _flags(parent is not None and parent.is_remote)
    return b"\x12" + _varint(len(out)) + out


def _ids(ctx: SpanContext) -> bytes:
    """A span's or a link's trace_id and span_id fields (the same numbers in both messages)."""
    trace_id = ctx.trace_id
    return _IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _LOW, b"\x12\x08", ctx.span_id)


_IDS = struct.Struct(">2sQQ2sQ")  # trace_id (in two halves) and span_id, big-endian, after their tags
_PARENT = struct.Struct(">2sQ")
_TIMES = struct.Struct("<cQcQ")  # start and end, fixed64
_LOW = (1 << 64) - 1
_KINDS = [b"\x30" + bytes([kind + 1]) for kind in range(5)]
_REMOTE = (SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK).to_bytes(4, "little")
_LOCAL = int(SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK).to_bytes(4, "little")


def _flags(remote: bool | None) -> bytes:
    return _REMOTE if remote else _LOCAL


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes([n]) for n in range(0x80)]


def _field(tag: bytes, payload: bytes | bytearray) -> bytes:
    """A length-delimited field: always written, even empty (a message field that is set)."""
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, text: str | None) -> bytes:
    """A string field: left out when empty, as proto3 leaves out defaults."""
    return tag + _varint(len(data := text.encode())) + data if text else b""


def _count(tag: bytes, n: int) -> bytes:
    """A count or enum field: left out when 0, as proto3 leaves out defaults."""
    return tag + _varint(n) if n else b""


def _kept(kept: dict[str, bytes], tag: bytes, text: str) -> bytes:
    """`_string(tag, text)`, kept in `kept` for the next span (span names and attribute keys)."""
    if len(kept) >= _KEPT:
        kept.clear()
    encoded = kept[text] = _string(tag, text)
    return encoded


_KEPT = 4096
_NAMES: dict[str, bytes] = {}  # each span name's field
_KEYS: dict[str, bytes] = {}  # each attribute key's field
# Most attributes repeat from span to span (rpc.method, db.system.name, an event type): the
# length-prefixed KeyValue of each is kept. The value's class is part of the key, as True == 1;
# floats are not kept, as 0.0 == -0.0.
_KEY_VALUES: dict[tuple[bytes, str, type, Any], bytes] = {}
_REUSED = frozenset({str, int, bool, bytes})


def _attributes(out: bytearray, tag: bytes, attributes: Mapping[str, Any] | None) -> None:
    """Appends repeated KeyValue fields to `out`. An attribute that cannot be encoded (an integer
    past 64 bits, a lone surrogate) is left out, as the SDK's encoder leaves it out."""
    if not attributes:
        return
    kept = _KEY_VALUES
    # The SDK's attributes (a read-only view of BoundedAttributes) copy as a dict at a third of
    # the cost of iterating over the view.
    for key, value in (attributes.copy() if hasattr(attributes, "copy") else attributes).items():
        cls = value.__class__
        if cls in _REUSED and (encoded := kept.get((tag, key, cls, value))) is not None:
            out += encoded
            continue
        try:
            key_field = _KEYS.get(key) or _kept(_KEYS, b"\x0a", key)
            # Most values that are not kept are short text (ids): written in one join when every
            # length prefix fits in one byte.
            if cls is str and (size := len(key_field) + len(data := value.encode()) + 4) < 0x80:
                n = len(data)
                encoded = b"".join((tag, _SMALL[size], key_field, b"\x12", _SMALL[n + 2], b"\x0a", _SMALL[n], data))
            else:
                encoded = _field(tag, key_field + _field(b"\x12", _any_value(value)))
        except (ValueError, TypeError):
            log.warning("a span attribute cannot be encoded; it is left out", extra={"attribute": key})
            continue
        if cls in _REUSED:
            if len(kept) >= _KEPT:
                kept.clear()
            kept[tag, key, cls, value] = encoded
        out += encoded


def _any_value(value: Any) -> bytes:
    """An AnyValue's fields, as the SDK's encoder sets them: scalars, sequences and mappings of them."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError("an int64 attribute out of range")
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(
            _field(b"\x0a", _string(b"\x0a", str(key)) + _field(b"\x12", _any_value(item))) for key, item in value.items()))
    raise TypeError(f"an attribute of type {type(value).__name__}")


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
            otlp.export(ExportTraceServiceRequest.FromString(frames.read(int.from_bytes(header, "little"))))
    finally:
        otlp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

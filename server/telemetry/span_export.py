"""Span export from a helper process, so sending spans never takes the serving thread's time.

The SDK's OTLP exporter turns every span into protobuf objects in Python and then sends them: in a
BatchSpanProcessor's thread, that is paid under the same GIL as the gRPC server's event loop.
Here each span is taken apart into plain values as it ends (`plain`: tuples, dicts, numbers and
text), and a thread writes each batch of them, marshalled (`pack`), to a pipe: half the
instructions that encoding them took in this process; a child process (`python -m
server.span_export`, started on the first batch) turns them into the serialized OTLP request
(`frame`, written directly at a fifth of what the SDK's encoder costs) and sends it with the SDK's
own OTLPSpanExporter, configured by the same OTEL_ variables.

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
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import IO, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import StatusCode

log = logging.getLogger(__name__)

_HEADER = 4  # each batch: its length (little-endian), then the batch as `pack` writes it
_CHILD = [sys.executable, "-m", "server.telemetry.span_export"]


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
        if span.context is None or not span.context.trace_flags.sampled:
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
# is grouped as the OTLP request is, so each resource and scope is written once:
# [(resource attributes, schema_url, [(scope, [span, ...]), ...]), ...].

Plain = tuple[Any, ...]
# A span as `plain` takes it apart: its resource and scope, and its own values.
Ended = tuple[Resource, InstrumentationScope | None, Plain]


def plain(span: ReadableSpan) -> Ended:
    """`span`'s resource and scope, which `pack` groups by, and what the child needs of the span itself."""
    ctx, parent, status = span.context, span.parent, span.status
    assert ctx is not None
    # The events and links as the span holds them: the public properties copy each list under a
    # lock, which cost half as much again as everything else taken here.
    events: Sequence[Any] = span._events
    links: Sequence[Any] = span._links
    return span.resource, span.instrumentation_scope, (
        span.name, ctx.trace_id, ctx.span_id,
        ",".join(f"{key}={value}" for key, value in ctx.trace_state.items()) if ctx.trace_state else "",
        None if parent is None else (parent.span_id, parent.is_remote),
        span.kind._value_, span.start_time or 0, span.end_time or 0,
        _copy(span.attributes), span.dropped_attributes,
        tuple((e.timestamp, e.name, _copy(e.attributes), e.dropped_attributes) for e in events) if events else (),
        span.dropped_events,
        tuple((link.context.trace_id, link.context.span_id, link.context.is_remote, _copy(link.attributes),
               link.dropped_attributes) for link in links) if links else (),
        span.dropped_links,
        status.status_code._value_, status.description,
    )


def pack(spans: Sequence[Ended]) -> bytes:
    """Spans from `plain` as one marshalled batch, for `frame` in the child: grouped by resource
    (a process has one: told apart by identity) and then by scope (told apart by value), as the
    SDK's encoder groups them."""
    groups: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[Plain]]]] = {}
    for resource, scope, span in spans:
        if (group := groups.get(id(resource))) is None:
            group = groups[id(resource)] = (resource, {})
        group[1].setdefault(scope, []).append(span)
    batch = [(_copy(resource.attributes), resource.schema_url, [(_scope(scope), members) for scope, members in scopes.items()])
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
    mapping a dict: values marshal can write, encoded as the SDK encodes the originals."""
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


# --- spans as OTLP bytes, in the child ----------------------------------------------------------
#
# The protobuf wire format of opentelemetry-proto's trace messages, written directly: building the
# messages as objects first costs several times as much. Field numbers are from trace.proto,
# common.proto and resource.proto; every value is what the SDK's encoder sets, so a request
# parsed from these bytes equals the one `encode_spans` builds (a unit test holds them to it).


def frame(packed: bytes) -> bytes:
    """A batch from `pack` as a serialized ExportTraceServiceRequest."""
    resources = []
    for attributes, schema_url, scopes in marshal.loads(packed):
        encoded = [(scope, spans) for scope, plain_spans in scopes if (spans := _spans(plain_spans))]
        if encoded:  # left out when none of its spans could be encoded
            resources.append(_field(b"\x0a", _resource_spans(attributes, schema_url, encoded)))
    return b"".join(resources)


def _spans(spans: list[Plain]) -> list[bytes]:
    encoded = []
    for span in spans:
        try:
            encoded.append(_span(span))
        except ValueError:  # a name that is not text (a lone surrogate): the SDK's encoder fails the whole batch
            log.warning("a span cannot be encoded; it is dropped", extra={"span": repr(span[0])})
    return encoded


def _resource_spans(attributes: dict[str, Any] | None, schema_url: str, scopes: list[tuple[Plain | None, list[bytes]]]) -> bytes:
    encoded = bytearray()
    _attributes(encoded, b"\x0a", attributes)
    parts = [_field(b"\x0a", encoded)]  # the Resource, always present
    for scope, spans in scopes:
        parts.append(_field(b"\x12", _scope_spans(scope, spans)))
    parts.append(_string(b"\x1a", schema_url))
    return b"".join(parts)


def _scope_spans(scope: Plain | None, spans: list[bytes]) -> bytes:
    if scope is None:
        return b"\x0a\x00" + b"".join(spans)  # an empty InstrumentationScope, as the SDK's encoder sends
    name, version, attributes, schema_url = scope
    encoded = bytearray(_string(b"\x0a", name) + _string(b"\x12", version))
    _attributes(encoded, b"\x1a", attributes)
    return _field(b"\x0a", encoded) + b"".join(spans) + _string(b"\x1a", schema_url)


def _span(span: Plain) -> bytes:
    """One Span, with its field tag: ready to join into its ScopeSpans."""
    (name, trace_id, span_id, trace_state, parent, kind, start, end, attributes, dropped_attributes,
     events, dropped_events, links, dropped_links, status_code, status_description) = span
    out = bytearray(_ids(trace_id, span_id))
    if trace_state:
        out += _string(b"\x1a", trace_state)
    if parent is not None:
        out += _PARENT.pack(b"\x22\x08", parent[0])
    out += _NAMES.get(name) or _kept(_NAMES, b"\x2a", name)  # names repeat: a method, an event type
    out += _KINDS[kind]  # the API's SpanKind counts from INTERNAL = 0, OTLP's from UNSPECIFIED = 0
    out += _TIMES.pack(b"\x39", start, b"\x41", end)
    _attributes(out, b"\x4a", attributes)
    out += _count(b"\x50", dropped_attributes)
    for timestamp, event_name, event_attributes, event_dropped in events:
        encoded = bytearray(b"\x09")
        encoded += timestamp.to_bytes(8, "little")
        encoded += _string(b"\x12", event_name)
        _attributes(encoded, b"\x1a", event_attributes)
        encoded += _count(b"\x20", event_dropped)
        out += _field(b"\x5a", encoded)
    out += _count(b"\x60", dropped_events)
    for link_trace_id, link_span_id, remote, link_attributes, link_dropped in links:
        encoded = bytearray(_ids(link_trace_id, link_span_id))
        _attributes(encoded, b"\x22", link_attributes)
        encoded += _count(b"\x28", link_dropped)
        encoded += b"\x35"
        encoded += _flags(remote)
        out += _field(b"\x6a", encoded)
    out += _count(b"\x70", dropped_links)
    if status_code == _UNSET and not status_description:
        out += b"\x7a\x00"  # most spans: an empty Status
    else:
        out += _field(b"\x7a", _string(b"\x12", status_description) + _count(b"\x18", status_code))
    out += b"\x85\x01"
    out += _flags(parent is not None and parent[1])
    return b"\x12" + _varint(len(out)) + out


def _ids(trace_id: int, span_id: int) -> bytes:
    """A span's or a link's trace_id and span_id fields (the same numbers in both messages)."""
    return _IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _LOW, b"\x12\x08", span_id)


_IDS = struct.Struct(">2sQQ2sQ")  # trace_id (in two halves) and span_id, big-endian, after their tags
_PARENT = struct.Struct(">2sQ")
_TIMES = struct.Struct("<cQcQ")  # start and end, fixed64
_LOW = (1 << 64) - 1
_UNSET = StatusCode.UNSET.value
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
    for key, value in attributes.items():
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
    """Reads batches from stdin and exports their spans over OTLP, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when export ends: it closes the pipe
    from server.telemetry.logs import setup_logging

    setup_logging("span-export", os.environ.get("LOG_LEVEL", "INFO"))
    otlp = exporter()
    batches = sys.stdin.buffer
    try:
        while len(header := batches.read(_HEADER)) == _HEADER:
            otlp.export(ExportTraceServiceRequest.FromString(frame(batches.read(int.from_bytes(header, "little")))))
    finally:
        otlp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

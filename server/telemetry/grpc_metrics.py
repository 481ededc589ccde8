"""gRPC server metrics under the names and label values of go-grpc-prometheus (and its Java
sister), so the dashboards and alerts written for those work on our servers unchanged:
`grpc_type` is unary / client_stream / server_stream / bidi_stream, and `grpc_code` is the code
as grpc-go prints it (`OK`, `InvalidArgument`, `ResourceExhausted`, `Canceled`, ...)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import Counter as CounterChild
from prometheus_client.metrics import Histogram as HistogramChild

_LABELS = ["grpc_type", "grpc_service", "grpc_method"]

STARTED = Counter("grpc_server_started_total", "Total number of RPCs started on the server.", _LABELS)
HANDLED = Counter("grpc_server_handled_total",
                  "Total number of RPCs completed on the server, regardless of success or failure.",
                  [*_LABELS, "grpc_code"])
MSG_RECEIVED = Counter("grpc_server_msg_received_total",
                       "Total number of RPC stream messages received on the server.", _LABELS)
MSG_SENT = Counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", _LABELS)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    _LABELS,
    # Finer than the Prometheus defaults at the low end, where commands and reads answer.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI_STREAM = "unary", "server_stream", "client_stream", "bidi_stream"


def code_name(code: grpc.StatusCode) -> str:
    """The code as grpc-go's codes.Code.String() prints it: RESOURCE_EXHAUSTED -> ResourceExhausted,
    OK -> OK, and CANCELLED -> Canceled (Go's spelling)."""
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(word.capitalize() for word in code.name.split("_"))


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_unary is not None:
        return UNARY
    if handler.unary_stream is not None:
        return SERVER_STREAM
    if handler.stream_unary is not None:
        return CLIENT_STREAM
    return BIDI_STREAM


@dataclass(frozen=True)
class MethodMetrics:
    """One method's series, bound once (label lookups cost more than the increments)."""

    started: CounterChild
    received: CounterChild
    sent: CounterChild
    handled: dict[grpc.StatusCode, CounterChild]
    handling: HistogramChild

    @classmethod
    def of(cls, grpc_type: str, service: str, method: str) -> MethodMetrics:
        labels = (grpc_type, service, method)
        return cls(STARTED.labels(*labels), MSG_RECEIVED.labels(*labels), MSG_SENT.labels(*labels),
                   {code: HANDLED.labels(*labels, code_name(code)) for code in grpc.StatusCode},
                   HANDLING.labels(*labels))

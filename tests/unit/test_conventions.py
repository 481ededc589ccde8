"""The names other tools rely on: span attributes as the installed OpenTelemetry semantic
conventions spell them, and gRPC metric labels as go-grpc-prometheus writes them."""

from __future__ import annotations

import inspect
import re
from types import ModuleType

import grpc
import pytest
from opentelemetry.semconv._incubating.attributes import messaging_attributes, rpc_attributes

from server.telemetry import grpc_metrics, semconv

# grpc-go's codes.Code.String(), code by code: what go-grpc-prometheus puts in grpc_code.
GO_CODE_NAMES = {
    0: "OK", 1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
    6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition", 10: "Aborted",
    11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable", 15: "DataLoss", 16: "Unauthenticated",
}
# Deprecated in the conventions, and still what the gRPC instrumentation's server spans write.
KEPT_FOR_THE_INSTRUMENTATION = {"RPC_SYSTEM", "RPC_SERVICE"}


def deprecated(module: ModuleType, name: str) -> bool:
    source = inspect.getsource(module)
    note = re.search(rf'^{name}: Final = "[^"]*"\n"""\n(.*)', source, re.MULTILINE)
    assert note is not None, name
    return note[1].startswith("Deprecated")


@pytest.mark.parametrize("name", [n for n in vars(semconv) if n.startswith(("MESSAGING_", "RPC_"))])
def test_our_span_attribute_names_are_those_of_the_installed_conventions(name: str) -> None:
    module = messaging_attributes if name.startswith("MESSAGING_") else rpc_attributes
    assert getattr(semconv, name) == getattr(module, name)
    assert deprecated(module, name) == (name in KEPT_FOR_THE_INSTRUMENTATION)


def test_our_operation_types_are_values_the_conventions_define() -> None:
    values = {v.value for v in messaging_attributes.MessagingOperationTypeValues}
    assert {semconv.SEND, semconv.PROCESS} <= values


def test_grpc_codes_are_labelled_as_grpc_go_prints_them() -> None:
    assert {code.value[0]: grpc_metrics.code_name(code) for code in grpc.StatusCode} == GO_CODE_NAMES

"""The exporting child delivers every span to a real OTLP collector (gRPC, HTTP) or prints it (console)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from server.platform.process import free_port
from server.telemetry.span_export import ShippingSpanProcessor
from tests.e2e.otlp import Collector, HTTPCollector
from tests.harness import ROOT, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


def shipping(collector: Collector) -> ShippingSpanProcessor:
    """Batches only when full or flushed; the child's exporter sends to `collector`."""
    return ShippingSpanProcessor(dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                                      OTEL_BSP_SCHEDULE_DELAY="60000"))


def provider_with(processor: ShippingSpanProcessor) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "orders-span-export-test"}))
    provider.add_span_processor(processor)
    return provider


def make_spans(provider: TracerProvider, count: int, prefix: str) -> set[str]:
    tracer = provider.get_tracer("orders")
    ids = set()
    for n in range(count):
        with tracer.start_as_current_span(f"{prefix}-{n}", attributes={"n": n}) as span:
            ids.add(format(span.get_span_context().span_id, "016x"))
    return ids


def exported(collector: Collector | HTTPCollector, prefix: str) -> set[str]:
    return {s.span_id for s in collector.spans() if s.name.startswith(prefix) and s.service == "orders-span-export-test"}


def test_shutdown_delivers_every_span(collector: Collector) -> None:
    provider = provider_with(shipping(collector))
    made = make_spans(provider, 1_300, "shutdown")  # two full batches and a remainder

    provider.shutdown()  # returns once the child has exported and exited

    assert exported(collector, "shutdown") == made


def test_a_flush_hands_over_the_queue_and_a_dead_child_is_replaced(collector: Collector) -> None:
    processor = shipping(collector)
    provider = provider_with(processor)
    try:
        first = make_spans(provider, 10, "first")
        assert processor.force_flush(10_000)
        wait_until(lambda: exported(collector, "first") == first, what="the flushed spans at the collector")

        assert processor._child is not None
        processor._child.kill()
        processor._child.wait()
        second = make_spans(provider, 10, "second")
        assert processor.force_flush(10_000)
        wait_until(lambda: exported(collector, "second") == second, what="spans after the child was replaced")
    finally:
        provider.shutdown()


def test_shutdown_gives_up_on_an_unreachable_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child retries its first export while the pipe to it fills. Shutdown waits
    SHUTDOWN_SECONDS, then kills the child and drops the rest. It used to wait 20 s for the
    exporter's retries, then the shipping thread died writing to the pipe shutdown had closed."""
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    processor = ShippingSpanProcessor(dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
                                           OTEL_BSP_SCHEDULE_DELAY="60000"))
    processor.SHUTDOWN_SECONDS = 1.0
    provider = provider_with(processor)
    make_spans(provider, 5_000, "unreachable")
    wait_until(lambda: processor._child is not None, what="the first batch shipped to a child")

    started = time.monotonic()
    provider.shutdown()

    assert time.monotonic() - started < 10  # two SHUTDOWN_SECONDS and a kill, not the exporter's retries
    assert not processor._thread.is_alive() and failures == []
    assert processor.dropped > 0


def test_http_protobuf_delivers_every_span() -> None:
    with HTTPCollector() as collector:
        provider = provider_with(ShippingSpanProcessor(dict(
            os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_BSP_SCHEDULE_DELAY="60000")))
        made = make_spans(provider, 600, "http")  # a full batch and a remainder

        provider.shutdown()

        assert exported(collector, "http") == made
        assert set(collector.paths) == {"/v1/traces"}


# A traced process of its own, whose standard output the test reads: the span's ids, then what the
# exporter prints.
CONSOLE_PROCESS = """
from server.telemetry import setup_tracing

provider = setup_tracing("console-test")
assert provider is not None
with provider.get_tracer("orders").start_as_current_span("printed", attributes={"orders.n": 7}) as span:
    print(format(span.get_span_context().trace_id, "032x"), format(span.get_span_context().span_id, "016x"), flush=True)
provider.shutdown()
"""


def printed(text: str) -> list[dict[str, Any]]:
    """The JSON documents in `text`, one after another (the console exporter indents each)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def test_the_console_exporter_prints_spans_on_standard_output() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", CONSOLE_PROCESS], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(env, OTEL_TRACES_EXPORTER="console"))
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr  # the export process runs its module once, as __main__

    ids, _, rest = result.stdout.partition("\n")
    trace_id, span_id = ids.split()
    (span,) = printed(rest)
    assert span["name"] == "printed" and span["attributes"] == {"orders.n": 7}
    assert span["context"]["trace_id"] == f"0x{trace_id}" and span["context"]["span_id"] == f"0x{span_id}"
    assert span["resource"]["attributes"]["service.name"] == "orders-console-test"


def test_a_role_refuses_an_unsupported_exporter_at_start_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-m", "server", "command-server"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env=dict(env, OTEL_TRACES_EXPORTER="zipkin"))

    assert result.returncode != 0
    assert "OTEL_TRACES_EXPORTER='zipkin' is not supported: use otlp, console or none" in result.stderr

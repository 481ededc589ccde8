"""`orders bench --quick` produces every figure (not that they reach a goal: that is for people)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.e2e


def test_the_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(out.read_text())
    points = {(m["name"], m["concurrency"]) for m in report["write_side"]}
    assert points == {(name, c) for name in ("noop", "place_order") for c in (1, 16, 64)}
    assert all(m["calls"] > 0 and m["errors"] == 0 and m["p99_ms"] >= m["p50_ms"] > 0 for m in report["write_side"])
    assert set(report["ratios"]) == {
        "place_order_vs_noop_c1", "place_order_vs_noop_c16", "place_order_vs_noop_c64", "relay_vs_raw_publish",
        "traced_vs_untraced"}
    assert report["tracing"]["spans_exported"] > 0
    assert report["relay"]["events"] == 2000
    assert report["relay"]["relay_per_s"] > 0 and report["relay"]["raw_publish_per_s"] > 0
    assert "place_order" in result.stdout


def test_the_quick_query_bench_reports_watch_delay_and_query_rates_beside_a_no_op(tmp_path: Path) -> None:
    out = tmp_path / "bench-query.json"
    result = subprocess.run(
        [sys.executable, "-m", "server", "bench", "query", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(out.read_text())
    watch = report["watch"]
    assert watch["commands"] > 0 and watch["updates"] == watch["commands"] and watch["missing"] == 0
    assert watch["p99_ms"] >= watch["p50_ms"] >= 0
    assert {m["name"] for m in report["queries"]} == {"noop", "get_order", "list_orders"}
    assert all(m["calls"] > 0 and m["errors"] == 0 for m in report["queries"])
    assert set(report["ratios"]) == {"get_order_vs_noop", "list_orders_vs_noop"}


def test_the_quick_projector_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "projector.json"
    result = subprocess.run(
        [sys.executable, "-m", "server", "bench", "projector", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["events"] == 2_000
    assert report["raw_fetch_ack_per_second"] > 0 and report["projector_per_second"] > 0
    assert report["projector_vs_raw"] > 0
    assert set(report["rebuild_per_second"]) == {"order_summaries", "customer_orders", "product_sales"}
    assert report["rebuild_1m_events_all_models_seconds_extrapolated"] > 0
    assert "projector / raw" in result.stdout

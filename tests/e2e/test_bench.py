"""`orders bench --quick` (every stage, a few seconds each) produces every figure, the ratios in
its JSON and the plots. Whether the figures reach their goals is for people to read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from projector.views import MODELS
from tests.harness import ROOT

pytestmark = pytest.mark.e2e
BENCH_SECONDS = 600  # the quick bench's own budget; pytest's timeout must not cut it short


@pytest.mark.timeout(BENCH_SECONDS + 60)
def test_the_quick_bench_reports_every_figure_ratio_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=BENCH_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(out.read_text())
    points = {(m["name"], m["concurrency"]) for m in report["write_side"]}
    assert points == {(name, c) for name in ("noop", "register", "place_order") for c in (1, 16, 64)}
    assert all(m["calls"] > 0 and m["errors"] == 0 and m["p99_ms"] >= m["p50_ms"] > 0 for m in report["write_side"])
    assert all(sum(m["histogram"]["counts"]) == m["calls"] for m in report["write_side"])
    assert report["sealing"]["seal_us"] > 0 and report["sealing"]["register_p50_us"] > 0
    assert report["database"]["pgbench_tps"] > 0
    assert report["relay"]["events"] == 2000 and report["relay"]["relay_per_s"] > 0
    assert report["relay"]["raw_publish_per_s"] > 0 and report["relay"]["batched_publish_per_s"] > 0
    assert report["tracing"]["spans_exported"] > 0
    assert report["auth"]["concurrency"] == 16 and report["auth"]["auth_on_per_s"] > 0
    watch = report["query"]["watch"]
    assert watch["commands"] > 0 and watch["updates"] == watch["commands"] and watch["missing"] == 0
    assert isinstance(watch["refused"], dict)  # commands shed under overload, by status code
    assert {m["name"] for m in report["query"]["queries"]} == {"noop", "get_order", "list_orders"}
    scaling = report["query"]["scaling"]
    assert [m["name"] for m in scaling] == ["get_order_1_servers", "get_order_2_servers"]
    assert all(m["calls"] > 0 and m["errors"] == 0 for m in scaling)
    assert report["projector"]["events"] == 2000
    overload = report["overload"]
    assert overload["capacity_per_s"] > 0 and overload["by_status"].get("OK", 0) > 0
    assert set(overload["by_status"]) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}  # never UNKNOWN or INTERNAL
    assert set(report["projector"]["rebuild_per_second"]) == {m.name for m in MODELS}
    saga = report["saga"]
    assert saga["confirmed"] > 0 and saga["not_confirmed"] == 0 and saga["place_order_per_s"] > 0
    assert saga["placed_to_confirmed_p99_ms"] >= saga["placed_to_confirmed_p50_ms"] > 0
    stack = report["stack"]
    assert stack["concurrency"] == 16 and stack["acknowledged"] > 0 and stack["errors"] == 0
    assert stack["missing"] == 0 and stack["projected"] == stack["acknowledged"]  # every acknowledged order projected
    assert stack["projected_per_s"] > 0 and stack["lag_s_at_end"] >= 0
    assert set(report["ratios"]) == {
        "place_order_vs_noop_c1", "place_order_vs_noop_c16", "place_order_vs_noop_c64", "relay_vs_raw_publish",
        "register_vs_noop_c1", "register_vs_noop_c16", "register_vs_noop_c64", "sealing_share_of_register_p50",
        "traced_vs_untraced", "auth_on_vs_off", "place_order_vs_database_ceiling", "get_order_vs_noop", "list_orders_vs_noop",
        "get_order_2_vs_1_query_servers",
        "projector_vs_raw_fetch_ack", "two_projectors_vs_one", "saga_confirmed_vs_place_order", "relay_vs_batched_publish",
    }
    assert all(value > 0 for value in report["ratios"].values())
    assert (tmp_path / "latency.png").stat().st_size > 0 and (tmp_path / "throughput.png").stat().st_size > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="the instructions stage counts with valgrind's callgrind")
@pytest.mark.timeout(BENCH_SECONDS + 60)
def test_the_instructions_stage_counts_a_place_order_above_a_no_op_and_names_its_costliest_functions(
    tmp_path: Path,
) -> None:
    out = tmp_path / "instructions.json"
    result = subprocess.run(
        [sys.executable, "-m", "server", "bench", "instructions", "--calls", "20", "--warmup", "10", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=BENCH_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    figures = json.loads(out.read_text())["instructions"]
    assert figures["calls"] == 20 and figures["place_order_instructions"] > figures["noop_instructions"] > 0
    assert figures["place_order_minus_noop"] == figures["place_order_instructions"] - figures["noop_instructions"]
    top = (tmp_path / "instructions.place_order.txt").read_text().splitlines()
    table = top[next(i for i, line in enumerate(top) if "file:function" in line) + 2:]
    assert len(table) == 25 and any("_PyEval_EvalFrameDefault" in line for line in table)  # the interpreter's own
    assert (tmp_path / "instructions.place_order.callgrind.out").stat().st_size > 0

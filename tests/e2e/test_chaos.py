"""The chaos suite's short seeded run, in `make test`: faults of every kind under load, then the
checker's verdict; and the same checker failing a run whose relay is broken on purpose. Each run
is `python -m tests.chaos` in a process of its own (it starts its own stack)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT


def chaos(out: Path, *args: str, timeout: float) -> tuple[int, str, dict[str, object]]:
    env = dict(os.environ, LOG_LEVEL="WARNING")
    done = subprocess.run([sys.executable, "-m", "tests.chaos", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return done.returncode, done.stdout + done.stderr, report


def test_a_seeded_run_with_every_fault_keeps_every_guarantee(tmp_path: Path) -> None:
    code, output, report = chaos(tmp_path, "--seed", "1", "--seconds", "60", "--interval", "5", timeout=400)
    assert code == 0, output[-6000:]
    assert report["valid"] is True
    faults = report["faults"]
    assert isinstance(faults, dict) and sum(faults.values()) >= 6, faults
    counts = report["counts"]
    assert isinstance(counts, dict) and counts["ok"] > 1000, counts
    assert report["lost"] == report["duplicated"] == report["regressed"] == 0


def test_a_relay_that_marks_events_published_without_a_puback_is_caught(tmp_path: Path) -> None:
    code, output, report = chaos(tmp_path, "--seed", "2", "--seconds", "15", "--faults", "kill", "--settle", "10",
                                 "--sabotage", "mark-before-ack", timeout=300)
    assert code == 1, output[-6000:]
    violations = report["violations"]
    assert isinstance(violations, dict) and {"G5", "G6"} <= violations.keys(), violations
    assert "G4" not in violations  # marked published: the outbox alone cannot tell
    assert "the history of o-" in output  # the slice of history that shows it

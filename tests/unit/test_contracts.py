"""The contracts pass buf lint, the committed stubs are exactly what `make generate` makes, and our
packages pass mypy --strict."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_buf_lint_passes() -> None:
    result = subprocess.run([BIN / "buf", "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_our_packages_pass_a_strict_type_check() -> None:
    result = subprocess.run([BIN / "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "generate", f"GEN_OUT={tmp_path}"], cwd=ROOT, check=True, capture_output=True)

    def differences(cmp: filecmp.dircmp[str]) -> list[str]:
        found = [f"{cmp.left}/{name}" for name in cmp.diff_files + cmp.left_only + cmp.right_only]
        for sub in cmp.subdirs.values():
            found += differences(sub)
        return [f for f in found if "__pycache__" not in f]

    stale = differences(filecmp.dircmp(ROOT / "generated" / "orders", tmp_path / "orders"))
    assert not stale, f"generated/ is stale, run `make generate`: {stale}"

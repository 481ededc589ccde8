"""The committed TypeScript stubs (clients/ts/src/gen) are exactly what buf.gen.yaml's
protoc-gen-es entry makes, with the same managed mode (the stubs embed the file options)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"
ES_PLUGIN = "  - local: clients/ts/node_modules/.bin/protoc-gen-es\n"


def typescript_only_template(template: str) -> str:
    """buf.gen.yaml with its plugins cut down to the protoc-gen-es entry."""
    head, plugins = template.split("\nplugins:\n")
    entries = ["  - " + entry for entry in plugins.split("\n  - ") if entry]
    entries[0] = entries[0].removeprefix("  - ")
    (es,) = [entry for entry in entries if entry.startswith(ES_PLUGIN.rstrip("\n"))]
    return f"{head}\nplugins:\n{es.rstrip()}\n"


def differences(cmp: filecmp.dircmp[str]) -> list[str]:
    found = [f"{cmp.left}/{name}" for name in cmp.diff_files + cmp.left_only + cmp.right_only]
    for sub in cmp.subdirs.values():
        found += differences(sub)
    return found


def test_the_template_has_exactly_one_typescript_entry() -> None:
    template = (ROOT / "buf.gen.yaml").read_text()

    assert template.count(ES_PLUGIN) == 1
    assert "out: clients/ts/src/gen" in typescript_only_template(template)


def test_committed_typescript_stubs_are_fresh(tmp_path: Path) -> None:
    template = tmp_path / "buf.gen.ts.yaml"
    template.write_text(typescript_only_template((ROOT / "buf.gen.yaml").read_text()))

    result = subprocess.run([BUF, "generate", "--template", template, "-o", tmp_path / "out"], cwd=ROOT,
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr + " (is `make install-ts` done?)"
    fresh = tmp_path / "out" / "clients" / "ts" / "src" / "gen"
    stale = differences(filecmp.dircmp(ROOT / "clients" / "ts" / "src" / "gen", fresh))
    assert not stale, f"clients/ts/src/gen is stale, run `make generate-all` (or buf generate): {stale}"

"""The contracts pass buf lint and break nothing since the last release, the committed stubs are
exactly what `make generate` makes, the vendored google protos are the wheel's, and our packages
pass mypy --strict."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.rpc import status_pb2

from tests import contract_gate

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_buf_lint_passes() -> None:
    result = subprocess.run([BIN / "buf", "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_contracts_break_no_client_of_the_last_release() -> None:
    result = contract_gate.check(ROOT, BIN / "buf")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_release_the_gate_compares_with_is_in_the_changelog() -> None:
    tag = contract_gate.release_tag(ROOT)
    assert tag.startswith("contracts-v"), f"{contract_gate.RELEASE_FILE} should name a contracts-vX.Y.Z tag, not {tag!r}"
    version = tag.removeprefix("contracts-v")
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines() if line.startswith("## ")]
    assert f"## {version}" in headings, f"CHANGELOG.md has no section for {version}, the release {tag}"


def released_copy(tmp_path: Path) -> Path:
    """A checkout holding today's contracts, with its release image built from them."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("proto", "third_party"):
        shutil.copytree(ROOT / part, repo / part)
    shutil.copy(ROOT / "buf.yaml", repo)
    image = contract_gate.release_image(repo)
    subprocess.run([str(BIN / "buf"), "build", "proto", "-o", str(image.relative_to(repo))], cwd=repo, check=True,
                   capture_output=True)
    return repo


def edit(repo: Path, old: str, new: str) -> None:
    path = repo / "proto" / "orders" / "v1" / "command_service.proto"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the contract no longer reads {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_gate_fails_on_a_renamed_field(tmp_path: Path) -> None:
    repo = released_copy(tmp_path)
    edit(repo, "string customer_id = 3", "string buyer_id = 3")

    result = contract_gate.check(repo, BIN / "buf")

    assert result.returncode == contract_gate.BREAKING, result.stdout + result.stderr
    assert 'on message "PlaceOrderRequest" changed name from "customer_id" to "buyer_id"' in result.stdout


def test_the_gate_passes_on_an_added_field(tmp_path: Path) -> None:
    repo = released_copy(tmp_path)
    lines = "repeated OrderLine lines = 4 [(google.api.field_behavior) = REQUIRED];"
    edit(repo, lines, f"{lines}\n  // Where to leave the parcel.\n  string delivery_note = 5;")

    result = contract_gate.check(repo, BIN / "buf")

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gate_names_a_missing_release_image(tmp_path: Path) -> None:
    repo = released_copy(tmp_path)
    contract_gate.release_image(repo).unlink()

    with pytest.raises(contract_gate.MissingReleaseError, match="make release-image"):
        contract_gate.check(repo, BIN / "buf")


def test_the_release_image_is_the_release_tags_own_build(tmp_path: Path) -> None:
    tag = contract_gate.release_tag(ROOT)
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"], cwd=ROOT,
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"this clone has no tag {tag} (the gate itself needs only the committed image)")
    built = tmp_path / "release.binpb"

    subprocess.run(contract_gate.build_command(BIN / "buf", tag, built), cwd=ROOT, check=True, capture_output=True)

    assert built.read_bytes() == contract_gate.release_image(ROOT).read_bytes()


def test_vendored_google_protos_are_the_installed_wheels() -> None:
    wheel = Path(status_pb2.__file__).parents[2]  # the site-packages holding google/api and google/rpc
    vendored = sorted(p.relative_to(ROOT / "third_party") for p in (ROOT / "third_party").rglob("*.proto"))
    assert vendored, "third_party/ holds no protos"
    stale = [str(p) for p in vendored if (ROOT / "third_party" / p).read_bytes() != (wheel / p).read_bytes()]
    assert not stale, f"third_party/ differs from googleapis-common-protos, run `make third-party-protos`: {stale}"


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

"""The contract gate: `buf breaking` between proto/ and the release tag named in proto/RELEASE.

`make breaking` runs it on its own; `make test` runs it through tests/unit/test_contracts.py.
The baseline is read from git (buf's `.git#tag=...` input), so it is exactly what was released.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RELEASE_FILE = Path("proto") / "RELEASE"
# buf's exit code when it found a breaking change (1 is buf failing to run at all).
BREAKING = 100


class MissingReleaseError(Exception):
    """The release tag named in proto/RELEASE is not in this clone."""


def release_tag(root: Path) -> str:
    return (root / RELEASE_FILE).read_text(encoding="utf-8").strip()


def against(tag: str) -> str:
    """buf's input for the tag's proto/ module; its imports resolve in that commit's workspace."""
    return f".git#tag={tag},subdir=proto"


def check(root: Path, buf: Path) -> subprocess.CompletedProcess[str]:
    """Runs the gate in the checkout at `root`: exit code 0 passes, BREAKING lists what breaks."""
    tag = release_tag(root)
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"],
                           cwd=root, capture_output=True, text=True)
    if found.returncode != 0:
        raise MissingReleaseError(
            f"the contract gate compares proto/ with the release tag {tag!r} named in {RELEASE_FILE}, "
            f"and this clone does not have it: fetch it (`git fetch --tags`; a shallow clone needs "
            f"`--unshallow` too), or, for the first release, tag it (see CHANGELOG.md)"
        )
    return subprocess.run([str(buf), "breaking", "proto", "--against", against(tag)],
                          cwd=root, capture_output=True, text=True)


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    try:
        result = check(root, Path(sys.executable).parent / "buf")
    except MissingReleaseError as exc:
        print(f"contract gate: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    tag = release_tag(root)
    if result.returncode == 0:
        print(f"contract gate: nothing breaks clients of {tag}")
    elif result.returncode == BREAKING:
        print(f"contract gate: the changes above break clients of {tag}; make them additive, or plan "
              f"a new major version (CHANGELOG.md)", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

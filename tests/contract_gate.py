"""The contract gate: `buf breaking` between proto/ and the last release, as proto/RELEASE names it.

The release is a git tag (`contracts-vX.Y.Z`) and, beside the contracts, the buf image built from
that tag (proto/releases/<tag>.binpb): the gate compares with the image, so it needs no tag in the
clone it runs in, and a test checks the image is the tag's own build wherever the tag is present.
`make breaking` runs the gate on its own; `make test` runs it through tests/unit/test_contracts.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RELEASE_FILE = Path("proto") / "RELEASE"
RELEASES = Path("proto") / "releases"
# buf's exit code when it found a breaking change (1 is buf failing to run at all).
BREAKING = 100


class MissingReleaseError(Exception):
    """The release image named by proto/RELEASE is not in the checkout."""


def release_tag(root: Path) -> str:
    return (root / RELEASE_FILE).read_text(encoding="utf-8").strip()


def release_image(root: Path) -> Path:
    return root / RELEASES / f"{release_tag(root)}.binpb"


def build_command(buf: Path, tag: str, out: Path) -> list[str]:
    """How a release's image is made from its tag (`make release-image`)."""
    return [str(buf), "build", f".git#tag={tag},subdir=proto", "-o", str(out)]


def check(root: Path, buf: Path) -> subprocess.CompletedProcess[str]:
    """Runs the gate in the checkout at `root`: exit code 0 passes, BREAKING lists what breaks."""
    image = release_image(root)
    if not image.exists():
        raise MissingReleaseError(
            f"the contract gate compares proto/ with the release {release_tag(root)!r} named in {RELEASE_FILE}, "
            f"and {image.relative_to(root)} is missing: build it from the release tag with `make release-image`"
        )
    return subprocess.run([str(buf), "breaking", "proto", "--against", str(image.relative_to(root))],
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

"""Builds orders-client: `orders_client` from this folder and the generated `orders.v1` stubs.

The stubs import each other as `orders.v1.*` (protoc's absolute imports), so they ship as the
top-level `orders` package, exactly as `make generate` wrote them into the repository's
generated/. A build from a checkout takes them from there; an sdist carries its own copy in
_stubs/, which a build from the sdist uses. An editable install (the repository's dev setup) leaves
them out: the server's own editable install already maps `orders` to generated/.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CHECKOUT_STUBS = HERE.parent.parent / "generated" / "orders"
SDIST_STUBS = Path("_stubs") / "orders"


def _stub_dir() -> str:
    """The stubs, relative to this folder: generated/ in a checkout, _stubs/ in an sdist."""
    if (CHECKOUT_STUBS / "v1").is_dir():
        return str(Path("..", "..", "generated", "orders"))
    if (HERE / SDIST_STUBS / "v1").is_dir():
        return str(SDIST_STUBS)
    raise SystemExit("orders-client: no generated stubs (run `make generate` at the repository root)")


class SdistWithStubs(sdist):  # type: ignore[misc]
    """Puts the stubs in the sdist under _stubs/, where a build from it looks for them."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        kept = [f for f in files if not f.startswith(str(Path("..", "..")))]
        super().make_release_tree(base_dir, kept)
        source = HERE / _stub_dir()
        target = Path(base_dir) / SDIST_STUBS
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))


class BuildWithTypedStubs(build_py):  # type: ignore[misc]
    """Marks the stubs as typed (PEP 561): their .pyi files then type-check callers' code."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            (Path(self.build_lib) / "orders" / "py.typed").touch()


editable = "editable_wheel" in sys.argv
stubs = {} if editable else {"orders": _stub_dir(), "orders.v1": str(Path(_stub_dir(), "v1"))}
setup(
    packages=["orders_client", *stubs],
    package_dir=stubs,
    package_data={"orders_client": ["py.typed"], **{name: ["*.pyi"] for name in stubs}},
    cmdclass={"build_py": BuildWithTypedStubs, "sdist": SdistWithStubs},
)

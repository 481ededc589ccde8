"""`orders bench instructions`: instructions the command server runs per PlaceOrder and per no-op
(grpc.health.v1.Health/Check), counted by callgrind. The counts repeat from run to run where
timings on a shared machine do not: the figure to compare two versions of the command path with.
Not part of `all` or `--quick`: under valgrind the server runs dozens of times slower.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.load import channel, order_placer
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server.config import ConfigError
from server.platform.process import free_port

TOOLS = ("valgrind", "callgrind_control", "callgrind_annotate")
CALL_TIMEOUT = 30.0  # seconds per call, generous: valgrind slows the server down dozens of times
STARTUP_TIMEOUT = 300.0  # valgrind translates the code of every module imported: slow on a busy machine
TOP_FUNCTIONS = 25


def require_tools() -> None:
    """No valgrind, no stage: one line saying so (exit status 2), before any server starts."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise ConfigError([f"the instructions stage counts with valgrind's callgrind: {', '.join(missing)} "
                           "not found on PATH (install valgrind, e.g. `apt-get install valgrind`)"])


def measure(stack: Any, calls: int, warmup: int, target: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The figures per call; beside `target` (the JSON's path) the PlaceOrder window's costliest
    functions and its whole profile."""
    with tempfile.TemporaryDirectory(prefix="orders-callgrind-") as folder:
        dumps = Path(folder)
        totals = count(stack, dumps, calls, warmup, say)
        target.parent.mkdir(parents=True, exist_ok=True)
        top = target.with_suffix(".place_order.txt")
        top.write_text(annotate(dumps / "place_order"))
        profile = target.with_suffix(".place_order.callgrind.out")
        shutil.copy(dumps / "place_order", profile)
    place, noop = totals["place_order"] / calls, totals["noop"] / calls
    return {"calls": calls, "warmup": warmup, "lines_per_order": 2, "place_order_instructions": round(place),
            "noop_instructions": round(noop), "place_order_minus_noop": round(place) - round(noop),
            "top_functions": str(top), "profile": str(profile)}


def text(figures: dict[str, Any]) -> str:
    return (f"instructions per call in the command server (callgrind, {figures['calls']} calls at concurrency 1 "
            f"after {figures['warmup']} to warm up):\n"
            f"  PlaceOrder {figures['place_order_instructions']:>12,}\n"
            f"  no-op      {figures['noop_instructions']:>12,}\n"
            f"  difference {figures['place_order_minus_noop']:>12,}\n"
            f"the PlaceOrder window's top {TOP_FUNCTIONS} functions by inclusive cost: {figures['top_functions']}\n"
            f"its whole profile, for callgrind_annotate or KCachegrind: {figures['profile']}")


def count(stack: Any, dumps: Path, calls: int, warmup: int, say: Callable[[str], None]) -> dict[str, int]:
    """Instructions over `calls` PlaceOrder calls and over as many no-op calls, at concurrency 1,
    in a command server of its own under callgrind with the stack's command server's environment
    (untraced); each window's profile is left in `dumps` under the window's name."""
    from server.devstack.supervisor import Child, serving

    addr = f"127.0.0.1:{free_port()}"
    own = next(child for child in stack.children if child.role == "command-server")
    env = {name: value for name, value in own.env.items()
           if not name.startswith("OTEL_EXPORTER_OTLP") and name != "METRICS_ADDR"}
    env.update(COMMAND_ADDR=addr, OTEL_TRACES_EXPORTER="none")
    server = Child("command-server", env, wrapper=(
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
        f"--callgrind-out-file={dumps / 'callgrind.out'}", f"--log-file={dumps / 'valgrind.log'}"))
    say(f"instructions: a command server under callgrind on {addr} (starting takes a while) ...")
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not serving(addr):
            if server.proc.poll() is not None:
                raise SystemExit(f"the command server under valgrind exited ({server.proc.returncode}); "
                                 f"valgrind's log: {(dumps / 'valgrind.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("the command server under valgrind did not start in time")
            time.sleep(0.5)
        return asyncio.run(_windows(addr, pid, dumps, calls, warmup, say))
    finally:
        server.terminate()
        server.wait(time.monotonic() + 60)


async def _windows(addr: str, pid: int, dumps: Path, calls: int, warmup: int,
                   say: Callable[[str], None]) -> dict[str, int]:
    """One channel throughout, so no connection is set up inside a counted window."""
    async with channel(addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        place = await order_placer(pb_grpc.CommandServiceStub(ch), "bench-instr", lines=2, timeout=CALL_TIMEOUT)

        def noop() -> Awaitable[Any]:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)

        say(f"instructions: {warmup} PlaceOrder and {warmup} no-op calls to warm up ...")
        await _calls(place, warmup)
        await _calls(noop, warmup)
        totals = {}
        for name, call in (("place_order", place), ("noop", noop)):
            say(f"instructions: {calls} {name} calls, counted ...")
            totals[name] = await _counted(pid, dumps, name, call, calls)
        return totals


async def _calls(call: Callable[[], Awaitable[Any]], n: int) -> None:
    for _ in range(n):
        await call()


async def _counted(pid: int, dumps: Path, name: str, call: Callable[[], Awaitable[Any]], n: int) -> int:
    """Counters zeroed, instrumentation on for `n` calls only, then dumped: the window's total,
    its profile moved to `dumps / name`."""
    before = set(dumps.glob("callgrind.out*"))
    _control(pid, "--zero")
    _control(pid, "--instr=on")
    await _calls(call, n)
    _control(pid, "--instr=off")
    _control(pid, f"--dump={name}")
    (dump,) = set(dumps.glob("callgrind.out*")) - before
    dump.rename(dumps / name)
    return total(dumps / name)


def _control(pid: int, option: str) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=120)


def total(profile: Path) -> int:
    """The instructions in a callgrind profile: its `totals:` line, or else its `summary:` line."""
    found = dict(re.findall(r"^(totals|summary):\s*(\d+)", profile.read_text(), re.MULTILINE))
    return int(found.get("totals") or found["summary"])


def annotate(profile: Path) -> str:
    """callgrind_annotate's header and its TOP_FUNCTIONS costliest functions, inclusive of callees."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(profile)], check=True,
                          capture_output=True, text=True, timeout=300).stdout
    lines = text.splitlines()
    # The function table starts after the line naming the columns (`Ir  file:function`).
    start = next((i for i, line in enumerate(lines) if "file:function" in line), len(lines))
    return "\n".join(lines[:start + 2 + TOP_FUNCTIONS]) + "\n"

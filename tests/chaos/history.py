"""A history of operations, one JSON object per line: each call is an `invoke` followed by `ok`
(it happened), `fail` (a definite refusal: it did not happen) or `info` (unknown: a timeout, an
unavailable server, a connection lost mid-call). Faults are lines of their own (`nemesis`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

INVOKE, OK, FAIL, INFO, NEMESIS = "invoke", "ok", "fail", "info", "nemesis"


@dataclass(frozen=True)
class Op:
    """One line. `f` names the call (place, confirm, cancel) or the fault; `order_id` and
    `request_id` tie a call's lines together; `version` and `total` are what an `ok` answered
    (the order's new version, the total the client computed for a placed order)."""

    type: str
    f: str
    time: float = field(default_factory=time.time)
    process: int = -1
    order_id: str = ""
    request_id: str = ""
    expected_version: int = 0
    version: int = 0
    total: str = ""
    response: str = ""  # hex of the serialised response: replays must answer identically
    code: str = ""  # the gRPC status code of a fail or an info
    detail: str = ""  # a fault's target, or an error's message

    def line(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ("", -1) or k in ("type", "f")},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, line: str) -> Op:
        return cls(**json.loads(line))


class History:
    """Appends lines to a file as they happen (a run killed halfway still leaves its history),
    and keeps them for the checker."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._out: TextIO = path.open("w")

    def add(self, op: Op) -> Op:
        with self._lock:
            self.ops.append(op)
            self._out.write(op.line() + "\n")
            self._out.flush()
        return op

    def close(self) -> None:
        self._out.close()


def load(path: Path) -> list[Op]:
    return [Op.parse(line) for line in path.read_text().splitlines() if line.strip()]


def around(ops: Iterable[Op], order_id: str, context: int = 3) -> Iterator[Op]:
    """The operations on one order, with the faults that happened while they ran and the
    `context` faults before the first of them: the smallest slice that shows a violation."""
    ops = list(ops)
    mine = [i for i, op in enumerate(ops) if op.order_id == order_id]
    if not mine:
        return
    first, last = mine[0], mine[-1]
    faults_before = [i for i in range(first) if ops[i].type == NEMESIS][-context:]
    for i in sorted(set(faults_before) | {i for i in range(first, last + 1)
                                          if ops[i].order_id == order_id or ops[i].type == NEMESIS}):
        yield ops[i]


def describe(op: Op) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(op.time)) + f".{int(op.time * 1000) % 1000:03d}"
    if op.type == NEMESIS:
        return f"{stamp}  nemesis  {op.f} {op.detail}"
    parts: list[Any] = [stamp, f"p{op.process}", op.type, op.f, op.order_id, f"req={op.request_id}"]
    if op.f != "place" and op.type == INVOKE:
        parts.append(f"expected={op.expected_version}")
    if op.type == OK:
        parts.append(f"version={op.version}" + (f" total={op.total}" if op.total else ""))
    if op.type in (FAIL, INFO):
        parts.append(f"{op.code} {op.detail[:80]}")
    return "  ".join(str(p) for p in parts)

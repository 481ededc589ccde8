"""The faults, injected into a running LocalStack on a seeded schedule, each recorded in the
history. A killed role comes back through the stack's own supervisor (as under `orders up`); a
killed PostgreSQL or NATS is started again by the nemesis on the same port and data."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg

from server.platform import privileges
from tests.chaos.history import NEMESIS, History, Op

PAUSE_SECONDS = 7.0  # longer than the projector's AckWait (5 s): its deliveries go out again meanwhile
OUTAGE_SECONDS = 2.0
ROLES = ("command-server", "query-server", "relay", "projector")
# The processes each kind of fault strikes, in turn.
TARGETS = {"kill": ROLES, "pause": ("relay", "projector")}


Heal = Callable[[], None]


class Nemesis:
    """Strikes from the thread that supervises the stack: a process started again must be the
    child of a thread that lives as long as the stack (a child dies with the thread that
    started it). A fault with a duration returns what ends it, for the caller to run later."""

    def __init__(self, stack: Any, history: History, rng: random.Random, kinds: tuple[str, ...]) -> None:
        self.stack, self.history, self.rng = stack, history, rng
        # Every kind of fault against every target it has, dealt from a shuffled deck: a short run
        # still strikes each once before any twice.
        self.plan = [(kind, target) for kind in kinds for target in TARGETS.get(kind, ("",))]
        self.deck: list[tuple[str, str]] = []

    def strike(self) -> tuple[float, Heal] | None:
        """The next fault of the deck; (seconds, heal) when it lasts."""
        if not self.deck:
            self.deck = self.rng.sample(self.plan, len(self.plan))
        kind, target = self.deck.pop()
        result: tuple[float, Heal] | None = getattr(self, "_" + kind.replace("-", "_"))(target)
        return result

    def _process(self, role: str) -> Any:
        """A running process of `role` (one of several, when the stack runs more than one)."""
        running = [c for c in self.stack.children if c.role == role and c.proc is not None and c.proc.poll() is None]
        return self.rng.choice(running) if running else None

    def record(self, f: str, detail: str) -> None:
        self.history.add(Op(NEMESIS, f, detail=detail))

    def _kill(self, role: str) -> None:
        child = self._process(role)
        if child is not None:
            self.record("kill", f"{role} pid {child.proc.pid}")
            child.proc.kill()

    def _pause(self, role: str) -> tuple[float, Heal] | None:
        """SIGSTOP a role for a few seconds: a hung process, not a dead one."""
        child = self._process(role)
        if child is None:
            return None
        proc = child.proc
        self.record("pause", f"{role} pid {proc.pid} for {PAUSE_SECONDS:.0f}s")
        os.kill(proc.pid, signal.SIGSTOP)

        def resume() -> None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)

        return PAUSE_SECONDS, resume

    def _terminate_backends(self, _: str) -> None:
        """pg_terminate_backend on every connection of the command server: a cut mid-statement,
        mid-COMMIT included."""
        try:
            with psycopg.connect(self.stack.database_url, autocommit=True, connect_timeout=5) as conn:
                ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE usename = %s", (privileges.ROLE_OF_PROCESS["command-server"],)).fetchone()
        except psycopg.OperationalError:  # PostgreSQL itself is down: nothing to cut
            return
        self.record("terminate-backends", f"{ended[0] if ended else 0} command-server connections")

    def _kill_nats(self, _: str) -> tuple[float, Heal] | None:
        return self._crash("kill-nats", self.stack.nats)

    def _kill_postgres(self, _: str) -> tuple[float, Heal] | None:
        return self._crash("kill-postgres", self.stack.postgres)

    def _crash(self, f: str, server: Any) -> tuple[float, Heal] | None:
        """SIGKILL to the server's whole process group; healed by the same server started again."""
        if server is None or server.proc is None or server.proc.poll() is not None:
            return None
        self.record(f, f"pid {server.proc.pid}, down {OUTAGE_SECONDS:.0f}s")
        crash(server.proc)
        return OUTAGE_SECONDS, server.start


def crash(proc: Any) -> None:
    """SIGKILL to a server and every process it started, as a machine's crash would end them:
    PostgreSQL's backends each lead a session of their own, so its process group is not all of
    them. Returns once all are gone (a backend left over would hold the old shared memory)."""
    family = [proc.pid, *children_of(proc.pid)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") and not _zombie(pid) for pid in family):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {family} outlived SIGKILL for 30 s")
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, not ")".
                fields = open(f"/proc/{entry}/stat").read().rpartition(")")[2].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True

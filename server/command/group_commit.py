"""Group commit: the writes of commands that arrive together go to PostgreSQL together, in one
round trip and one transaction, while each command keeps its own claim, change, event, answer and
error.

Each command's write is one statement that answers rather than raises for whatever a caller can
cause (store: a version conflict, a reused request id, a missing customer). So one transaction
holds a group: a refused command writes nothing and its neighbours commit. One group is in the
database at a time, and the commands whose writes arrive meanwhile form the next: the busier the
server, the larger the groups, with no timer. A group that stays in the database for
STALLED_SECONDS (waiting for a row another transaction holds) lets the next one start beside it,
up to `slots` at a time. A writer that starts while other commands are on their way to their
writes (reading their aggregates) gathers them for at most `window` seconds, or until
`max_group` writes wait; at concurrency 1 nothing waits, and a caller's deadline never decides.

Writes also wake the relay: a write (or a group) carries a NOTIFY, delivered when it commits,
when the last one is NOTIFY_INTERVAL old; a commit that carried none is covered by the next one
that does, or else by a NOTIFY of the `Notifier`'s own after the interval. No command waits for
it, and no NOTIFY is a statement of its own while commands flow.

When the group's transaction fails as a whole (a statement's guard saw a race, a deadlock, a lost
connection), nothing of it committed; each of its commands is then written alone, as if no group
had formed, and answers on its own. A commit whose outcome is unknown (the connection lost at
COMMIT) is safe to repeat: a command that did commit finds its own claim and answers with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from server.command import store
from server.platform.schema import NOTIFY_CHANNEL

GROUP_SIZE = Histogram("orders_command_group_size", "Commands written in one transaction (group commit)",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
QUEUED = Gauge("orders_command_group_queued", "Command writes waiting for a group to take them")
SET_LOCAL_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
NOTIFY_INTERVAL = 0.002
STALLED_SECONDS = 0.05


class Notifier:
    """When the relay is to be woken: one NOTIFY at most every NOTIFY_INTERVAL, for however many
    commits happened meanwhile, ridden by a write when one is due (`due`), else sent by `run`
    after a commit that none covered (`uncovered`).

    Kept out of most commands' transactions: NOTIFY takes a lock from its commit's start to its
    end, which would serialise every commit behind it. If this process dies between a commit and
    its NOTIFY, the relay's poll finds the event."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._pending = asyncio.Event()
        self._next_due = 0.0
        self._covered_at = 0.0  # when the latest commit that carried a NOTIFY ended
        self._uncovered_at = 0.0  # when the latest commit that carried none ended

    def due(self) -> bool:
        """Whether the write about to go carries a NOTIFY."""
        now = asyncio.get_running_loop().time()
        if now < self._next_due:
            return False
        self._next_due = now + NOTIFY_INTERVAL
        return True

    def covered(self) -> None:
        """A commit that carried a NOTIFY has ended: the relay sees every commit before it."""
        self._covered_at = asyncio.get_running_loop().time()

    def uncovered(self) -> None:
        """A commit without a NOTIFY has ended: one must follow."""
        self._uncovered_at = asyncio.get_running_loop().time()
        self._pending.set()

    async def run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await self._pending.wait()
                self._pending.clear()
                await asyncio.sleep(NOTIFY_INTERVAL)  # a write may carry it meanwhile
                if self._covered_at >= self._uncovered_at:
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                    await conn.execute(NOTIFY)
                    self.covered()
                except psycopg.Error:
                    conn = None
                    self._pending.set()
                    await asyncio.sleep(0.5)
        finally:
            if conn is not None:
                await conn.close()


@dataclass(eq=False)
class _Write:
    statement: str
    params: dict[str, Any]
    timeout_ms: str
    done: asyncio.Future[tuple[Any, ...]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    """Writes commands' statements in groups over a pool's connections (see the module's text)."""

    def __init__(self, pool: AsyncConnectionPool, notifier: Notifier, *, slots: int = 2, max_group: int = 64,
                 window: float = 0.0005) -> None:
        self._pool = pool
        self._notifier = notifier
        self._slots = slots
        self._max_group = max_group
        self._window = window
        self._queue: deque[_Write] = deque()
        self._writers = 0
        self._on_the_way = 0  # commands begun that have neither written nor ended
        self._gathered = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._kept: list[store.Connection] = []
        self._stalled = 0  # groups in the database for longer than STALLED_SECONDS

    def command(self) -> Command:
        """A command's reads and its write, for its Session; `close` it when the command ends."""
        self._on_the_way += 1
        return Command(self, self._pool)

    async def write(self, statement: str, params: dict[str, Any], timeout_ms: str) -> tuple[Any, ...]:
        write = _Write(statement, params, timeout_ms)
        self._queue.append(write)
        QUEUED.inc()
        if self._writers == 0 or (self._stalled == self._writers < self._slots):
            self._start_writer()
        elif len(self._queue) >= self._max_group:
            self._gathered.set()
        return await write.done

    def _start_writer(self) -> None:
        self._writers += 1
        task = asyncio.create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stall(self) -> None:
        """A group has been in the database for STALLED_SECONDS (waiting for a lock, say): while
        every group in the database is stalled, writes queued or arriving go in a group of their
        own beside them, up to `slots` groups at a time."""
        self._stalled += 1
        if self._queue and self._stalled == self._writers < self._slots:
            self._start_writer()

    def _arrived(self) -> None:
        """One command fewer on its way: a writer gathering for it need wait no longer."""
        self._on_the_way -= 1
        if self._on_the_way == 0 or len(self._queue) >= self._max_group:
            self._gathered.set()

    async def _drain(self) -> None:
        """Writes groups until no write waits. One group is in the database at a time, and the
        writes that arrive meanwhile form the next; another starts beside it only when it
        stalls (`_stall`)."""
        try:
            while self._queue:
                if self._on_the_way and len(self._queue) < self._max_group:
                    await self._gather()
                group: list[_Write] = []
                while self._queue and len(group) < self._max_group:
                    write = self._queue.popleft()
                    QUEUED.dec()
                    if not write.done.done():  # its caller gave up before it was sent: no write
                        group.append(write)
                if group:
                    await self._write(group)
        finally:
            self._writers -= 1

    async def _gather(self) -> None:
        """Waits at most the window: until the commands on their way have written, or until a
        full group waits."""
        self._gathered.clear()
        timer = asyncio.get_running_loop().call_later(self._window, self._gathered.set)
        try:
            await self._gathered.wait()
        finally:
            timer.cancel()

    async def _write(self, group: list[_Write]) -> None:
        GROUP_SIZE.observe(len(group))
        stalled = False

        def stall() -> None:
            nonlocal stalled
            stalled = True
            self._stall()

        timer = asyncio.get_running_loop().call_later(STALLED_SECONDS, stall)
        try:
            await self._write_group(group)
        finally:
            timer.cancel()
            if stalled:
                self._stalled -= 1

    async def _write_group(self, group: list[_Write]) -> None:
        if len(group) == 1:
            await self._alone(group[0])
            return
        try:
            rows = await self._together(group)
        except (psycopg.Error, OSError, TimeoutError):
            # Nothing of the group committed (or, at a lost COMMIT, the commands that did find
            # their own claims): each is written alone and answers for itself.
            await asyncio.gather(*(self._alone(write) for write in group))
            return
        for write, row in zip(group, rows):
            if not write.done.done():
                write.done.set_result(row)

    async def _together(self, group: list[_Write]) -> list[tuple[Any, ...]]:
        """One transaction, sent as one pipeline: one round trip and one commit."""
        timeout_ms = min((write.timeout_ms for write in group), key=int)
        notify = self._notifier.due()
        conn = await self._take(timeout_ms)
        ok = False
        try:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(SET_LOCAL_TIMEOUT, (timeout_ms,))  # until this transaction ends
                cursors = [await conn.execute(write.statement, write.params) for write in group]
                if notify:
                    await conn.execute(NOTIFY)
            rows = [await cursor.fetchone() for cursor in cursors]
            ok = True
        finally:
            await self._give(conn, ok)
        self._committed(notify)
        assert all(row is not None for row in rows)  # a write statement always answers with its one row
        return rows  # type: ignore[return-value]

    async def _alone(self, write: _Write) -> None:
        notify = self._notifier.due()
        statement = store.NOTIFYING[write.statement] if notify else write.statement
        try:
            conn = await self._take(write.timeout_ms)
            ok = False
            try:
                row = await store.write_on(conn, statement, write.params, write.timeout_ms)
                ok = True
            finally:
                await self._give(conn, ok)
        except BaseException as exc:
            if not write.done.done():
                write.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._committed(notify)
        if not write.done.done():
            write.done.set_result(row)

    async def _take(self, timeout_ms: str) -> store.Connection:
        """A connection for a write: one the writers kept, else one from the pool."""
        if self._kept:
            return self._kept.pop()
        return await self._pool.getconn(timeout=int(timeout_ms) / 1000)

    async def _give(self, conn: store.Connection, ok: bool) -> None:
        """Writers keep up to `slots` connections that ended their last write cleanly: taking
        one back from the pool for every write cost as much as a tenth of the write."""
        if ok and len(self._kept) < self._slots and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            self._kept.append(conn)
        else:
            await self._pool.putconn(conn)

    def _committed(self, notified: bool) -> None:
        if notified:
            self._notifier.covered()
        else:
            self._notifier.uncovered()

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._kept:
            await self._pool.putconn(self._kept.pop())


class Command:
    """One command's view of the database (store.Database): its reads on a pooled connection of
    their own, its write in a group."""

    def __init__(self, group: GroupCommit, pool: AsyncConnectionPool) -> None:
        self._group = group
        self._pool = pool
        self._open = True

    async def read(self, statement: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        async with self._pool.connection(timeout=_seconds(params)) as conn:
            return await store.read_on(conn, statement, params)

    async def write(self, statement: str, params: dict[str, Any], timeout_ms: str) -> tuple[Any, ...]:
        self.close()
        return await self._group.write(statement, params, timeout_ms)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._group._arrived()


def _seconds(params: dict[str, Any]) -> float | None:
    timeout_ms = params.get("timeout_ms")
    return None if timeout_ms is None else int(timeout_ms) / 1000

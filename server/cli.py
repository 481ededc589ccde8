"""The `orders` command: `up` runs the whole stack; each role also runs alone."""
# ruff: noqa: E402  (the environment default below must precede the imports)

from __future__ import annotations

import os

# `orders up` and the roles start child processes (PostgreSQL, nats-server, the roles) with a
# fork+exec that sets up their parent-death signal. gRPC's fork handlers would restart its
# pollers in the forked child before the exec, on descriptors the fork has just closed, and
# abort it. The roles never fork to run gRPC code, so the handlers have nothing to protect.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# gRPC's C core prints a plain-text line for every refused TLS handshake (a client without a
# certificate, a scanner) at its default verbosity: noise an unauthenticated peer can produce at
# will, among the JSON log lines. GRPC_VERBOSITY=INFO in the environment brings them back.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import datetime as dt
import importlib.util
import json
import logging
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

# Every role's event loop: a command's dozen wake-ups (gRPC completions, psycopg waits) cost less
# on libuv's (docs/benchmarks.md has the measurement).
import uvloop

from server.config import ROLES, ConfigError, Settings
from server.platform.reach import ServiceError
from server.platform.scopes import SCOPES
from server.saga.model import State as SagaState
from server.telemetry import setup_tracing
from server.telemetry.logs import setup_logging

# Exit status of every command, for scripts: 0 done, 1 done and found a problem (parity
# differences, no such dead letter), 2 not done: bad usage, bad configuration or a service that
# did not answer (one line per problem on stderr, never a traceback).
EXIT_UNUSABLE = 2
EPILOG = ("exit status: 0 done; 1 done, and found a problem (e.g. parity differences); 2 not done: "
          "bad usage, a malformed or missing environment variable, or PostgreSQL/NATS unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orders", description=__doc__, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="embedded PostgreSQL and NATS, migrations, and every role, until Ctrl-C")
    sub.add_parser("migrate", help="bring the database at DATABASE_URL to the newest schema")
    token = sub.add_parser("token", help="print a bearer token signed with the dev key of `orders up`",
                           description="Mints a token with the dev signing key under ORDERS_DATA_DIR (made on first "
                                       "use): for a laptop and for tests. Production tokens come from your issuer.")
    token.add_argument("--tenant", default="default", help="the tenant_id claim (default: default)")
    token.add_argument("--scope", action="append", required=True, choices=SCOPES,
                       help="a scope the token grants; repeat for several")
    token.add_argument("--ttl", type=_duration, default="1h", help="lifetime, e.g. 90s, 30m, 1h, 7d (default: 1h)")
    token.add_argument("--subject", default="dev", help="the sub claim: the actor recorded on events (default: dev)")
    sub.add_parser("command-server", help="serve orders.v1.CommandService on COMMAND_ADDR")
    sub.add_parser("query-server", help="serve orders.v1.QueryService on QUERY_ADDR")
    sub.add_parser("relay", help="publish the outbox (events table) to JetStream")
    projector = sub.add_parser("projector", help="build the read models from JetStream (or pause/resume it)")
    projector.add_argument("action", nargs="?", choices=["run", "pause", "resume"], default="run")
    saga = sub.add_parser("saga", help="run the fulfilment saga, or: list | show ORDER_ID | retry ORDER_ID",
                          description="Without an action, runs the saga process. list, show and retry read and "
                                      "change the sagas in the database at DATABASE_URL.")
    saga.add_argument("action", nargs="?", choices=["run", "list", "show", "retry"], default="run")
    saga.add_argument("order_id", nargs="?", help="show, retry: the order whose saga it is")
    saga.add_argument("--tenant", default=None, help="the order's tenant (show, retry: default `default`)")
    saga.add_argument("--state", default=None, choices=[state.value for state in SagaState],
                      help="list: only sagas in this state")
    saga.add_argument("--limit", type=int, default=50, help="list: at most this many, newest first (default: 50)")
    saga.add_argument("--json", action="store_true", help="list, show: one JSON document on stdout, for scripts")
    status = sub.add_parser("status", help="projection lag (events, seconds), checkpoint, pause state, dead letters")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
    dlq = sub.add_parser("dlq", help="dead letters: list | show ID | replay ID|--all | discard ID")
    dlq.add_argument("action", choices=["list", "show", "replay", "discard"])
    dlq.add_argument("id", nargs="?", help="dead letter id")
    dlq.add_argument("--all", action="store_true", help="replay every parked aggregate")
    dlq.add_argument("--dry-run", action="store_true", help="report what would happen, change nothing")
    dlq.add_argument("--json", action="store_true", help="list: one JSON document on stdout, for scripts")
    for name, text in (("rebuild", "rebuild a read model from the events table into shadow tables"),
                       ("parity", "compare a rebuilt shadow with the live read model; non-zero exit on differences"),
                       ("swap", "swap a rebuilt shadow in, in one transaction")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("model", help="order_summaries | customer_orders | product_sales | customer_credit | product_stock")
        if name == "rebuild":
            cmd.add_argument("--swap", action="store_true", help="then check parity and swap if equal")
    outbox = sub.add_parser("outbox", help="the outbox: status, and republishing for disaster recovery")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    outbox_status = outbox_sub.add_parser("status", help="unpublished events, the oldest one's age, the active relay")
    outbox_status.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
    again = outbox_sub.add_parser("republish", help="send events created at or after --since again")
    again.add_argument("--since", required=True, help="a timestamp, e.g. 2026-01-31T12:00:00Z")
    again.add_argument("--dry-run", action="store_true", help="only count the events")
    forget = sub.add_parser("forget", help="erase customers' personal data for good (crypto-shredding), "
                                           "with a report of what was erased")
    forget.add_argument("customer_ids", nargs="*", metavar="CUSTOMER_ID", help="the customers to forget")
    forget.add_argument("--tenant", default="default", help="their tenant (default: default)")
    forget.add_argument("--from", dest="from_file", type=Path, default=None,
                        help="also forget each `tenant customer` line of this file (`-` for stdin): what "
                             "--list printed, to re-shred a restored backup")
    forget.add_argument("--list", action="store_true", help="print every forgotten customer as `tenant customer`")
    forget.add_argument("--dry-run", action="store_true", help="report what would be erased, change nothing")
    forget.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
    bench = sub.add_parser("bench", help="measure throughput and latency against same-run baselines")
    bench.add_argument("stage", nargs="?",
                       choices=("all", "write", "query", "projector", "overload", "saga", "stack", "instructions"),
                       default="all",
                       help="all (default), or one of: write (commands, database ceiling, relay, tracing), "
                            "query (watch delay, reads), projector (projector and rebuild rates), "
                            "overload (a command server offered --factor times its capacity), "
                            "saga (orders placed to confirmed beside PlaceOrder alone), "
                            "stack (orders placed and projected by the whole stack); and, not part of all: "
                            "instructions (callgrind's count per PlaceOrder and per no-op; needs valgrind)")
    bench.add_argument("--watchers", type=int, default=1000, help="query stage: concurrent WatchOrders streams")
    bench.add_argument("--rate", type=float, default=None,
                       help="query stage: commands per second while watching (default: half the measured maximum, "
                            "or 200 when the write stage did not run)")
    bench.add_argument("--factor", type=float, default=2.0,
                       help="overload stage: the offered rate as a multiple of the measured capacity")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    bench.add_argument("--concurrency", default=None,
                       help="comma-separated client concurrencies (default 1,16,64; the stack stage runs at the "
                            "highest, default 16)")
    bench.add_argument("--backlog", type=int, default=100_000, help="events the relay stage drains")
    bench.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    bench.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    bench.add_argument("--events", type=int, default=100_000, help="projector stage: backlog size")
    bench.add_argument("--running", action="store_true", help="measure the servers at COMMAND_ADDR/QUERY_ADDR")
    bench.add_argument("--calls", type=int, default=300, help="instructions stage: calls counted of each kind")
    bench.add_argument("--warmup", type=int, default=100, help="instructions stage: calls before counting")
    args = parser.parse_args(argv)
    if args.command == "dlq":
        _check_dlq_arguments(parser, args)
    if args.command == "bench" and args.stage == "instructions" and args.running:
        parser.error("the instructions stage starts a command server of its own under valgrind: no --running")
    if args.command == "saga" and args.action in ("show", "retry") and not args.order_id:
        parser.error(f"orders saga {args.action} needs an order id")
    try:
        return _run(args)
    except (ConfigError, ServiceError) as exc:
        # The one place an unusable environment becomes a message: one line per problem.
        action = getattr(args, "outbox_command", None) or getattr(args, "action", None)
        for line in str(exc).splitlines():
            print(f"orders {args.command}{' ' + action if action else ''}: {line}", file=sys.stderr)
        return EXIT_UNUSABLE


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    setup_logging(args.command, settings.log_level)
    provider = setup_tracing(args.command) if args.command in ROLES else None
    try:
        return _dispatch(args, settings)
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans still in the batch


def _check_dlq_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.action != "list" and not (args.id or (args.action == "replay" and args.all)):
        parser.error(f"orders dlq {args.action} needs an id" + (" or --all" if args.action == "replay" else ""))
    if args.id is not None and not args.id.isdigit():
        parser.error(f"a dead letter id is a number, as `orders dlq list` shows it; got {args.id!r}")
    if args.json and args.action != "list":
        parser.error("--json goes with `orders dlq list`")


def _saga_ops(args: argparse.Namespace, settings: Settings) -> int:
    from server.saga import ops

    try:
        if args.action == "list":
            sagas = uvloop.run(ops.list_sagas(settings, args.state, args.tenant, args.limit))
            if args.json:
                _print_json(sagas)
            for saga in [] if args.json else sagas:
                print(f"{saga['tenant_id']}/{saga['order_id']}  {saga['state']:<16} {saga['note']:<24} "
                      f"{saga['updated_at']:%Y-%m-%d %H:%M:%S}")
            return 0
        tenant = args.tenant or "default"
        if args.action == "show":
            saga = uvloop.run(ops.show(settings, tenant, args.order_id))
            if args.json:
                _print_json(saga)
            else:
                print(ops.show_text(saga))
            return 0
        print(uvloop.run(ops.retry(settings, tenant, args.order_id)))
        return 0
    except ops.NoSuchSagaError as exc:
        print(f"orders saga {args.action}: {exc}", file=sys.stderr)
        return 1


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    from server.command import forget
    from server.platform.reach import check_database

    uvloop.run(check_database(settings))  # an unreachable database is one line, not a traceback
    if args.list:
        for tenant_id, customer_id in uvloop.run(forget.forgotten(settings)):
            print(f"{tenant_id} {customer_id}")
        return 0
    ids = [(args.tenant, customer_id) for customer_id in args.customer_ids]
    if args.from_file is not None:
        text = sys.stdin.read() if str(args.from_file) == "-" else args.from_file.read_text()
        ids += forget.parse_ids(text.splitlines(), args.tenant)
    if not ids:
        print("orders forget: name a CUSTOMER_ID, --from FILE or --list", file=sys.stderr)
        return 2
    reports = uvloop.run(forget.forget(settings, ids, args.dry_run))
    if args.json:
        _print_json({"customers": reports})
    else:
        for report in reports:
            print(forget.report_text(report))
    # A customer named on the command line must exist; one from --from may postdate a backup.
    named = {(args.tenant, customer_id) for customer_id in args.customer_ids}
    return 1 if any(not r["found"] and (r["tenant_id"], r["customer_id"]) in named for r in reports) else 0


def _duration(text: str) -> float:
    """Seconds from 90s, 30m, 1h or 7d (argparse's type: a ValueError is a usage error)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 1h or 7d")
    return float(int(number) * units[unit])


def _require_bench() -> None:
    """The benchmarks are not part of the installed packages: they run from a source checkout."""
    if importlib.util.find_spec("bench") is None:
        raise ConfigError(["the benchmarks live in bench/ of a source checkout, not in the installed package: "
                           "run `make bench`, or `python -m server bench` from the checkout's root"])


def _print_json(document: Any) -> None:
    """Numbers stay numbers; times are ISO-8601."""

    def value(obj: Any) -> Any:
        if isinstance(obj, dt.datetime | dt.date):
            return obj.isoformat()
        if isinstance(obj, Decimal):
            return float(obj)
        if isinstance(obj, uuid.UUID):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON")

    print(json.dumps(document, default=value))


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "up":
            from server.devstack.supervisor import up

            return up(settings)
        case "token":
            from server.devstack.supervisor import dev_issuer

            if settings.jwks:
                print("orders token: ORDERS_JWKS is set, so the servers trust another issuer than this dev key",
                      file=sys.stderr)
            print(dev_issuer(settings).mint(args.tenant, args.scope, ttl_seconds=args.ttl, subject=args.subject))
            return 0
        case "bench" if args.stage == "projector":
            _require_bench()
            from bench import projector as projector_bench

            return projector_bench.run(settings, events=2_000 if args.quick else args.events, json_path=args.json)
        case "bench" if args.stage == "instructions":
            _require_bench()
            from bench import stages as benchmark

            return benchmark.run_instructions(settings, calls=args.calls, warmup=args.warmup, json_path=args.json)
        case "bench":
            _require_bench()
            from bench import stages as benchmark

            return benchmark.run(
                settings,
                stage=args.stage,
                seconds=0.5 if args.quick else args.seconds,
                concurrencies=[int(c) for c in (args.concurrency or "1,16,64").split(",")],
                stack_concurrency=max(int(c) for c in args.concurrency.split(",")) if args.concurrency else 16,
                backlog=2_000 if args.quick else args.backlog,
                events=2_000 if args.quick else args.events,
                watchers=20 if args.quick else args.watchers,
                rate=args.rate,
                factor=args.factor,
                json_path=args.json,
                use_running=args.running,
            )
        case "forget":
            return _forget(args, settings)
        case "outbox":
            from server.relay import outbox as outbox_relay

            if args.outbox_command == "status":
                figures = uvloop.run(outbox_relay.outbox_status(settings))
                if args.json:
                    _print_json(figures)
                else:
                    print(outbox_relay.status_text(figures))
            else:
                count = uvloop.run(outbox_relay.republish(settings, args.since, args.dry_run))
                print(f"{count} events {'would be' if args.dry_run else 'are'} marked for republishing")
            return 0
        case "migrate":
            from server.platform.migrations import MigrationBlockedError, upgrade
            from server.platform.migrations.roles import MissingRolesError
            from server.platform.reach import check_database

            uvloop.run(check_database(settings))  # alembic would wait on an unreachable server
            try:
                upgrade(settings.require_database_url())
            except (MissingRolesError, MigrationBlockedError) as exc:
                raise ServiceError(str(exc)) from None
            logging.getLogger(__name__).info("database is at the newest schema")
            return 0
        case "command-server":
            from server.command import service as command_service

            uvloop.run(command_service.run(settings))
        case "query-server":
            from server.query import service as query_service

            uvloop.run(query_service.run(settings))
        case "relay":
            from server.relay import outbox as relay

            uvloop.run(relay.run(settings))
        case "saga" if args.action == "run":
            from server.saga import runner as saga_runner

            uvloop.run(saga_runner.run(settings))
        case "saga":
            return _saga_ops(args, settings)
        case "projector" if args.action in ("pause", "resume"):
            from projector.ops import commands as ops

            print(uvloop.run(ops.pause(settings, resume=args.action == "resume")))
        case "projector":
            from projector import consumer

            uvloop.run(consumer.run(settings))
        case "status":
            from projector.ops import commands as ops

            figures = uvloop.run(ops.status(settings))
            if args.json:
                _print_json(figures)
                return 0
            print(ops.status_text(figures))
            return 0
        case "dlq" if args.action == "list":
            from projector.ops import commands as ops

            letters = uvloop.run(ops.dead_letters(settings))
            if args.json:
                _print_json({"parked": len(letters), "dead_letters": letters})
                return 0
            for letter in letters:
                print(ops.letter_line(letter))
            print(f"{len(letters)} parked", file=sys.stderr)
            return 0
        case "dlq":
            from projector.ops import commands as ops

            return uvloop.run(ops.dlq_command(settings, args.action, args.id, args.dry_run, args.all))
        case "rebuild" | "parity" | "swap":
            from projector.ops import commands as ops

            return uvloop.run(ops.rebuild_command(settings, args.command, args.model, getattr(args, "swap", False)))
    return 0

"""The `orders` command: `up` runs the whole stack; each role also runs alone."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from server.config import Settings
from server.telemetry import setup_logging



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orders", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="embedded PostgreSQL and NATS, migrations, and every role, until Ctrl-C")
    sub.add_parser("migrate", help="bring the database at DATABASE_URL to the newest schema")
    sub.add_parser("command-server", help="serve orders.v1.CommandService on COMMAND_ADDR")
    sub.add_parser("query-server", help="serve orders.v1.QueryService on QUERY_ADDR")
    sub.add_parser("relay", help="publish the outbox (events table) to JetStream")
    projector = sub.add_parser("projector", help="build the read models from JetStream (or pause/resume it)")
    projector.add_argument("action", nargs="?", choices=["run", "pause", "resume"], default="run")
    sub.add_parser("status", help="projection lag (events, seconds), checkpoint, pause state, dead letters")
    dlq = sub.add_parser("dlq", help="dead letters: list | show ID | replay ID|--all | discard ID")
    dlq.add_argument("action", choices=["list", "show", "replay", "discard"])
    dlq.add_argument("id", nargs="?", help="dead letter id")
    dlq.add_argument("--all", action="store_true", help="replay every parked aggregate")
    dlq.add_argument("--dry-run", action="store_true", help="report what would happen, change nothing")
    for name, text in (("rebuild", "rebuild a read model from the events table into shadow tables"),
                       ("parity", "compare a rebuilt shadow with the live read model; non-zero exit on differences"),
                       ("swap", "swap a rebuilt shadow in, in one transaction")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("model", help="order_summaries | customer_orders | product_sales")
        if name == "rebuild":
            cmd.add_argument("--swap", action="store_true", help="then check parity and swap if equal")
    bench = sub.add_parser("bench", help="measure throughput and latency against same-run baselines")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    bench.add_argument("--concurrency", default="1,16,64", help="comma-separated client concurrencies")
    bench.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    bench.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    bench.add_argument("stage", nargs="?", choices=["write", "projector"], default="write")
    bench.add_argument("--events", type=int, default=100_000, help="projector stage: backlog size")
    bench.add_argument("--running", action="store_true", help="measure the servers at COMMAND_ADDR/QUERY_ADDR")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    setup_logging(args.command, settings.log_level)
    match args.command:
        case "up":
            from server.supervisor import up

            return up(settings)
        case "bench" if args.stage == "projector":
            from projector import bench as projector_bench

            return projector_bench.run(settings, events=2_000 if args.quick else args.events, json_path=args.json)
        case "bench":
            from server import bench as benchmark

            return benchmark.run(
                settings,
                seconds=0.5 if args.quick else args.seconds,
                concurrencies=[int(c) for c in args.concurrency.split(",")],
                json_path=args.json,
                use_running=args.running,
            )
        case "migrate":
            from server.migrations import upgrade

            upgrade(settings.require_database_url())
            logging.getLogger(__name__).info("database is at the newest schema")
            return 0
        case "command-server":
            from server import command_service

            asyncio.run(command_service.run(settings))
        case "query-server":
            from server import query_service

            asyncio.run(query_service.run(settings))
        case "relay":
            from server import relay

            asyncio.run(relay.run(settings))
        case "projector" if args.action in ("pause", "resume"):
            from projector import ops

            print(asyncio.run(ops.pause(settings, resume=args.action == "resume")))
        case "projector":
            from projector import consumer

            asyncio.run(consumer.run(settings))
        case "status":
            from projector import ops

            figures = asyncio.run(ops.status(settings))
            for key, value in figures.items():
                print(f"{key}: {value}")
            return 0
        case "dlq":
            from projector import ops

            if args.action != "list" and not (args.id or (args.action == "replay" and args.all)):
                parser.error(f"dlq {args.action} needs an id" + (" or --all" if args.action == "replay" else ""))
            return asyncio.run(ops.dlq_command(settings, args.action, args.id, args.dry_run, args.all))
        case "rebuild" | "parity" | "swap":
            from projector import ops

            return asyncio.run(ops.rebuild_command(settings, args.command, args.model, getattr(args, "swap", False)))
    return 0

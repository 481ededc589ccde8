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
    sub.add_parser("projector", help="build the read models from JetStream")
    bench = sub.add_parser("bench", help="measure throughput and latency against same-run baselines")
    bench.add_argument("stage", nargs="?", choices=("write", "query"), default="write",
                       help="write: PlaceOrder vs no-op; query: WatchOrders delay, Get/List vs no-op")
    bench.add_argument("--watchers", type=int, default=1000, help="query stage: concurrent WatchOrders streams")
    bench.add_argument("--rate", type=float, default=200.0, help="query stage: commands per second while watching")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    bench.add_argument("--concurrency", default="1,16,64", help="comma-separated client concurrencies")
    bench.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    bench.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    bench.add_argument("--running", action="store_true", help="measure the servers at COMMAND_ADDR/QUERY_ADDR")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    setup_logging(args.command, settings.log_level)
    match args.command:
        case "up":
            from server.supervisor import up

            return up(settings)
        case "bench":
            from server import bench as benchmark

            return benchmark.run(
                settings,
                seconds=0.5 if args.quick else args.seconds,
                concurrencies=[int(c) for c in args.concurrency.split(",")],
                json_path=args.json,
                use_running=args.running,
                stage=args.stage,
                watchers=20 if args.quick and args.stage == "query" else args.watchers,
                rate=args.rate,
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
        case "projector":
            from projector import consumer

            asyncio.run(consumer.run(settings))
    return 0

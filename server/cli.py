"""The `orders` command: `up` runs the whole stack; each role also runs alone."""

from __future__ import annotations

import argparse
import asyncio
import logging

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
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    setup_logging(args.command, settings.log_level)
    match args.command:
        case "up":
            from server.supervisor import up

            return up(settings)
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

"""Connections for one-shot operator commands: bounded, tried once, failing with a message that
names the service, its address (never credentials) and what to check."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from nats.aio.client import Client
from nats.errors import NoServersError

from server.config import Settings, public_address
from server.platform import messaging


class ServiceError(Exception):
    """PostgreSQL or NATS could not serve the command; the message is one line, fit for stderr."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def _unreachable(service: str, address: str, reason: str, variable: str) -> ServiceError:
    return ServiceError(f"cannot reach {service} at {address} ({reason}): check {variable} "
                        f"and that the server is running and accepts connections from here")


@asynccontextmanager
async def database(settings: Settings, **options: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One connection to PostgreSQL, or a ServiceError within the connect timeout."""
    url = settings.require_database_url()
    where = public_address(url)
    seconds = settings.connect_timeout_seconds
    try:
        # libpq's own timeout counts per address a host name resolves to; the outer one bounds them all.
        async with asyncio.timeout(seconds):
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=max(2, math.ceil(seconds)), **options)
    except TimeoutError:
        raise _unreachable("PostgreSQL", where, f"no answer within {seconds:g}s", "DATABASE_URL") from None
    except psycopg.OperationalError as exc:
        raise _unreachable("PostgreSQL", where, _first_line(exc), "DATABASE_URL") from None
    try:
        async with conn:
            yield conn
    except psycopg.errors.UndefinedTable as exc:
        raise ServiceError(f"PostgreSQL at {where} lacks the orders schema ({_first_line(exc)}): "
                           f"run `orders migrate`") from None
    except psycopg.OperationalError as exc:
        raise ServiceError(f"PostgreSQL at {where} failed: {_first_line(exc)}") from None


async def check_database(settings: Settings) -> None:
    """Fails with a ServiceError unless PostgreSQL accepts a connection."""
    async with database(settings):
        pass


@asynccontextmanager
async def nats_connection(settings: Settings, name: str) -> AsyncIterator[Client]:
    """One connection to NATS that never reconnects, or a ServiceError within the connect timeout."""
    url = settings.require_nats_url()
    where = public_address(url)
    seconds = settings.connect_timeout_seconds
    nc = Client()
    attempts: list[Exception] = []

    async def failed(exc: Exception) -> None:
        # Kept for the message, not logged: nats-py would log each attempt with its traceback.
        attempts.append(exc)

    try:
        async with asyncio.timeout(seconds):
            # With max_reconnect_attempts 0 nats-py retries a refusing server for ever; 1 lets it
            # give up after a second try. allow_reconnect=False: no reconnect loop once connected.
            await nc.connect(name=name, connect_timeout=max(1, math.ceil(seconds)), allow_reconnect=False,
                             max_reconnect_attempts=1, reconnect_time_wait=0, error_cb=failed,
                             **messaging.server_options(url, settings.nats_access))
    except (TimeoutError, OSError, messaging.NatsError) as exc:
        await nc.close()
        cause = attempts[-1] if attempts and isinstance(exc, NoServersError) else exc
        reason = f"no answer within {seconds:g}s" if isinstance(cause, TimeoutError) else _first_line(cause)
        raise _unreachable("NATS", where, reason, "NATS_URL") from None
    try:
        yield nc
    except (TimeoutError, messaging.NatsError) as exc:
        raise ServiceError(f"NATS at {where} failed: {_first_line(exc)}") from None
    finally:
        await messaging.close(nc)

"""Statement timeouts from a call's deadline, for both servers: PostgreSQL never works on for a
caller that has given up. Each pooled connection remembers the value it was last set to, so a
statement costs an extra round trip only when its call's step differs from the last one's."""

from __future__ import annotations

import math
import weakref
from typing import Any

import psycopg

SET_TIMEOUT = "SELECT set_config('statement_timeout', %(timeout_ms)s, false)"

# What each pooled connection's statement_timeout was last set to (absent: not known).
known: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], str] = weakref.WeakKeyDictionary()


def timeout_step(budget_ms: float) -> int:
    """The statement timeout for a call with `budget_ms` left before its deadline: the largest
    step of 2**(n/4) ms within it, so at least 84% of the budget, and calls with like deadlines
    share a value that a pooled connection then already has."""
    if budget_ms < 2:
        return 1
    return int(2 ** (math.floor(4 * math.log2(budget_ms)) / 4))


async def set_timeout(conn: psycopg.AsyncConnection[Any], timeout_ms: str) -> None:
    """Sets the connection's statement timeout, and remembers it once set."""
    known.pop(conn, None)  # a failed statement leaves the setting unknown
    await conn.execute(SET_TIMEOUT, {"timeout_ms": timeout_ms})
    known[conn] = timeout_ms


async def bound(conn: psycopg.AsyncConnection[Any], budget_ms: float) -> None:
    """The connection's statements end within `budget_ms` (a step of it): set only if it differs."""
    timeout_ms = str(timeout_step(budget_ms))
    if known.get(conn) != timeout_ms:
        await set_timeout(conn, timeout_ms)

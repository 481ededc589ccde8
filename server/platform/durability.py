"""What the guarantees ask of PostgreSQL: a commit acknowledged to a caller survives a crash of
the database server. An external server may be set otherwise (a disposable test database, a
setting copied from a benchmark); the command server says so once, naming the setting, when it
first reaches the database. It still serves: the choice is the operator's."""

from __future__ import annotations

from typing import Any

# Each setting that breaks the promise, and what its value costs.
_RISKS = {
    ("fsync", "off"): "a crash of the database server can lose or corrupt committed data",
    ("synchronous_commit", "off"): "a crash of the database server can lose the last commits the command server "
                                   "already acknowledged",
    ("full_page_writes", "off"): "a crash of the database server can leave torn pages behind",
}


async def database_warnings(conn: Any) -> list[str]:
    """One line per setting of this session's database that breaks the promise."""
    cur = await conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                             (sorted({name for name, _ in _RISKS}),))
    return [f"{name}={value}: {_RISKS[(name, value)]}" for name, value in await cur.fetchall()
            if (name, value) in _RISKS]

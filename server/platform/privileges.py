"""The database roles of the processes and what each may do: the one grant matrix.

Each process logs in as (a member of) one group role and can touch only what its statements need:
the command server the write side, the query server nothing but SELECT on the read models it
serves, the projector the read models and its bookkeeping, the relay the outbox, the saga its
own state (it changes everything else through CommandService, like any client). Operator
commands and migrations run as the owner (DATABASE_URL). `orders migrate` converges the
database's grants to this matrix after every run (server/platform/migrations/env.py), so a new
table needs only its line here; a test compares the database's actual privileges with it, and a
table missing from the matrix fails that test.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

COMMAND = "orders_command"
QUERY = "orders_query"
PROJECTOR = "orders_projector"
RELAY = "orders_relay"
SAGA = "orders_saga"
ROLES = (COMMAND, QUERY, PROJECTOR, RELAY, SAGA)

# `orders <process>` -> the database role it runs as.
ROLE_OF_PROCESS = {"command-server": COMMAND, "query-server": QUERY, "projector": PROJECTOR, "relay": RELAY,
                   "saga": SAGA}

# Table privileges PostgreSQL knows; the ones a role lacks are checked to be absent.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

_READ = frozenset({"SELECT"})
_WRITE = frozenset({"SELECT", "INSERT", "UPDATE"})

# Every table of the schema, and what each role may do with it (absent: nothing).
TABLES: Mapping[str, Mapping[str, frozenset[str]]] = {
    # Write side: state rows guarded by version, the idempotency claim, the outbox.
    "customers": {COMMAND: _WRITE},
    "products": {COMMAND: _WRITE},
    "orders": {COMMAND: _WRITE},
    "order_lines": {COMMAND: frozenset({"SELECT", "INSERT"})},
    # UPDATE: forgetting a customer scrubs their registration's request hash.
    "idempotency": {COMMAND: _WRITE},
    # Customers' data keys: made by RegisterCustomer, deleted by ForgetCustomer, read by no one else.
    "customer_keys": {COMMAND: frozenset({"SELECT", "INSERT", "DELETE"})},
    # Appended by commands, read and marked published by the relay; no process deletes an event.
    "events": {COMMAND: frozenset({"INSERT"}), RELAY: frozenset({"SELECT", "UPDATE"})},
    # Read models: written by the projector; the query server reads those it serves.
    "order_summaries": {PROJECTOR: _WRITE, QUERY: _READ},
    "customer_orders": {PROJECTOR: _WRITE, QUERY: _READ},
    "product_sales": {PROJECTOR: _WRITE, QUERY: _READ},
    "customer_credit": {PROJECTOR: _WRITE, QUERY: _READ},
    "product_stock": {PROJECTOR: _WRITE, QUERY: _READ},
    "customer_order_states": {PROJECTOR: _WRITE},  # private to customer_orders' apply
    "product_sales_orders": {PROJECTOR: _WRITE},  # private to product_sales' apply
    # The projector's bookkeeping; a consistency token waits on applied_versions.
    "applied_versions": {PROJECTOR: _WRITE, QUERY: _READ},
    "projection_checkpoints": {PROJECTOR: _WRITE},
    "dead_letters": {PROJECTOR: frozenset({"SELECT", "INSERT"})},
    # The fulfilment saga's state and checkpoint; the query server shows each order's saga state.
    "sagas": {SAGA: _WRITE, QUERY: _READ},
    "saga_checkpoints": {SAGA: _WRITE},
    # Operator-only: rebuilds, the schema's version.
    "rebuilds": {},
    "rebuild_versions": {},
    "alembic_version": {},
}

# Sequences a role draws from: order_summaries' change_seq trigger runs as the projector.
# (Identity columns, events.id and dead_letters.id, need no grant on their sequences.)
SEQUENCES: Mapping[str, Mapping[str, frozenset[str]]] = {
    "order_summaries_change_seq": {PROJECTOR: frozenset({"USAGE"})},
}


def role_statements(missing: Iterable[str]) -> list[str]:
    """CREATE ROLE for each missing group role; safe when another migration creates it at the
    same moment (roles are cluster-wide, shared by every database of the server)."""
    return [
        f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
        f"EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        for role in missing
    ]


def missing_roles_message(missing: Iterable[str]) -> str:
    roles = list(missing)
    create = " ".join(f"CREATE ROLE {role} NOLOGIN;" for role in roles)
    return (f"the database roles {', '.join(roles)} do not exist and this user may not create them: "
            f"ask an administrator to run `{create}` (docs/security.md, \"Database roles\"), then migrate again")


def table_statements(table: str, physical: str | None = None) -> list[str]:
    """Brings one table's grants to the matrix: `physical` is the table as it is called now (a
    rebuild's shadow takes the grants of the live table it replaces)."""
    name = physical or table
    statements = [f"REVOKE ALL ON TABLE {name} FROM {', '.join(ROLES)}"]
    for role, privileges in sorted(TABLES.get(table, {}).items()):
        statements.append(f"GRANT {', '.join(sorted(privileges))} ON TABLE {name} TO {role}")
    return statements


def grant_statements(tables: Iterable[str], sequences: Iterable[str], schema: str) -> list[str]:
    """The whole matrix for the tables and sequences that exist; what the matrix does not name
    gets no grant at all."""
    statements = [f"GRANT USAGE ON SCHEMA {schema} TO {', '.join(ROLES)}"]
    for table in sorted(tables):
        statements.extend(table_statements(table))
    for sequence in sorted(sequences):
        statements.append(f"REVOKE ALL ON SEQUENCE {sequence} FROM {', '.join(ROLES)}")
        for role, privileges in sorted(SEQUENCES.get(sequence, {}).items()):
            statements.append(f"GRANT {', '.join(sorted(privileges))} ON SEQUENCE {sequence} TO {role}")
    return statements


# The catalog queries the statements above need: what exists in this database's schema.
EXISTING_ROLES = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%(roles)s)"
MAY_CREATE_ROLES = "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
EXISTING_TABLES = ("SELECT table_name FROM information_schema.tables"
                   " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")
EXISTING_SEQUENCES = "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = current_schema()"


def login_password(secret: str, role: str) -> str:
    """A role's login password derived from a secret the caller keeps (the owner's password):
    whoever holds the secret could grant itself anything anyway."""
    return hmac.new(secret.encode(), role.encode(), hashlib.sha256).hexdigest()[:32]


def login_statement(role: str, password: str) -> str:
    """Lets a group role log in with a password (development: `orders up` and the tests). The
    password is made of hex digits only, so quoting it is safe."""
    if not all(c in "0123456789abcdef" for c in password):
        raise ValueError("login passwords are hex digits")
    return f"ALTER ROLE {role} LOGIN PASSWORD '{password}'"


def login_url(owner_url: str, role: str, password: str) -> str:
    """The owner's URL with the role's user and password in place of the owner's."""
    parts = urlsplit(owner_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))

"""The database's actual privileges compared with the grant matrix (server/platform/privileges.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from server.platform import privileges

SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")


def grant_problems(db: psycopg.Connection[Any]) -> list[str]:
    """Every difference between what each role may do and what the matrix says, table by table
    and sequence by sequence, membership and PUBLIC's grants included; a table of the schema the
    matrix does not name is a difference too."""
    problems: list[str] = []
    tables = [r[0] for r in db.execute(privileges.EXISTING_TABLES)]
    for table in sorted(tables):
        if table not in privileges.TABLES:
            problems.append(f"{table}: not in the grant matrix (server/platform/privileges.py)")
            continue
        for role in privileges.ROLES:
            expected = privileges.TABLES[table].get(role, frozenset())
            for privilege in privileges.TABLE_PRIVILEGES:
                row = db.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)).fetchone()
                assert row is not None
                if row[0] != (privilege in expected):
                    problems.append(f"{table}: {role} {'has' if row[0] else 'lacks'} {privilege}")
    for table in sorted(set(privileges.TABLES) - set(tables)):
        problems.append(f"{table}: in the grant matrix but not in the database")
    for sequence in sorted(r[0] for r in db.execute(privileges.EXISTING_SEQUENCES)):
        for role in privileges.ROLES:
            expected = privileges.SEQUENCES.get(sequence, {}).get(role, frozenset())
            for privilege in SEQUENCE_PRIVILEGES:
                row = db.execute("SELECT has_sequence_privilege(%s, %s, %s)", (role, sequence, privilege)).fetchone()
                assert row is not None
                if row[0] != (privilege in expected):
                    problems.append(f"sequence {sequence}: {role} {'has' if row[0] else 'lacks'} {privilege}")
    return problems

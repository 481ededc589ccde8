"""The group roles and the grant matrix (server/platform/privileges.py) applied to a database."""

from __future__ import annotations

from sqlalchemy import Connection

from server.platform import privileges


class MissingRolesError(Exception):
    """The roles are missing and the migrating user may not create them: what to ask for."""


def _column(connection: Connection, sql: str, **params: object) -> list[str]:
    return [str(row[0]) for row in connection.exec_driver_sql(sql, params or None).fetchall()]


def missing_roles(connection: Connection) -> list[str]:
    present = set(_column(connection, privileges.EXISTING_ROLES, roles=list(privileges.ROLES)))
    return [role for role in privileges.ROLES if role not in present]


def create_roles(connection: Connection) -> None:
    """Creates the group roles that do not exist yet; fails, saying what to create, when this
    user may not."""
    missing = missing_roles(connection)
    if not missing:
        return
    if not connection.exec_driver_sql(privileges.MAY_CREATE_ROLES).scalar():
        raise MissingRolesError(privileges.missing_roles_message(missing))
    for statement in privileges.role_statements(missing):
        connection.exec_driver_sql(statement)


def converge_grants(connection: Connection) -> None:
    """Every table and sequence of the schema granted exactly as the matrix says. Skipped while
    the roles do not exist (a database not yet at the migration that creates them)."""
    if missing_roles(connection):
        return
    schema = str(connection.exec_driver_sql("SELECT current_schema()").scalar())
    tables = _column(connection, privileges.EXISTING_TABLES)
    sequences = _column(connection, privileges.EXISTING_SEQUENCES)
    for statement in privileges.grant_statements(tables, sequences, schema):
        connection.exec_driver_sql(statement)


def revoke_grants(connection: Connection) -> None:
    if missing_roles(connection):
        return
    everyone = ", ".join(privileges.ROLES)
    for table in _column(connection, privileges.EXISTING_TABLES):
        connection.exec_driver_sql(f"REVOKE ALL ON TABLE {table} FROM {everyone}")
    for sequence in _column(connection, privileges.EXISTING_SEQUENCES):
        connection.exec_driver_sql(f"REVOKE ALL ON SEQUENCE {sequence} FROM {everyone}")

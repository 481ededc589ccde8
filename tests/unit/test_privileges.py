"""The grant matrix turned into SQL, and development logins: pure functions, no database."""

from __future__ import annotations

import pytest

from server.config import NatsAccess
from server.platform import messaging, privileges


def test_a_shadow_table_gets_the_grants_of_the_live_table_it_replaces() -> None:
    statements = privileges.table_statements("order_summaries", physical="order_summaries__shadow")

    assert statements == [
        "REVOKE ALL ON TABLE order_summaries__shadow FROM orders_command, orders_query, orders_projector, orders_relay, orders_saga",
        "GRANT INSERT, SELECT, UPDATE ON TABLE order_summaries__shadow TO orders_projector",
        "GRANT SELECT ON TABLE order_summaries__shadow TO orders_query",
    ]


def test_a_table_the_matrix_does_not_name_gets_nothing_but_the_revoke() -> None:
    assert privileges.grant_statements(["unplanned"], [], "public") == [
        "GRANT USAGE ON SCHEMA public TO orders_command, orders_query, orders_projector, orders_relay, orders_saga",
        "REVOKE ALL ON TABLE unplanned FROM orders_command, orders_query, orders_projector, orders_relay, orders_saga",
    ]


def test_no_role_of_the_query_server_may_write() -> None:
    assert all(grants.get(privileges.QUERY, frozenset()) <= {"SELECT"} for grants in privileges.TABLES.values())


def test_the_missing_roles_message_carries_the_sql_to_run() -> None:
    message = privileges.missing_roles_message(["orders_query", "orders_relay"])

    assert "`CREATE ROLE orders_query NOLOGIN; CREATE ROLE orders_relay NOLOGIN;`" in message


def test_a_login_is_the_owner_url_with_the_role_in_place_of_the_owner() -> None:
    password = privileges.login_password("owner-secret", privileges.QUERY)

    assert privileges.login_url("postgresql://postgres:pw@127.0.0.1:5432/orders?sslmode=disable",
                                privileges.QUERY, password) == (
        f"postgresql://orders_query:{password}@127.0.0.1:5432/orders?sslmode=disable")
    assert privileges.login_password("another-secret", privileges.QUERY) != password
    assert privileges.login_statement(privileges.QUERY, password) == f"ALTER ROLE orders_query LOGIN PASSWORD '{password}'"
    with pytest.raises(ValueError):
        privileges.login_statement(privileges.QUERY, "x'; DROP ROLE postgres; --")


def test_nats_access_becomes_nats_py_options() -> None:
    assert messaging.access_options(NatsAccess()) == {}
    assert messaging.access_options(NatsAccess(user="orders-relay", password="pw")) == {
        "user": "orders-relay", "password": "pw"}

"""`orders up` with several command and query servers: each process gets a metrics port of its own."""

from __future__ import annotations

from dataclasses import replace

from server.config import ROLES, Settings
from server.devstack.supervisor import LocalStack


def test_every_process_of_several_command_and_query_servers_has_its_own_metrics_port() -> None:
    settings = replace(Settings.from_env({}), command_servers=3, query_servers=2, metrics_base_port=9000)
    stack = LocalStack(settings)

    ports = [stack.metrics_addr(role, n) for role in ROLES for n in range(stack.instances(role))]

    assert [stack.instances(role) for role in ROLES] == [3, 2, 1, 1, 1]
    assert len(ports) == 8 and len(set(ports)) == 8
    assert ports[:5] == [f"127.0.0.1:{p}" for p in (9000, 9005, 9006, 9001, 9007)]

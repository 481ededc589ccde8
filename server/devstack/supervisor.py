"""`orders up`: embedded services, migrations, and every role as a supervised child process."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import ROLE_DATABASE_VARIABLES, ROLES, ConfigError, Settings, TlsFiles, public_address
from server.devstack.embedded import (
    EmbeddedNats,
    EmbeddedNatsCluster,
    EmbeddedPostgres,
    EmbeddedReplica,
    database_logins,
)
from server.devstack.signing import DevIssuer, dev_kek
from server.platform.migrations import upgrade
from server.platform.process import die_with_parent
from server.platform.scopes import ANY_TENANT, WRITE
from server.platform.serving import DEFAULT_TENANT
from server.platform.tls import probe_credentials, transport_name

log = logging.getLogger("orders.up")

MAX_BACKOFF_SECONDS = 30.0
# The roles `orders up` may run several of; their further processes' metrics ports, in this order.
SCALED = ("command-server", "query-server", "projector")
STOP_TIMEOUT_SECONDS = 15.0


@dataclass
class Child:
    role: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    backoff: float = 1.0
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    # A program to run the role under, with its arguments (the bench's valgrind).
    wrapper: tuple[str, ...] = ()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "server", self.role], env=self.env, preexec_fn=die_with_parent
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self) -> None:
        """Restarts a role that died, with growing backoff, and says so."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                log.warning("restarting", extra={"child": self.role, "restarts": self.restarts})
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        if now - self.started_at > 60:
            self.backoff = 1.0
        log.error(
            "role exited; restarting after backoff",
            extra={"child": self.role, "exit_code": self.proc.returncode, "backoff_seconds": self.backoff},
        )
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_SECONDS)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("role did not stop in time; killing it", extra={"child": self.role})
            self.proc.kill()
            self.proc.wait()


def serving(addr: str, credentials: grpc.ChannelCredentials | None = None) -> bool:
    """The server's health check says SERVING (over TLS when given `credentials`)."""
    with grpc.insecure_channel(addr) if credentials is None else grpc.secure_channel(addr, credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def grpcurl_flags(tls: TlsFiles | None) -> str:
    """How the banner's grpcurl commands reach the servers: -plaintext, or trusting the servers'
    certificate and, under mutual TLS, presenting the probe certificate."""
    if tls is None:
        return "-plaintext"
    flags = f"-cacert {shlex.quote(str(tls.cert))}"
    if tls.probe is not None:
        flags += f" -cert {shlex.quote(str(tls.probe[0]))} -key {shlex.quote(str(tls.probe[1]))}"
    return flags


def banner(stack: LocalStack) -> str:
    settings, database_url, nats_url = stack.settings, stack.database_url, stack.nats_url
    cmd, query = settings.command_addr, settings.query_addr
    grpcurl = f"grpcurl {grpcurl_flags(settings.tls)}"
    metrics = "\n".join(f"  metrics         http://{addr}/metrics  ({role}{f' {n + 1}' if n else ''})"
                         for role in stack.roles for n in range(stack.instances(role))
                         if (addr := stack.metrics_addr(role, n)))
    if stack.issuer is not None:
        auth = f"""Every call needs a bearer token; this one is for tenant default, with every scope
(`orders token --tenant T --scope orders.read` mints more with the same dev key):
  export ORDERS_TOKEN={stack.issuer.mint(DEFAULT_TENANT, subject="dev")}
"""
        header = ' -rpc-header "authorization: Bearer $ORDERS_TOKEN"'
    elif settings.auth:
        auth = f"Every call needs a bearer token from the issuer of {settings.jwks} (ORDERS_JWKS).\n"
        header = ' -rpc-header "authorization: Bearer $ORDERS_TOKEN"'
    else:
        auth = "AUTHENTICATION IS OFF (ORDERS_AUTH=off): anyone who reaches these ports is any tenant.\n"
        header = ""
    # What `orders outbox status` compares the stream with, when the cluster keeps more than one.
    replicas = f" ORDERS_STREAM_REPLICAS={settings.stream_replicas}" if settings.stream_replicas > 1 else ""
    roles = "" if stack.roles == ROLES else f"  roles           {', '.join(stack.roles)} (ORDERS_ROLES)\n"
    servers = f", {settings.command_servers} processes" if settings.command_servers > 1 else ""
    query_servers = f", {settings.query_servers} processes" if settings.query_servers > 1 else ""
    replica = (f"  PG replica      {public_address(stack.replica_url)}  (the query servers read here)\n"
               if stack.replica is not None else "")
    saga_note = ("   # CONFIRMED by the saga once it reserved the credit and stock" if "saga" in stack.roles
                 else "   # PLACED: no saga runs (ORDERS_ROLES), so a caller confirms it")
    return f"""
Orders is up.
{roles}  CommandService  {cmd}  ({transport_name(settings.tls)}{servers})
  QueryService    {query}  ({transport_name(settings.tls)}{query_servers})
  PostgreSQL      {public_address(database_url)}
{replica}  NATS JetStream  {public_address(nats_url)}  (events stream: {settings.stream_replicas} replica{'s' if settings.stream_replicas > 1 else ''})
{metrics}

{auth}
Operator commands (orders status, orders dlq list, ...) log in as the owner and the NATS admin:
  export DATABASE_URL='{database_url}' NATS_URL='{nats_url}'{replicas}

Try it (grpcurl ships with `make test`'s tools in .venv/bin):
  {grpcurl} {cmd} list
  {grpcurl} {cmd} grpc.health.v1.Health/Check
  {grpcurl}{header} -d '{{"request_id":"r-1","customer_id":"c-1","display_name":"Ada","email":"ada@example.com","credit_limit":{{"currency_code":"EUR","units":"100"}}}}' {cmd} orders.v1.CommandService/RegisterCustomer
  {grpcurl}{header} -d '{{"request_id":"r-5","product_id":"p-1","expected_version":"0","quantity":"10"}}' {cmd} orders.v1.CommandService/AddStock
  {grpcurl}{header} -d '{{"request_id":"r-2","order_id":"o-1","customer_id":"c-1","lines":[{{"product_id":"p-1","quantity":"2","unit_price":{{"currency_code":"EUR","units":"9","nanos":990000000}}}}]}}' {cmd} orders.v1.CommandService/PlaceOrder
  {grpcurl}{header} -d '{{"order_id":"o-1"}}' {query} orders.v1.QueryService/GetOrderSummary{saga_note}

Ctrl-C stops everything.
"""


class LocalStack:
    """Embedded services (unless configured), migrations and every role, as one context."""

    def __init__(self, settings: Settings, roles: tuple[str, ...] = ROLES) -> None:
        self.settings = settings
        self.roles = roles
        self.postgres: EmbeddedPostgres | None = None
        self.replica: EmbeddedReplica | None = None  # ORDERS_PG_REPLICA: the query servers read it
        self.role_logins: dict[str, str] = {}
        self.nats: EmbeddedNats | EmbeddedNatsCluster | None = None
        self.children: list[Child] = []
        self.database_url = settings.database_url or ""
        self.nats_url = settings.nats_url or ""
        self.env: dict[str, str] = {}
        # The dev token issuer, when authentication is on and no ORDERS_JWKS names another.
        self.issuer: DevIssuer | None = None
        self.probe: grpc.ChannelCredentials | None = None

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.database_url:
            log.info("starting embedded PostgreSQL", extra={"data_dir": str(self.settings.data_dir)})
            self.postgres = EmbeddedPostgres(self.settings.data_dir)
            self.database_url = self.postgres.start()
        if not self.nats_url:
            nodes = self.settings.nats_nodes
            log.info("starting embedded NATS with JetStream", extra={"nodes": nodes})
            self.nats = (EmbeddedNatsCluster(self.settings.data_dir, nodes, stream=self.settings.stream_name,
                                             partitions=self.settings.partitions)
                         if nodes > 1 else EmbeddedNats(self.settings.data_dir, stream=self.settings.stream_name,
                                                        partitions=self.settings.partitions))
            self.nats_url = self.nats.start()
        log.info("migrating")
        upgrade(self.database_url)
        self.env = dict(
            os.environ,
            DATABASE_URL=self.database_url,
            NATS_URL=self.nats_url,
            COMMAND_ADDR=self.settings.command_addr,
            QUERY_ADDR=self.settings.query_addr,
            # Each server of several on one port asks for SO_REUSEPORT, also when the count was
            # set here rather than in the environment (the bench).
            ORDERS_COMMAND_SERVERS=str(self.settings.command_servers),
            ORDERS_QUERY_SERVERS=str(self.settings.query_servers),
        )
        # One key for every child of this run: the query server accepts the command server's
        # consistency tokens, and watchers can resume on a restarted query-server.
        self.env["ORDERS_TOKEN_KEY"] = self.settings.token_key.decode()
        if self.settings.kek is None:  # a dev key-encryption key, kept with the data it protects
            self.env["ORDERS_KEK"] = dev_kek(self.settings.data_dir)
        if self.settings.auth and not self.settings.jwks:
            self.issuer = dev_issuer(self.settings)
            self.env.update(self.issuer.env())
            if "saga" in self.roles and not self.settings.saga_token_file:
                saga_token = self.issuer.service_token_file("orders-saga", SAGA_SCOPES)
                self.env["ORDERS_SAGA_TOKEN_FILE"] = str(saga_token)
        self.role_logins = logins = self.logins()
        if self.settings.pg_replica:
            self.start_replica(logins)
        self.children = [Child(role, dict(self.role_env(role, logins), **self.metrics_env(role, instance)))
                         for role in self.roles for instance in range(self.instances(role))]
        for child in self.children:
            child.start()

    def logins(self) -> dict[str, str]:
        """Each role's own PostgreSQL login, on the embedded server (with DATABASE_URL set, the
        operator's COMMAND_DATABASE_URL and the like apply, else DATABASE_URL)."""
        if self.postgres is None:
            return {}
        return database_logins(self.database_url, self.postgres.password, self.roles)

    def start_replica(self, logins: dict[str, str]) -> None:
        """A streaming replica of the embedded PostgreSQL, once the roles' logins exist (its
        base backup carries them), ready when the query server's login reads it."""
        if self.postgres is None:
            raise ConfigError(["ORDERS_PG_REPLICA=1 starts a replica of the embedded PostgreSQL, but DATABASE_URL "
                               "names another server: point QUERY_DATABASE_URL at its replica instead"])
        log.info("starting an embedded PostgreSQL replica")
        self.replica = EmbeddedReplica(self.settings.data_dir, self.postgres)
        self.replica.start()
        deadline = time.monotonic() + 60
        while not self.replica.replays(self.replica_url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the PostgreSQL replica does not serve reads; see {self.replica.log}")
            time.sleep(0.1)

    @property
    def replica_url(self) -> str:
        """The query server's login, on the replica."""
        assert self.replica is not None and self.postgres is not None
        login = self.role_logins.get("query-server", self.database_url)
        return login.replace(f"@127.0.0.1:{self.postgres.port}/", f"@127.0.0.1:{self.replica.port}/", 1)

    def role_env(self, role: str, logins: dict[str, str]) -> dict[str, str]:
        """The environment of one role: on embedded servers, its own logins and no other's."""
        env = dict(self.env)
        if role in logins:
            del env["DATABASE_URL"]
            env[ROLE_DATABASE_VARIABLES[role]] = logins[role]
        if role == "query-server" and self.replica is not None:
            env["QUERY_DATABASE_URL"] = self.replica_url
        if self.nats is not None:
            del env["NATS_URL"]
            if role != "command-server":  # it never talks to NATS
                env["NATS_URL"] = self.nats.url_for(role)
        return env

    def instances(self, role: str) -> int:
        """Processes of `role`: ORDERS_COMMAND_SERVERS command servers and ORDERS_QUERY_SERVERS query
        servers, each kind on one port, and ORDERS_PROJECTORS projectors sharing the partitions; one
        of any other."""
        return {"command-server": self.settings.command_servers, "query-server": self.settings.query_servers,
                "projector": self.settings.projectors}.get(role, 1)

    def metrics_addr(self, role: str, instance: int = 0) -> str | None:
        """Each role's Prometheus endpoint: ORDERS_METRICS_BASE_PORT + its place in ROLES; further
        command servers take the ports after the last role's, then further query servers, then
        further projectors."""
        base = self.settings.metrics_base_port
        if base <= 0 or role not in ROLES:
            return None
        if instance == 0:
            return f"127.0.0.1:{base + ROLES.index(role)}"
        before = sum(self.instances(r) - 1 for r in SCALED[:SCALED.index(role)])
        return f"127.0.0.1:{base + len(ROLES) + before + instance - 1}"

    def metrics_env(self, role: str, instance: int = 0) -> dict[str, str]:
        addr = self.metrics_addr(role, instance)
        return {"METRICS_ADDR": addr} if addr else {}

    def supervise(self) -> None:
        for child in self.children:
            child.check()

    def serving(self) -> bool:
        """Every server among the roles answers SERVING (a stack of other roles only: at once)."""
        if self.probe is None and self.settings.tls is not None:
            self.probe = probe_credentials(self.settings.tls)  # read once, as the servers read theirs
        servers = {"command-server": self.settings.command_addr, "query-server": self.settings.query_addr}
        return all(serving(addr, self.probe) for role, addr in servers.items() if role in self.roles)

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in self.children:
            child.wait(deadline)
        if self.nats is not None:
            self.nats.stop()
        if self.replica is not None:
            self.replica.stop()
        if self.postgres is not None:
            self.postgres.stop()


def up(settings: Settings) -> int:
    settings.require_probe_certificate()
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with LocalStack(settings, settings.up_roles) as stack:
        announced = False
        while not stopping:
            stack.supervise()
            if not announced and stack.serving():
                print(banner(stack), flush=True)
                announced = True
            time.sleep(0.2)
        log.info("stopping")
    log.info("stopped")
    return 0


# What the saga's service token grants: commands, for whichever tenant an order belongs to.
SAGA_SCOPES = (WRITE, ANY_TENANT)


def dev_issuer(settings: Settings) -> DevIssuer:
    """The dev signing key under ORDERS_DATA_DIR, made on first use (`orders up`, `orders token`)."""
    return DevIssuer(settings.data_dir / "auth")

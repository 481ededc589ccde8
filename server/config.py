"""Settings, read once from the environment: the only place that looks at os.environ."""

from __future__ import annotations

import logging
import os
import re
import secrets
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from server.platform import personal

# The processes `orders` runs; `orders up` starts each of them.
ROLES = ("command-server", "query-server", "relay", "projector", "saga")

# Each role's own PostgreSQL login, when set (docs/security.md, "Database roles").
ROLE_DATABASE_VARIABLES = {
    "command-server": "COMMAND_DATABASE_URL",
    "query-server": "QUERY_DATABASE_URL",
    "projector": "PROJECTOR_DATABASE_URL",
    "relay": "RELAY_DATABASE_URL",
    "saga": "SAGA_DATABASE_URL",
}

DATABASE_FORM = "a postgresql:// URL, e.g. postgresql://USER:PASSWORD@HOST:5432/DATABASE"
NATS_FORM = ("a nats:// URL, e.g. nats://HOST:4222 (tls://, ws:// and wss:// too), or several separated by commas "
             "(a cluster's servers)")
_DATABASE_SCHEMES = ("postgresql+psycopg", "postgresql", "postgres")
_NATS_SCHEMES = ("nats", "tls", "ws", "wss")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """Environment variables that are missing or malformed: one message per variable, all of them
    at once, so one edit fixes the lot."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class NatsAccess:
    """How to log in to NATS and check its certificate, beyond what NATS_URL says (it may carry
    user:password itself). Empty: anonymous, plain unless the URL is tls://."""

    creds: Path | None = None  # a .creds file (JWT and NKey seed)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS on both gRPC servers. They are read once, when a server starts: a renewed
    certificate takes effect on a restart."""

    cert: Path
    key: Path
    # Set: mutual TLS. Every client (health probes included) presents a certificate signed by it.
    client_ca: Path | None = None
    # The client certificate `orders up` presents to probe its servers under mutual TLS.
    probe_cert: Path | None = None
    probe_key: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    @property
    def probe(self) -> tuple[Path, Path] | None:
        return (self.probe_cert, self.probe_key) if self.probe_cert and self.probe_key else None


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    nats_url: str | None
    command_addr: str
    query_addr: str
    data_dir: Path
    log_level: str
    stream_name: str
    partitions: int
    max_request_bytes: int
    read_wait_seconds: float
    relay_poll_seconds: float
    # How long the active relay's session may run nothing before a standby ends it (a hung relay).
    relay_lease_seconds: float
    grace_seconds: float
    metrics_addr: str | None
    metrics_base_port: int
    stream_max_msgs: int
    stream_max_bytes: int
    relay_batch_size: int
    relay_publish_timeout: float
    relay_crash_after_publish: float
    # Signs page, resume and consistency tokens. Unset: a random key per process, so tokens do
    # not survive a restart nor work on another process (a command server's consistency tokens
    # on no query server); set it, the same on every command and query server, in production.
    token_key: bytes
    watch_heartbeat_seconds: float
    query_pool_size: int
    # Unary calls in progress per server process; beyond it, RESOURCE_EXHAUSTED (serving.Admission).
    max_calls_in_progress: int
    projector_max_gap_deliveries: int = 30
    projector_crash_before_commit: int = 0
    projector_crash_after_commit: int = 0
    projector_fault_aggregates: frozenset[str] = frozenset()
    # How long an operator command waits for PostgreSQL or NATS before it says which is unreachable.
    connect_timeout_seconds: float = 2.0
    # Bearer tokens (server.platform.auth): on unless ORDERS_AUTH=off; then the servers need a
    # JWKS, an issuer and an audience (require_auth).
    auth: bool = True
    jwks: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = 30.0
    reflection: bool = True
    # The bearer token operator tools send to the servers (`orders bench --running`).
    client_token: str | None = None
    # Each role's own PostgreSQL login (COMMAND_DATABASE_URL, ...); unset: DATABASE_URL.
    role_database_urls: Mapping[str, str] = field(default_factory=dict)
    nats_access: NatsAccess = NatsAccess()
    # Wraps each customer's data key (server.platform.personal): ORDERS_KEK, 32 bytes in base64.
    # The command server needs it (require_kek); `orders up` makes a dev one under the data folder.
    kek: bytes | None = None
    token_key_generated: bool = False  # no key was configured: token_key is this process's own
    # Open WatchOrders streams a query server takes per connection and per tenant (0: no limit).
    watch_max_per_connection: int = 100
    watch_max_per_tenant: int = 1000
    # None: plaintext gRPC (loopback and local experiments); set: TLS, or mutual TLS with client_ca.
    tls: TlsFiles | None = None
    # The roles `orders up` starts (ORDERS_ROLES), in ROLES order.
    up_roles: tuple[str, ...] = ROLES
    # The fulfilment saga: how long an order may take from placed to confirmed before the saga
    # compensates, and the file holding its service token (re-read when it changes).
    saga_deadline_seconds: float = 30.0
    saga_token_file: Path | None = None
    # Command-server processes `orders up` starts on COMMAND_ADDR (SO_REUSEPORT: the kernel spreads
    # connections over them); more than one lets the command path use more cores.
    command_servers: int = 1
    # Projector processes `orders up` starts; they share the event subjects' partitions.
    projectors: int = 1
    # How long a projector's session may run nothing before another projector ends it (a hung one).
    projector_lease_seconds: float = 10.0
    # Group commit (server.command.group_commit): groups in the database at a time when one
    # stalls, and how long a writer gathers the writes of commands still reading.
    group_commit_slots: int = 2
    group_commit_window_us: int = 500
    # Query-server processes `orders up` starts on QUERY_ADDR (SO_REUSEPORT, as command servers).
    query_servers: int = 1
    # `orders up` starts an embedded streaming replica of its PostgreSQL and points the query
    # servers at it (QUERY_DATABASE_URL); reads still wait for their consistency tokens.
    pg_replica: bool = False
    # The embedded NATS servers `orders up` starts (a cluster when more than one), and the servers
    # the events stream is kept on (JetStream replicas; 1 survives no server loss).
    nats_nodes: int = 1
    stream_replicas: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every variable checked; raises ConfigError naming each malformed one."""
        read = _Reader(os.environ if env is None else env)
        settings = cls(
            database_url=read.url("DATABASE_URL", _DATABASE_SCHEMES, DATABASE_FORM),
            nats_url=read.url("NATS_URL", _NATS_SCHEMES, NATS_FORM),
            command_addr=read.address("COMMAND_ADDR", "127.0.0.1:50051"),
            query_addr=read.address("QUERY_ADDR", "127.0.0.1:50052"),
            data_dir=Path(read.text("ORDERS_DATA_DIR", ".data")).absolute(),
            log_level=read.log_level("LOG_LEVEL", "INFO"),
            stream_name=read.stream_name("ORDERS_STREAM", "ORDERS_EVENTS"),
            partitions=read.integer("ORDERS_PARTITIONS", 16, minimum=1),
            max_request_bytes=read.integer("ORDERS_MAX_REQUEST_BYTES", 256 * 1024, minimum=1),
            read_wait_seconds=read.seconds("ORDERS_READ_WAIT_SECONDS", 5, zero=True),
            relay_poll_seconds=read.seconds("ORDERS_RELAY_POLL_SECONDS", 1),
            relay_lease_seconds=read.seconds("ORDERS_RELAY_LEASE_SECONDS", 10, maximum=3600),
            grace_seconds=read.seconds("ORDERS_GRACE_SECONDS", 5, zero=True),
            metrics_addr=read.address("METRICS_ADDR", "", example="127.0.0.1:9464") or None,
            metrics_base_port=read.integer("ORDERS_METRICS_BASE_PORT", 9464, minimum=0, maximum=65535),
            stream_max_msgs=read.limit("ORDERS_STREAM_MAX_MSGS"),
            stream_max_bytes=read.limit("ORDERS_STREAM_MAX_BYTES"),
            relay_batch_size=read.integer("ORDERS_RELAY_BATCH_SIZE", 500, minimum=1),
            relay_publish_timeout=read.seconds("ORDERS_RELAY_PUBLISH_TIMEOUT_SECONDS", 5),
            # Fault injection for the crash tests: the chance that the relay exits right after a
            # batch is in the stream and before it is marked published. Never set in production.
            relay_crash_after_publish=read.fraction("ORDERS_RELAY_CRASH_AFTER_PUBLISH"),
            # ORDERS_PAGE_TOKEN_KEY: its name before it signed consistency tokens too.
            token_key=(read.text("ORDERS_TOKEN_KEY", "") or read.text("ORDERS_PAGE_TOKEN_KEY", "")
                       or secrets.token_hex(32)).encode(),
            token_key_generated=not (read.text("ORDERS_TOKEN_KEY", "") or read.text("ORDERS_PAGE_TOKEN_KEY", "")),
            watch_heartbeat_seconds=read.seconds("ORDERS_WATCH_HEARTBEAT_SECONDS", 15),
            query_pool_size=read.integer("ORDERS_QUERY_POOL_SIZE", 10, minimum=1),
            max_calls_in_progress=read.integer("ORDERS_MAX_CALLS_IN_PROGRESS", 128, minimum=0),
            projector_max_gap_deliveries=read.integer("ORDERS_PROJECTOR_MAX_GAP_DELIVERIES", 30, minimum=1),
            projector_crash_before_commit=read.integer("ORDERS_PROJECTOR_CRASH_BEFORE_COMMIT", 0, minimum=0),
            projector_crash_after_commit=read.integer("ORDERS_PROJECTOR_CRASH_AFTER_COMMIT", 0, minimum=0),
            projector_fault_aggregates=frozenset(
                a for a in read.text("ORDERS_PROJECTOR_FAULT_AGGREGATES", "").split(",") if a
            ),
            connect_timeout_seconds=read.seconds("ORDERS_CONNECT_TIMEOUT_SECONDS", 2),
            auth=read.switch("ORDERS_AUTH", True),
            jwks=read.text("ORDERS_JWKS", "") or None,
            jwt_issuer=read.text("ORDERS_JWT_ISSUER", "") or None,
            jwt_audience=read.text("ORDERS_JWT_AUDIENCE", "") or None,
            jwt_leeway_seconds=read.seconds("ORDERS_JWT_LEEWAY_SECONDS", 30, zero=True, maximum=300),
            reflection=read.switch("ORDERS_REFLECTION", True),
            client_token=read.text("ORDERS_TOKEN", "") or None,
            role_database_urls={
                role: url for role, variable in ROLE_DATABASE_VARIABLES.items()
                if (url := read.url(variable, _DATABASE_SCHEMES, DATABASE_FORM))
            },
            nats_access=read.nats_access(),
            watch_max_per_connection=read.integer("ORDERS_WATCH_MAX_PER_CONNECTION", 100, minimum=0),
            watch_max_per_tenant=read.integer("ORDERS_WATCH_MAX_PER_TENANT", 1000, minimum=0),
            tls=read.tls(),
            up_roles=read.roles("ORDERS_ROLES"),
            kek=read.kek("ORDERS_KEK"),
            saga_deadline_seconds=read.seconds("ORDERS_SAGA_DEADLINE_SECONDS", 30, maximum=86400),
            command_servers=read.integer("ORDERS_COMMAND_SERVERS", 1, minimum=1, maximum=64),
            projectors=read.integer("ORDERS_PROJECTORS", 1, minimum=1, maximum=64),
            projector_lease_seconds=read.seconds("ORDERS_PROJECTOR_LEASE_SECONDS", 10, maximum=3600),
            group_commit_slots=read.integer("ORDERS_GROUP_COMMIT_SLOTS", 2, minimum=1, maximum=16),
            group_commit_window_us=read.integer("ORDERS_GROUP_COMMIT_WINDOW_US", 500, minimum=0, maximum=100_000),
            query_servers=read.integer("ORDERS_QUERY_SERVERS", 1, minimum=1, maximum=64),
            pg_replica=read.binary("ORDERS_PG_REPLICA"),
            saga_token_file=Path(read.text("ORDERS_SAGA_TOKEN_FILE", "")).absolute()
            if read.text("ORDERS_SAGA_TOKEN_FILE", "") else None,
            **read.nats_cluster(),
        )
        if read.problems:
            raise ConfigError(read.problems)
        return settings

    def require_probe_certificate(self) -> None:
        """`orders up` probes its servers: under mutual TLS it needs a client certificate to do so."""
        if self.tls is not None and self.tls.mutual and self.tls.probe is None:
            raise ConfigError(["ORDERS_TLS_CLIENT_CA is set, so the servers accept only clients with a certificate: "
                               "set ORDERS_TLS_PROBE_CERT and ORDERS_TLS_PROBE_KEY (PEM files) to one signed by "
                               "that CA, for `orders up`'s health probes"])

    def with_services(self, database_url: str, nats_url: str) -> Settings:
        return replace(self, database_url=database_url, nats_url=nats_url)

    def require_database_url(self) -> str:
        """The URL in the form psycopg's connect() takes, whatever scheme the operator wrote
        (`upgrade` turns it into SQLAlchemy's own)."""
        if not self.database_url:
            raise ConfigError([f"DATABASE_URL is not set; this command needs PostgreSQL: set it to {DATABASE_FORM}"])
        return libpq_url(self.database_url)

    def require_auth(self) -> tuple[str, str, str]:
        """The JWKS source, issuer and audience the servers verify tokens with."""
        missing = [f"{name} is not set; {why}" for name, value, why in (
            ("ORDERS_JWKS", self.jwks, "the servers verify bearer tokens against it: set it to a JWKS file path or "
                                       "an https:// URL (`orders up` makes a dev one)"),
            ("ORDERS_JWT_ISSUER", self.jwt_issuer, "set it to the `iss` your token issuer writes"),
            ("ORDERS_JWT_AUDIENCE", self.jwt_audience, "set it to the `aud` tokens for this service carry"),
        ) if not value]
        if missing:
            raise ConfigError([*missing, "(ORDERS_AUTH=off turns authentication off, for local experiments only)"])
        assert self.jwks and self.jwt_issuer and self.jwt_audience
        return self.jwks, self.jwt_issuer, self.jwt_audience
    def role_database_url(self, role: str) -> str:
        """The URL `role` (one of ROLES) logs in with: its own variable, else DATABASE_URL."""
        own = self.role_database_urls.get(role)
        if own:
            return libpq_url(own)
        if not self.database_url:
            raise ConfigError([f"neither {ROLE_DATABASE_VARIABLES[role]} nor DATABASE_URL is set; "
                               f"this command needs PostgreSQL: set one to {DATABASE_FORM}"])
        return libpq_url(self.database_url)

    def require_kek(self) -> bytes:
        if self.kek is None:
            raise ConfigError([f"ORDERS_KEK is not set; the command server seals customers' personal data with keys "
                               f"it wraps: set it to {personal.KEK_FORM} (`orders up` makes a dev one)"])
        return self.kek

    def require_nats_url(self) -> str:
        if not self.nats_url:
            raise ConfigError([f"NATS_URL is not set; this command needs NATS: set it to {NATS_FORM}"])
        return self.nats_url


TOKEN_KEY_WARNING = ("ORDERS_TOKEN_KEY is not set: this process signs and checks tokens with a key of its own, "
                     "so consistency, page and resume tokens work with no other process; set the same key on "
                     "every command and query server")


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ConfigError([f"DATABASE_URL has scheme {url.split(':', 1)[0]!r}; expected {DATABASE_FORM}"])


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg's own connect() accepts."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]


def public_address(url: str) -> str:
    """Where a URL points, without user, password or options: safe to print and log. Several
    URLs separated by commas (a NATS cluster's) come back each in that form."""
    if "," in url:
        return ",".join(public_address(part.strip()) for part in url.split(",") if part.strip())
    try:
        parts = urlsplit(url if "://" in url else "nats://" + url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Reader:
    """Reads variables, notes every problem instead of stopping at the first, and returns the
    default in place of a malformed value so the rest can still be checked. An empty value counts
    as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def _refuse(self, name: str, shown: str, problem: str, form: str) -> None:
        self.problems.append(f"{name}={shown}: {problem}; expected {form}")

    def text(self, name: str, default: str) -> str:
        return self.env.get(name) or default

    def kek(self, name: str) -> bytes | None:
        raw = self.env.get(name) or ""
        if not raw:
            return None
        try:
            return personal.parse_kek(raw)
        except personal.KekError as exc:
            self.problems.append(f"{name}=<hidden>: {exc}")  # a secret: never echoed
            return None

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        raw = self.env.get(name) or ""
        form = f"a whole number from {minimum}" + (f" to {maximum}" if maximum is not None else " up") + f", e.g. {default}"
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self._refuse(name, repr(raw), "not a whole number", form)
            return default
        if value < minimum or (maximum is not None and value > maximum):
            self._refuse(name, repr(raw), "out of range", form)
            return default
        return value

    def _number(self, name: str, default: float, form: str) -> float | None:
        raw = self.env.get(name) or ""
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self._refuse(name, repr(raw), "not a number", form)
            return None
        if value != value or value in (float("inf"), float("-inf")):
            self._refuse(name, repr(raw), "not a finite number", form)
            return None
        return value

    def seconds(self, name: str, default: float, *, zero: bool = False, maximum: float | None = None) -> float:
        form = (f"a number of seconds {'>= 0' if zero else '> 0'}" + (f" and <= {maximum:g}" if maximum else "")
                + f", e.g. {default:g}")
        value = self._number(name, default, form)
        if value is None:
            return default
        if value < 0 or (value == 0 and not zero) or (maximum is not None and value > maximum):
            problem = "negative" if value < 0 else "zero" if value == 0 else "too large"
            self._refuse(name, repr(self.env[name]), problem, form)
            return default
        return value

    def roles(self, name: str) -> tuple[str, ...]:
        """A comma-separated choice among ROLES (unset: all of them), in ROLES order."""
        raw = self.env.get(name) or ""
        if not raw:
            return ROLES
        chosen = [part.strip() for part in raw.split(",") if part.strip()]
        unknown = [role for role in chosen if role not in ROLES]
        form = f"a comma-separated list of roles among {', '.join(ROLES)}"
        if unknown or not chosen:
            self._refuse(name, repr(raw), f"{', '.join(map(repr, unknown)) or 'no role'} is not a role", form)
            return ROLES
        return tuple(role for role in ROLES if role in chosen)

    def switch(self, name: str, default: bool) -> bool:
        raw = (self.env.get(name) or "").lower()
        if not raw:
            return default
        if raw not in ("on", "off"):
            self._refuse(name, repr(self.env[name]), "not on or off", "on | off")
            return default
        return raw == "on"

    def binary(self, name: str) -> bool:
        """1 or 0 (unset: 0)."""
        raw = self.env.get(name) or ""
        if raw not in ("", "0", "1"):
            self._refuse(name, repr(raw), "not 0 or 1", "1 (on) or 0 (off)")
            return False
        return raw == "1"

    def fraction(self, name: str) -> float:
        form = "a probability from 0 to 1, e.g. 0.05 (0: never)"
        value = self._number(name, 0.0, form)
        if value is None:
            return 0.0
        if not 0 <= value <= 1:
            self._refuse(name, repr(self.env[name]), "out of range", form)
            return 0.0
        return value

    def limit(self, name: str) -> int:
        """-1 for no limit, or a positive count."""
        value = self.integer(name, -1, minimum=-1)
        if value == 0:
            self._refuse(name, "'0'", "zero", "-1 (no limit) or a whole number from 1 up")
            return -1
        return value

    def address(self, name: str, default: str, example: str = "") -> str:
        raw = self.env.get(name) or ""
        if not raw:
            return default
        example = example or default
        form = f"HOST:PORT, e.g. {example} or [::]:{example.rpartition(':')[2]}"
        host, colon, port = raw.rpartition(":")
        if not colon:
            self._refuse(name, repr(raw), "no port", form)
        elif not port.isdigit() or int(port) > 65535:
            self._refuse(name, repr(raw), f"port {port!r} is not a number from 0 to 65535", form)
        elif host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
            self._refuse(name, repr(raw), "an IPv6 host needs brackets", form)
        else:
            return raw
        return default

    def url(self, name: str, schemes: tuple[str, ...], form: str) -> str | None:
        raw = self.env.get(name) or ""
        if not raw:
            return None
        if name == "NATS_URL" and "," in raw:  # a cluster's servers: each a URL of its own
            parts = [part.strip() for part in raw.split(",")]
            if not all(parts):
                self._refuse(name, repr(public_address(raw)), "an empty server between commas", form)
                return None
            checked = [self._one_url(name, part, schemes, form) for part in parts]
            return raw if all(checked) else None
        return self._one_url(name, raw, schemes, form)

    def _one_url(self, name: str, raw: str, schemes: tuple[str, ...], form: str) -> str | None:
        shown = repr(public_address(raw))  # a URL may carry a password: never echo it whole
        bare = "://" not in raw
        if bare and name == "NATS_URL":  # nats-py takes HOST:PORT and adds nats://
            raw_checked = "nats://" + raw
        elif bare:
            self._refuse(name, "(not a URL)", "no scheme", form)
            return None
        else:
            raw_checked = raw
        try:
            parts = urlsplit(raw_checked)
            parts.port  # noqa: B018  (parsing the port is the check)
        except ValueError as exc:
            self._refuse(name, shown, f"unparsable ({exc})", form)
            return None
        if parts.scheme not in schemes:
            self._refuse(name, shown, f"scheme {parts.scheme!r} is not one of {', '.join(schemes)}", form)
            return None
        if name == "NATS_URL" and not parts.hostname:
            self._refuse(name, shown, "no host", form)
            return None
        return raw

    def file(self, name: str, what: str) -> Path | None:
        raw = self.env.get(name) or ""
        if not raw:
            return None
        path = Path(raw)
        if not path.is_file():
            self._refuse(name, repr(raw), "no such file", f"the path of {what}")
            return None
        return path

    def nats_access(self) -> NatsAccess:
        access = NatsAccess(
            creds=self.file("NATS_CREDS", "a NATS .creds file"),
            user=self.text("NATS_USER", "") or None,
            password=self.text("NATS_PASSWORD", "") or None,
            tls_ca=self.file("NATS_TLS_CA", "the PEM certificates that sign the NATS server's"),
            tls_cert=self.file("NATS_TLS_CERT", "this client's PEM certificate"),
            tls_key=self.file("NATS_TLS_KEY", "this client's PEM private key"),
        )
        if access.password and not access.user:
            self._refuse("NATS_PASSWORD", "(hidden)", "set without NATS_USER", "both NATS_USER and NATS_PASSWORD")
        if (self.env.get("NATS_CREDS") or "") and access.user:
            self._refuse("NATS_USER", repr(access.user), "set beside NATS_CREDS",
                         "one way to log in: NATS_CREDS, or NATS_USER and NATS_PASSWORD")
        if bool(self.env.get("NATS_TLS_CERT")) != bool(self.env.get("NATS_TLS_KEY")):
            missing = "NATS_TLS_KEY" if self.env.get("NATS_TLS_CERT") else "NATS_TLS_CERT"
            self._refuse(missing, "''", "unset while its pair is set", "a client certificate and its key, both")
        return access

    def log_level(self, name: str, default: str) -> str:
        raw = (self.env.get(name) or default).upper()
        if raw not in _LOG_LEVELS and raw not in logging.getLevelNamesMapping():
            self._refuse(name, repr(self.env[name]), "not a log level", " | ".join(_LOG_LEVELS))
            return default
        return raw

    def pem(self, name: str, marker: str) -> Path | None:
        """A PEM file that exists, can be read and holds a `-----BEGIN <marker>` block. The path
        is shown in a refusal; the contents never are."""
        raw = self.env.get(name) or ""
        if not raw:
            return None
        form = f"the path of a readable PEM file holding a {marker.lower()}"
        try:
            text = Path(raw).read_text(errors="replace")
        except OSError as exc:
            self._refuse(name, repr(raw), exc.strerror or type(exc).__name__, form)
            return None
        if "ENCRYPTED" in text and "PRIVATE KEY" in marker:
            self._refuse(name, repr(raw), "the key is encrypted; gRPC needs it unencrypted", form)
            return None
        if not re.search(rf"-----BEGIN [A-Z ]*{marker}-----", text):
            self._refuse(name, repr(raw), f"no {marker} block in it", form)
            return None
        return Path(raw).absolute()

    def pem_pair(self, cert_name: str, key_name: str) -> tuple[Path, Path] | None:
        """A certificate (chain) and its private key, both or neither, and the key the
        certificate's."""
        cert, key = self.pem(cert_name, "CERTIFICATE"), self.pem(key_name, "PRIVATE KEY")
        given = [name for name in (cert_name, key_name) if self.env.get(name)]
        if len(given) == 1:
            missing = key_name if given == [cert_name] else cert_name
            self._refuse(missing, "''", f"unset while {given[0]} is set", f"both {cert_name} and {key_name}, or neither")
            return None
        if cert is None or key is None:
            return None
        try:
            # An empty password: a key that wants one fails here rather than prompt at a terminal.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
        except ssl.SSLError as exc:
            problem = "not the private key of that certificate" if exc.reason == "KEY_VALUES_MISMATCH" else str(exc)
            self._refuse(key_name, repr(self.env[key_name]), problem, f"the private key of {cert_name}")
            return None
        return cert, key

    def tls(self) -> TlsFiles | None:
        """TLS on the gRPC servers when ORDERS_TLS_CERT and ORDERS_TLS_KEY are set; mutual TLS
        when ORDERS_TLS_CLIENT_CA is set too."""
        server = self.pem_pair("ORDERS_TLS_CERT", "ORDERS_TLS_KEY")
        client_ca = self.pem("ORDERS_TLS_CLIENT_CA", "CERTIFICATE")
        probe = self.pem_pair("ORDERS_TLS_PROBE_CERT", "ORDERS_TLS_PROBE_KEY")
        if client_ca is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=client_ca)
            except ssl.SSLError as exc:
                self._refuse("ORDERS_TLS_CLIENT_CA", repr(self.env["ORDERS_TLS_CLIENT_CA"]), str(exc),
                             "a PEM file of CA certificates")
                client_ca = None
        if server is None:
            for name in ("ORDERS_TLS_CLIENT_CA", "ORDERS_TLS_PROBE_CERT"):
                if self.env.get(name) and not self.env.get("ORDERS_TLS_CERT"):
                    self._refuse(name, repr(self.env[name]), "set while ORDERS_TLS_CERT is not",
                                 "it only with ORDERS_TLS_CERT and ORDERS_TLS_KEY set too (TLS on the servers)")
            return None
        return TlsFiles(*server, client_ca=client_ca, probe_cert=probe[0] if probe else None,
                        probe_key=probe[1] if probe else None)

    def nats_cluster(self) -> dict[str, int]:
        """ORDERS_NATS_NODES and ORDERS_STREAM_REPLICAS (unset: as many as the nodes). The embedded
        cluster cannot keep more replicas than it has servers; an external one is the operator's."""
        nodes = self.integer("ORDERS_NATS_NODES", 1, minimum=1, maximum=5)
        replicas = self.integer("ORDERS_STREAM_REPLICAS", nodes, minimum=1, maximum=5)
        if replicas > nodes and not self.env.get("NATS_URL"):
            self._refuse("ORDERS_STREAM_REPLICAS", repr(self.env["ORDERS_STREAM_REPLICAS"]),
                         f"more replicas than the {nodes} embedded NATS server{'s' if nodes > 1 else ''} "
                         f"(ORDERS_NATS_NODES)", f"a number from 1 to {nodes}, or ORDERS_NATS_NODES raised")
            replicas = nodes
        return {"nats_nodes": nodes, "stream_replicas": replicas}

    def stream_name(self, name: str, default: str) -> str:
        raw = self.env.get(name) or default
        if any(c.isspace() or c in ".*>/\\" for c in raw):
            self._refuse(name, repr(raw), "JetStream stream names cannot hold spaces, '.', '*', '>', '/' or '\\'",
                         "a name such as ORDERS_EVENTS")
            return default
        return raw

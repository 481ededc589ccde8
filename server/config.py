"""Settings, read once from the environment: the only place that looks at os.environ."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

# The processes `orders` runs; `orders up` starts each of them.
ROLES = ("command-server", "query-server", "relay", "projector")


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
    grace_seconds: float
    metrics_addr: str | None
    metrics_base_port: int
    stream_max_msgs: int
    stream_max_bytes: int
    relay_batch_size: int
    relay_publish_timeout: float
    relay_crash_after_publish: float
    # Signs page and resume tokens. Unset: a random key per process, so tokens do not survive a
    # restart nor work on another replica; set it (same value on every replica) in production.
    page_token_key: bytes
    watch_heartbeat_seconds: float
    query_pool_size: int
    # Unary calls in progress per server process; beyond it, RESOURCE_EXHAUSTED (serving.Admission).
    max_calls_in_progress: int
    projector_max_gap_deliveries: int = 30
    projector_crash_before_commit: int = 0
    projector_crash_after_commit: int = 0
    projector_fault_aggregates: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            nats_url=env.get("NATS_URL") or None,
            command_addr=env.get("COMMAND_ADDR", "127.0.0.1:50051"),
            query_addr=env.get("QUERY_ADDR", "127.0.0.1:50052"),
            data_dir=Path(env.get("ORDERS_DATA_DIR", ".data")).absolute(),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            stream_name=env.get("ORDERS_STREAM", "ORDERS_EVENTS"),
            partitions=int(env.get("ORDERS_PARTITIONS", "16")),
            max_request_bytes=int(env.get("ORDERS_MAX_REQUEST_BYTES", str(256 * 1024))),
            read_wait_seconds=float(env.get("ORDERS_READ_WAIT_SECONDS", "5")),
            relay_poll_seconds=float(env.get("ORDERS_RELAY_POLL_SECONDS", "1")),
            grace_seconds=float(env.get("ORDERS_GRACE_SECONDS", "5")),
            metrics_addr=env.get("METRICS_ADDR") or None,
            metrics_base_port=int(env.get("ORDERS_METRICS_BASE_PORT", "9464")),
            stream_max_msgs=int(env.get("ORDERS_STREAM_MAX_MSGS", "-1")),
            stream_max_bytes=int(env.get("ORDERS_STREAM_MAX_BYTES", "-1")),
            relay_batch_size=int(env.get("ORDERS_RELAY_BATCH_SIZE", "500")),
            relay_publish_timeout=float(env.get("ORDERS_RELAY_PUBLISH_TIMEOUT_SECONDS", "5")),
            # Fault injection for the crash tests: the chance that the relay exits right after a
            # batch is in the stream and before it is marked published. Never set in production.
            relay_crash_after_publish=float(env.get("ORDERS_RELAY_CRASH_AFTER_PUBLISH", "0")),
            page_token_key=(env.get("ORDERS_PAGE_TOKEN_KEY") or secrets.token_hex(32)).encode(),
            watch_heartbeat_seconds=float(env.get("ORDERS_WATCH_HEARTBEAT_SECONDS", "15")),
            query_pool_size=int(env.get("ORDERS_QUERY_POOL_SIZE", "10")),
            max_calls_in_progress=int(env.get("ORDERS_MAX_CALLS_IN_PROGRESS", "128")),
            projector_max_gap_deliveries=int(env.get("ORDERS_PROJECTOR_MAX_GAP_DELIVERIES", "30")),
            projector_crash_before_commit=int(env.get("ORDERS_PROJECTOR_CRASH_BEFORE_COMMIT", "0")),
            projector_crash_after_commit=int(env.get("ORDERS_PROJECTOR_CRASH_AFTER_COMMIT", "0")),
            projector_fault_aggregates=frozenset(
                a for a in env.get("ORDERS_PROJECTOR_FAULT_AGGREGATES", "").split(",") if a
            ),
        )

    def with_services(self, database_url: str, nats_url: str) -> Settings:
        return replace(self, database_url=database_url, nats_url=nats_url)

    def require_database_url(self) -> str:
        """The URL in the form psycopg's connect() takes, whatever scheme the operator wrote
        (`upgrade` turns it into SQLAlchemy's own)."""
        if not self.database_url:
            raise SystemExit("DATABASE_URL is not set (orders up sets it for its children)")
        return libpq_url(self.database_url)

    def require_nats_url(self) -> str:
        if not self.nats_url:
            raise SystemExit("NATS_URL is not set (orders up sets it for its children)")
        return self.nats_url


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise SystemExit(f"DATABASE_URL must be a postgresql:// URL, got scheme {url.split(':', 1)[0]!r}")


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg's own connect() accepts."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]

"""How the client's channels are made: TLS or plaintext, and gRPC's own retry policy (a service
config) that repeats a call answered UNAVAILABLE, with backoff, inside the call's deadline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

SERVICES = ("orders.v1.CommandService", "orders.v1.QueryService")


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retryPolicy (https://grpc.io/docs/guides/retry): up to `max_attempts` tries in all
    (gRPC caps it at 5), waiting a random time up to initial_backoff * multiplier^n, at most
    `max_backoff`, between them. Only UNAVAILABLE is retried: nothing was done (or a command's
    request_id makes its repeat a replay), and the deadline of the call still bounds every try."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    backoff_multiplier: float = 2.0

    def service_config(self) -> str:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be between 2 and 5 (gRPC's limit)")
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff}s",
            "maxBackoff": f"{self.max_backoff}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        return json.dumps({"methodConfig": [{"name": [{"service": s} for s in SERVICES], "retryPolicy": policy}]})


def channel_options(retry: RetryPolicy | None, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The options of both channels. A server that went away is dialled again within a second or
    two once it is back, rather than after gRPC's default reconnect backoff (up to two minutes)."""
    options: list[tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        # A dead peer is noticed on an idle stream too (the servers allow a ping every 10 s).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    if retry is None:
        options.append(("grpc.enable_retries", 0))
    else:
        options += [("grpc.enable_retries", 1), ("grpc.service_config", retry.service_config())]
    return options + list(extra)


@dataclass(frozen=True)
class Tls:
    """TLS to the servers. `root_certificates` (PEM): the CAs trusted to have signed the servers'
    certificates (None: the system's). `certificate_chain` and `private_key` (PEM): the client
    certificate servers with mutual TLS require."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs both certificate_chain and private_key")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


def open_channel(addr: str, tls: Tls | None, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(addr, options=options)
    return grpc.aio.secure_channel(addr, tls.credentials(), options=options)

"""NATS JetStream plumbing shared by the relay and the projector: connection, stream, subjects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from server.config import NatsAccess

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "orders.events"
# View-changed notices (core NATS): orders.views.<tenant_id>, from the projector to query servers.
NOTICE_PREFIX = "orders.views"
# The subjects' shapes, low in cardinality where the subjects are not (span attributes).
EVENT_SUBJECT_TEMPLATE = SUBJECT_PREFIX + ".{tenant_id}.{aggregate_type}.{partition}.{aggregate_id}"
NOTICE_SUBJECT_TEMPLATE = NOTICE_PREFIX + ".{tenant_id}"
MAX_EVENT_BYTES = 1024 * 1024
DUPLICATE_WINDOW_SECONDS = 120.0
NatsError = nats.errors.Error  # every nats-py error, JetStream's included
# The most messages the server takes in one atomic batch: its default jetstream limit
# max_batch_size. A larger batch is refused whole (err_code 10199).
ATOMIC_BATCH_MAX = 1000
# A batch holding a Nats-Msg-Id the stream already has, or holding one twice, is refused whole.
BATCH_DUPLICATE_ERR_CODE = 10201


def partition_of(aggregate_id: str, partitions: int) -> int:
    """A stable partition: the same aggregate id maps to the same number on every machine."""
    return zlib.crc32(aggregate_id.encode()) % partitions


def subject_for(tenant_id: str, aggregate_type: str, aggregate_id: str, partitions: int) -> str:
    """orders.events.<tenant>.<type>.<partition>.<id>: the tenant leads, so a message that cannot
    be read is still known to be that tenant's (and NATS permissions can be given per tenant)."""
    return f"{SUBJECT_PREFIX}.{tenant_id}.{aggregate_type}.{partition_of(aggregate_id, partitions)}.{aggregate_id}"


def access_options(access: NatsAccess) -> dict[str, Any]:
    """nats-py's connect() options for the credentials and TLS settings: the one place they are
    turned into a login, for the daemons and the operator commands alike."""
    options: dict[str, Any] = {}
    if access.creds is not None:
        options["user_credentials"] = str(access.creds)
    if access.user:
        options.update(user=access.user, password=access.password or "")
    if access.tls_ca or access.tls_cert:
        context = ssl.create_default_context(cafile=str(access.tls_ca) if access.tls_ca else None)
        if access.tls_cert and access.tls_key:
            context.load_cert_chain(str(access.tls_cert), str(access.tls_key))
        options["tls"] = context
    return options


def servers(url: str) -> list[str]:
    """The servers NATS_URL names: one URL, or several separated by commas (a cluster's nodes)."""
    return [part.strip() for part in url.split(",") if part.strip()]


def server_options(url: str, access: NatsAccess) -> dict[str, Any]:
    """nats-py's connect() options for NATS_URL: its servers as a list, and the login. A login
    written in the URLs is passed on its own too, and taken off them: the servers a cluster
    announces (and nats-py adds to its list) carry no login, and would refuse a reconnect."""
    options = access_options(access)
    urls = servers(url)
    parts = [urlsplit(u if "://" in u else "nats://" + u) for u in urls]
    logins = {(p.username, p.password) for p in parts}
    if len(logins) == 1 and None not in next(iter(logins)) and "user" not in options and "user_credentials" not in options:
        user, password = next(iter(logins))
        options.update(user=unquote(str(user)), password=unquote(str(password)))
        urls = [urlunsplit(p._replace(netloc=p.netloc.rpartition("@")[2])) for p in parts]
    options["servers"] = urls
    return options


async def connect(url: str, name: str, access: NatsAccess = NatsAccess()) -> Client:
    """A connection that never gives up: a daemon outlives any NATS outage, including one that
    is already going on when it starts, and moves to another of a cluster's servers when its own
    goes away."""

    async def disconnected() -> None:
        log.warning("nats disconnected")

    async def reconnected() -> None:
        log.info("nats reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": repr(exc)})

    delay = 0.1
    while True:
        try:
            return await nats.connect(
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                **server_options(url, access),
            )
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            log.warning("nats unreachable; retrying", extra={"error": repr(exc), "retry_in": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def stream_config(name: str, max_msgs: int, max_bytes: int, replicas: int = 1) -> api.StreamConfig:
    """The stream as this code wants it: on disk, refusing (never dropping) messages when full,
    taking atomic batches (publish_atomic), on `replicas` servers of a cluster."""
    return api.StreamConfig(
        name=name,
        max_msgs=max_msgs,
        max_bytes=max_bytes,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.NEW,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        max_msg_size=MAX_EVENT_BYTES,
        allow_atomic=True,
        num_replicas=replicas,
    )


# The settings the delivery guarantees rest on, compared between the wanted and the actual stream.
CHECKED_FIELDS = ("subjects", "storage", "retention", "discard", "duplicate_window", "max_msg_size", "allow_atomic",
                  "num_replicas", "max_msgs", "max_bytes")


def _normal(field: str, value: Any) -> Any:
    """A value as the server reports it: unset booleans are false, unset counts 1 or -1."""
    if field == "subjects":
        return sorted(value or [])
    if field == "allow_atomic":
        return bool(value)
    if field == "num_replicas":
        return value or 1
    if field in ("max_msgs", "max_bytes", "max_msg_size") and value in (None, 0):
        return -1
    return value.value if hasattr(value, "value") else value


def stream_differences(wanted: api.StreamConfig, actual: api.StreamConfig) -> list[str]:
    """One line per checked setting in which the stream differs from what this code wants."""
    differences = []
    for field in CHECKED_FIELDS:
        want, have = _normal(field, getattr(wanted, field)), _normal(field, getattr(actual, field))
        if want != have:
            differences.append(f"{field}: wanted {want}, the stream has {have}")
    return differences


async def ensure_stream(js: JetStreamContext, name: str, max_msgs: int, max_bytes: int,
                        replicas: int = 1) -> api.StreamInfo:
    """Creates the events stream when missing. An existing stream is the operator's: it is never
    changed, but each setting in which it differs from this code's is logged as a warning
    (`orders outbox status` lists them too)."""
    config = stream_config(name, max_msgs, max_bytes, replicas)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return await js.add_stream(config)
    for difference in stream_differences(config, info.config):
        log.warning("stream differs from the configuration; left as it is",
                    extra={"stream": name, "difference": difference})
    return info


async def publish_atomic(nc: Client, messages: Sequence[tuple[str, bytes, dict[str, str]]],
                         timeout: float) -> api.PubAck:
    """Publishes `messages` as one JetStream atomic batch (ADR-50, nats-server >= 2.12, a stream
    with allow_atomic): the stream stores all of them, next to each other and in this order, or
    none. One PubAck answers for the lot (its `seq` is the last message's, `batch_size` how many);
    a refusal raises APIError, e.g. a full stream (discard: new) or a Nats-Msg-Id the stream has.

    nats-py 2.16 has no API for it, so the headers are set here (on the given dicts) and only the
    commit asks for a reply: the server's empty acks of the staged messages would only be a
    round trip each. A message it could not stage shows up as the commit's error."""
    if not 0 < len(messages) <= ATOMIC_BATCH_MAX:
        raise ValueError(f"an atomic batch holds 1 to {ATOMIC_BATCH_MAX} messages, not {len(messages)}")
    batch_id = uuid.uuid4().hex
    for sequence, (subject, payload, headers) in enumerate(messages, 1):
        headers[api.Header.BATCH_ID] = batch_id
        headers[api.Header.BATCH_SEQUENCE] = str(sequence)
        if sequence < len(messages):
            await nc.publish(subject, payload, headers=headers)
    headers[api.Header.BATCH_COMMIT] = "1"
    reply = await nc.request(subject, payload, headers=headers, timeout=timeout)
    response = json.loads(reply.data)
    if "error" in response:
        raise APIError.from_error(response["error"])
    return api.PubAck.from_response(response)


async def next_batch(sub: JetStreamContext.PullSubscription, limit: int) -> list[Msg]:
    """The next batch: as soon as one message is there, plus whatever else is pending.

    A single fetch of `limit` holds its first message until the batch is full or the fetch
    expires (the server treats a pull with `expires` as lingering even with `no_wait`): a second's
    delay for every event at moderate load. So: linger for one message only, then pull exactly
    what the stream says is pending behind it, which arrives without waiting.
    """
    first = await sub.fetch(batch=1, timeout=1)
    try:
        pending = int(first[-1].metadata.num_pending) if first else 0
    except (AttributeError, ValueError, TypeError):  # a status reply (e.g. paused), not a message
        return first
    if pending <= 0:
        return first
    try:
        return first + await sub.fetch(batch=min(pending, limit - 1), timeout=1)
    except TimeoutError:  # another consumer took them: this one is enough
        return first


async def keep_consuming(consume: Callable[[], Awaitable[None]], durable: str, stop: asyncio.Event,
                         unavailable: tuple[type[BaseException], ...]) -> None:
    """Runs a consumer's loop until `stop`, starting it again a second after it ends: when NATS or
    the database is away (`unavailable`: a warning), and on a bug too (logged with its traceback),
    since a role outlives both and whatever it had not acked comes back to it."""
    while not stop.is_set():
        try:
            log.info("consuming", extra={"durable": durable})
            await consume()
        except unavailable as exc:
            log.warning("cannot consume yet, retrying", extra={"durable": durable, "error": repr(exc)})
        except Exception:
            log.exception("consumer loop failed, restarting it", extra={"durable": durable})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1)


async def close(nc: Client) -> None:
    """Drains when the server is there to drain to; closes in any case."""
    try:
        await nc.drain()
    except (NatsError, TimeoutError):
        await nc.close()


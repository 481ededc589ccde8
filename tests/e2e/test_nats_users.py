"""NATS users per role on the embedded server: nobody gets in anonymously, only the relay
publishes events, and a forged event no longer reaches a read model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from server.devstack.embedded import NATS_ADMIN, EmbeddedNats, nats_user_url
from server.platform import messaging
from tests.e2e.client import commands, new_id, place_request, register
from tests.e2e.streams import STREAM, envelope, stream_messages
from tests.harness import Stack, scalar, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """An embedded server of this module's own, with the events stream in it."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()

    async def create() -> None:
        nc = await nats.connect(server.url)
        await messaging.ensure_stream(nc.jetstream(), STREAM, max_msgs=-1, max_bytes=-1)
        await nc.close()

    asyncio.run(create())
    yield server
    server.stop()


async def _publish_as(url: str, subject: str, data: bytes) -> list[str]:
    """Publishes once as the URL's user; returns the errors the server sent back."""
    errors: list[str] = []

    async def failed(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, error_cb=failed, allow_reconnect=False)
    try:
        await nc.publish(subject, data, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await nc.flush()
        # The violation comes back as an -ERR after the flush's PONG may have: wait for it.
        for _ in range(40):
            if errors:
                break
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    return errors


def publish_as(url: str, subject: str, data: bytes) -> list[str]:
    return asyncio.run(_publish_as(url, subject, data))


def test_an_anonymous_connection_is_refused(own_nats: EmbeddedNats) -> None:
    async def connect() -> None:
        await nats.connect(own_nats.anonymous_url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(connect())


def test_a_wrong_password_is_refused(own_nats: EmbeddedNats) -> None:
    async def connect() -> None:
        url = own_nats.url.replace(own_nats.admin_password, "0" * 32)
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(connect())


@pytest.mark.parametrize("process", ["projector", "query-server"])
def test_only_the_relay_may_publish_events(own_nats: EmbeddedNats, process: str) -> None:
    subject = messaging.subject_for("default", "order", new_id("o-forged"), 16)
    before = stream_messages(own_nats.url)

    errors = publish_as(own_nats.url_for(process), subject, envelope("o-forged", 1).SerializeToString())

    assert errors == [f'nats: permissions violation for publish to "{subject}"']
    assert stream_messages(own_nats.url) == before
    # The control: the relay's user publishes the same and the stream grows by one.
    assert publish_as(own_nats.url_for("relay"), subject, envelope("o-relayed", 1).SerializeToString()) == []
    wait_until(lambda: stream_messages(own_nats.url) == before + 1, what="the relay's event in the stream")


def test_the_query_servers_may_only_listen_to_view_notices(own_nats: EmbeddedNats) -> None:
    async def subscribe(subject: str) -> list[str]:
        errors: list[str] = []

        async def failed(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(own_nats.url_for("query-server"), error_cb=failed, allow_reconnect=False)
        await nc.subscribe(subject)
        await nc.flush()
        for _ in range(20):
            if errors:
                break
            await asyncio.sleep(0.05)
        await nc.close()
        return errors

    assert asyncio.run(subscribe(f"{messaging.NOTICE_PREFIX}.>")) == []
    assert asyncio.run(subscribe(f"{messaging.SUBJECT_PREFIX}.>")) == [
        f'nats: permissions violation for subscription to "{messaging.SUBJECT_PREFIX}.>"']
    assert publish_as(own_nats.url_for("query-server"), f"{messaging.NOTICE_PREFIX}.default", b"{}") == [
        f'nats: permissions violation for publish to "{messaging.NOTICE_PREFIX}.default"']


def test_each_role_user_is_derived_from_the_admin_url_and_nothing_else_is(own_nats: EmbeddedNats) -> None:
    relay = own_nats.url_for("relay")

    assert relay.startswith("nats://orders-relay:") and own_nats.admin_password not in relay
    assert nats_user_url(relay, "orders-projector") == relay  # only the admin's URL yields others
    assert nats_user_url("nats://127.0.0.1:4222", "orders-relay") == "nats://127.0.0.1:4222"
    assert own_nats.url.startswith(f"nats://{NATS_ADMIN}:")
    assert (Path(own_nats.dir).parent / "nats.password").stat().st_mode & 0o077 == 0
    assert (own_nats.dir / "nats.conf").stat().st_mode & 0o077 == 0


def test_a_forged_event_no_longer_reaches_a_read_model(stack: Stack, db: psycopg.Connection[object]) -> None:
    if nats_user_url(stack.nats_url, "orders-projector") == stack.nats_url:
        pytest.skip("NATS_URL is not the embedded server's admin: its users are not ours to know")
    forged = new_id("o-forged")
    subject = messaging.subject_for("default", "order", forged, 16)
    data = envelope(forged, 1).SerializeToString()
    for user in ("orders-projector", "orders-query"):
        assert publish_as(nats_user_url(stack.nats_url, user), subject, data) == [
            f'nats: permissions violation for publish to "{subject}"']

    # A real order placed after the forgery reaches the read model; the forged one never does.
    _, cmd = commands(stack.command_addr)
    customer = new_id("c")
    register(cmd, customer)
    real = cmd.PlaceOrder(place_request(new_id("o"), customer), timeout=10).order_id
    wait_until(lambda: scalar(db, "SELECT count(*) FROM order_summaries WHERE order_id = %s", real) == 1,
               what="the real order in the read model")
    assert scalar(db, "SELECT count(*) FROM order_summaries WHERE order_id = %s", forged) == 0
    assert scalar(db, "SELECT count(*) FROM dead_letters WHERE aggregate_id = %s", forged) == 0

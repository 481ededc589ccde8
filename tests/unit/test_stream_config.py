"""The events stream's configuration: what differs from the wanted one, how an existing stream
and its replicas are reported, and how NATS_URL's servers and login become connect options."""

from __future__ import annotations

import dataclasses

from nats.js import api

from server.config import NatsAccess
from server.platform.messaging import server_options, stream_config, stream_differences
from server.relay.outbox import status_text, stream_figures


def as_reported(config: api.StreamConfig) -> api.StreamConfig:
    """The config as the server sends it back: through its JSON form, with the server's defaults."""
    reported: api.StreamConfig = api.StreamConfig.from_response(config.as_dict())
    return reported


def test_a_stream_as_wanted_differs_in_nothing() -> None:
    wanted = stream_config("ORDERS_EVENTS", max_msgs=-1, max_bytes=-1, replicas=3)

    assert stream_differences(wanted, as_reported(wanted)) == []


def test_each_differing_setting_is_named_with_both_values() -> None:
    wanted = stream_config("ORDERS_EVENTS", max_msgs=-1, max_bytes=-1, replicas=3)
    actual = dataclasses.replace(as_reported(wanted), num_replicas=1, discard=api.DiscardPolicy.OLD,
                                 duplicate_window=60.0, max_msgs=30, allow_atomic=None,
                                 subjects=["orders.events.>", "other.>"])

    assert stream_differences(wanted, actual) == [
        "subjects: wanted ['orders.events.>'], the stream has ['orders.events.>', 'other.>']",
        "discard: wanted new, the stream has old",
        "duplicate_window: wanted 120.0, the stream has 60.0",
        "allow_atomic: wanted True, the stream has False",
        "num_replicas: wanted 3, the stream has 1",
        "max_msgs: wanted -1, the stream has 30",
    ]


def test_an_r1_stream_is_what_one_replica_wants() -> None:
    wanted = stream_config("ORDERS_EVENTS", max_msgs=-1, max_bytes=-1)
    actual = dataclasses.replace(as_reported(wanted), num_replicas=None)  # as an older server leaves it

    assert stream_differences(wanted, actual) == []


def info(peers: list[api.PeerInfo], replicas: int = 3) -> api.StreamInfo:
    config = as_reported(stream_config("ORDERS_EVENTS", max_msgs=-1, max_bytes=-1, replicas=replicas))
    return api.StreamInfo(config=config, state=api.StreamState(messages=0, bytes=0, first_seq=0, last_seq=0,
                                                               consumer_count=0),
                          cluster=api.ClusterInfo(leader="nats-2", name="orders", replicas=peers))


def test_a_replica_offline_is_reported_missing_with_its_lag() -> None:
    wanted = stream_config("ORDERS_EVENTS", max_msgs=-1, max_bytes=-1, replicas=3)
    stream = stream_figures(info([api.PeerInfo(name="nats-1", current=True, active=200_000_000, lag=0),
                                  api.PeerInfo(name="nats-3", current=False, offline=True, active=31_000_000_000,
                                               lag=1200)]), wanted)

    assert (stream["replicas"], stream["leader"], stream["current_replicas"]) == (3, "nats-2", 2)
    assert stream["peers"][1] == {"name": "nats-3", "current": False, "offline": True, "active_seconds": 31.0,
                                  "lag": 1200}
    text = status_text({"unpublished_events": 0, "oldest_unpublished_seconds": 0.0, "active_relay": None,
                        "stream": stream})
    assert "ORDERS_EVENTS, 3 replicas, leader nats-2, 2 of 3 current" in text
    assert "replica nats-3:    OFFLINE, last seen 31.0s ago, lag 1200" in text
    assert "differs" not in text


def test_a_stream_with_fewer_replicas_than_wanted_says_so() -> None:
    wanted = stream_config("ORDERS_EVENTS", max_msgs=-1, max_bytes=-1, replicas=3)
    stream = stream_figures(info([], replicas=1), wanted)

    assert stream["differences"] == ["num_replicas: wanted 3, the stream has 1"]
    assert (stream["replicas"], stream["current_replicas"]) == (1, 1)


def test_a_login_in_the_urls_is_passed_on_its_own_for_the_servers_a_cluster_announces() -> None:
    options = server_options("nats://relay:pw%2F1@127.0.0.1:4001, nats://relay:pw%2F1@127.0.0.1:4002", NatsAccess())

    assert options["servers"] == ["nats://127.0.0.1:4001", "nats://127.0.0.1:4002"]
    assert (options["user"], options["password"]) == ("relay", "pw/1")


def test_urls_with_different_logins_or_an_explicit_login_are_left_as_they_are() -> None:
    mixed = "nats://a:1@n1:4222,nats://b:2@n2:4222"
    assert server_options(mixed, NatsAccess())["servers"] == mixed.split(",")
    assert "user" not in server_options(mixed, NatsAccess())

    explicit = server_options("nats://a:1@n1:4222", NatsAccess(user="ops", password="secret"))
    assert (explicit["servers"], explicit["user"]) == (["nats://a:1@n1:4222"], "ops")
    assert server_options("n1:4222", NatsAccess()) == {"servers": ["n1:4222"]}

"""The notice fan-out: a notice wakes exactly the watchers whose filter matches, in its tenant; and
the caps on open streams."""

from __future__ import annotations

import asyncio

from server.query.watch import Hub, StreamLimits, Watcher


def test_a_notice_wakes_the_order_its_customer_and_the_tenant_wide_watchers_only() -> None:
    async def scenario() -> dict[str, bool]:
        hub = Hub()
        watchers = {
            "order": Watcher("t1", "o-1", ""),
            "customer": Watcher("t1", "", "c-1"),
            "all": Watcher("t1", "", ""),
            "other order": Watcher("t1", "o-2", ""),
            "other customer": Watcher("t1", "", "c-2"),
            "other tenant": Watcher("t2", "", ""),
        }
        for watcher in watchers.values():
            hub.add(watcher)

        hub.notify("t1", "o-1", "c-1")

        return {name: w.wake.is_set() for name, w in watchers.items()}

    woken = asyncio.run(scenario())

    assert woken == {"order": True, "customer": True, "all": True,
                     "other order": False, "other customer": False, "other tenant": False}


def test_closing_wakes_every_watcher_and_removed_watchers_are_forgotten() -> None:
    async def scenario() -> tuple[bool, int]:
        hub = Hub()
        kept, gone = Watcher("t1", "", "c-1"), Watcher("t1", "o-1", "")
        hub.add(kept)
        hub.add(gone)
        hub.remove(gone)

        hub.close()

        return kept.wake.is_set() and hub.closing, hub.count()

    assert asyncio.run(scenario()) == (True, 1)


def test_stream_limits_refuse_past_either_cap_and_take_again_once_a_stream_ends() -> None:
    limits = StreamLimits(per_connection=2, per_tenant=3)
    assert [limits.take("peer-1", "t") for _ in range(3)] == [None, None, ("per_connection", 2)]
    assert limits.take("peer-2", "t") is None
    assert limits.take("peer-3", "t") == ("per_tenant", 3)
    assert limits.take("peer-3", "u") is None  # another tenant has slots of its own

    limits.give_back("peer-1", "t")
    assert limits.take("peer-3", "t") is None
    assert limits.take("peer-1", "t") == ("per_tenant", 3)


def test_stream_limits_of_zero_limit_nothing() -> None:
    limits = StreamLimits(per_connection=0, per_tenant=0)
    assert all(limits.take("peer", "t") is None for _ in range(10_000))


def test_a_stream_keeps_the_newest_noticed_version_of_each_order_and_a_token_waiter_none() -> None:
    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        hub = Hub()
        stream, waiter = Watcher("t1", "", "c-1"), Watcher("t1", "o-1", "", stream=False)
        hub.add(stream)
        hub.add(waiter)

        hub.notify("t1", "o-1", "c-1", version=3)
        hub.notify("t1", "o-1", "c-1", version=2)  # notices of one order may arrive out of order
        hub.notify("t1", "o-2", "c-1", version=1)

        return stream.versions, waiter.versions

    assert asyncio.run(scenario()) == ({"o-1": 3, "o-2": 1}, {})

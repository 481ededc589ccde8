"""A broken relay, for showing that the chaos checker catches a broken guarantee: with
ORDERS_CHAOS_SABOTAGE=mark-before-ack, the relay process reports one event in ten as
acknowledged without publishing it, so it is marked published though no PubAck came."""

import os
import sys

if os.environ.get("ORDERS_CHAOS_SABOTAGE") == "mark-before-ack" and sys.argv[-1:] == ["relay"]:
    from server.relay import outbox

    _publish = outbox.Publisher.publish

    async def _sabotaged(self, rows):  # type: ignore[no-untyped-def]
        skipped = [row for row in rows if row.id % 10 == 0]
        acked, failed, duplicates = await _publish(self, [row for row in rows if row.id % 10 != 0])
        return acked + [(row.id, 0) for row in skipped], failed, duplicates

    outbox.Publisher.publish = _sabotaged  # type: ignore[method-assign]

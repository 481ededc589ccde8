"""The projector killed at random points while ~2,000 events flow: kill -9 at any moment, and
exits exactly before a batch commits and between its commit and its acks. Afterwards every read
model equals the same figures computed from the write tables: nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import psycopg
import pytest

from server.config import libpq_url
from tests.e2e.projection import Traffic, lagging_aggregates, read_model_differences
from tests.harness import Stack, scalar, wait_until

pytestmark = pytest.mark.e2e
EVENTS = 2_000


def test_projector_killed_before_commit_after_commit_and_at_random_applies_every_event_once(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, nats_url, tmp_path).start_all()
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    traffic = Traffic(stack.command_addr)
    writer = threading.Thread(target=traffic.run, args=(EVENTS,))
    rng = random.Random(2026)
    exits: list[int] = []
    try:
        writer.start()
        modes = ["ORDERS_PROJECTOR_CRASH_BEFORE_COMMIT", "ORDERS_PROJECTOR_CRASH_AFTER_COMMIT", "kill -9"]
        round_ = 0
        while writer.is_alive() or round_ < len(modes):
            mode = modes[round_ % len(modes)]
            round_ += 1
            stack.kill("projector")
            applied_before = scalar(db, "SELECT count(*) FROM applied_versions")
            stack.extra_env = {} if mode == "kill -9" else {mode: str(rng.randint(1, 4))}
            proc = stack.start("projector")
            if mode == "kill -9":
                # Given it is applying, when it has made some random progress, then kill -9.
                target = applied_before + rng.randint(5, 60)
                wait_until(lambda: scalar(db, "SELECT count(*) FROM applied_versions") >= target
                           or not writer.is_alive(), timeout=120, what="progress before kill -9")
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                exits.append(-9)
            else:
                wait_until(lambda: proc.poll() is not None or (not writer.is_alive() and round_ > len(modes)),
                           timeout=120, what=f"{mode} to fire")
                if proc.poll() is not None:
                    exits.append(proc.returncode)
        writer.join()

        stack.extra_env = {}
        stack.kill("projector")
        stack.start("projector")
        wait_until(lambda: lagging_aggregates(db) == 0, timeout=120, what="every event applied")

        assert 70 in exits and 71 in exits and -9 in exits, exits  # each crash point was hit
        assert scalar(db, "SELECT count(*) FROM events") == traffic.events >= EVENTS
        assert read_model_differences(db) == {}
        assert scalar(db, "SELECT count(*) FROM dead_letters") == 0
    finally:
        traffic.stop.set()
        writer.join(timeout=60)
        traffic.close()
        db.close()
        stack.stop_all()

"""Alembic migrations for the write and read schemas."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

from server.config import sqlalchemy_url

log = logging.getLogger(__name__)

# How long a migration's statement waits for a table lock before it gives up. A schema change
# that waits behind a long transaction holds up every query of that table queued behind it;
# giving up soon and trying again later keeps the service answering.
LOCK_TIMEOUT_SECONDS = 5.0
ATTEMPTS = 5
LOCK_NOT_AVAILABLE = "55P03"


class MigrationBlockedError(Exception):
    """A migration could not get its table lock in any attempt; nothing of it was applied."""


def upgrade(database_url: str, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS, attempts: int = ATTEMPTS) -> None:
    """Brings the database to the newest schema; safe to run from several processes at once.

    Each migration is a transaction of its own whose statements wait at most `lock_timeout` for
    a lock: one that did not get it is rolled back whole and tried again, a little later, up to
    `attempts` times; the migrations before it stay applied."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    cfg.attributes["lock_timeout_ms"] = max(1, round(lock_timeout * 1000))
    for attempt in range(1, attempts + 1):
        try:
            command.upgrade(cfg, "head")
            return
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            if attempt == attempts:
                raise MigrationBlockedError(
                    f"a migration waited {lock_timeout:g} s for a table lock another transaction holds, "
                    f"{attempts} times; it was rolled back each time. Run `orders migrate` again once long "
                    "transactions on that table have ended (pg_stat_activity shows them)") from None
            log.warning("a migration could not get its table lock in time; trying again",
                        extra={"attempt": attempt, "of": attempts, "lock_timeout_seconds": lock_timeout})
            time.sleep(min(2.0 ** attempt, 30.0))

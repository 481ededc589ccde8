"""Alembic migrations for the write and read schemas."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from server.config import sqlalchemy_url


def upgrade(database_url: str) -> None:
    """Brings the database to the newest schema; safe to run from several processes at once."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.upgrade(cfg, "head")

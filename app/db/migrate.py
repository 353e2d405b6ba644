"""Bring a database to the latest schema with Alembic, from inside a running loop."""

from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ConfigError

# migrations/ sits beside app/ in the repository and in the image.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def build_alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every migration not yet applied, in one transaction."""

    def upgrade(connection: Connection) -> None:
        config = build_alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(build_alembic_config()).get_current_head()


async def read_revision(conn: Any) -> str | None:
    """The schema revision the database is at; None before the first migration."""
    try:
        revision: str | None = await conn.fetchval(
            "SELECT version_num FROM alembic_version"
        )
    except asyncpg.UndefinedTableError:
        return None
    return revision


async def check_schema_is_current(conn: Any) -> None:
    """Raise ConfigError unless the schema is exactly the one this code needs."""
    current, head = await read_revision(conn), head_revision()
    if current != head:
        raise ConfigError(
            f"the database schema is at revision {current or 'none'}, this "
            f"version needs {head}: run `selftune-events migrate` first"
        )

"""Bring a database to the latest schema with Alembic, from inside a running loop."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

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

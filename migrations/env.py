"""Alembic environment: async, and able to run on a connection it is handed.

`app.db.migrate.upgrade_to_head` passes its own connection in
`config.attributes["connection"]`, so migrations run inside a caller's event
loop (the CLI, `dev`, the tests). Run bare, as `alembic upgrade head`, it
connects to DATABASE_URL itself.
"""

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.engine import to_sqlalchemy_url

# Two instances migrating at once must not both create the tables: the second
# waits here, then finds the schema current. The number is arbitrary and ours.
MIGRATION_LOCK_ID = 0x5E1F7E


def run_migrations(connection: Connection) -> None:
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_with_own_engine() -> None:
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("DATABASE_URL is not set")
    engine = create_async_engine(to_sqlalchemy_url(database_url))
    async with engine.begin() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


given_connection = context.config.attributes.get("connection")
if given_connection is not None:
    run_migrations(given_connection)
else:
    asyncio.run(run_migrations_with_own_engine())

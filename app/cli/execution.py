"""How every command runs: settings, logging, one event loop, errors as one line."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import asyncpg
import typer

from app.config import Settings, load_settings
from app.db.engine import Database, create_engine
from app.errors import AppError, ConfigError
from app.logging import configure_logging

T = TypeVar("T")

# What a shell reports for a process stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130

# A command does a handful of queries; a second connection would only wait.
COMMAND_POOL_SIZE = 1

NO_SCHEMA = (
    "the database has no selftune-events tables yet; "
    "run `selftune-events migrate` first"
)


def run_command(
    body: Callable[[Settings], Coroutine[Any, Any, T]],
    *,
    interrupted_exit_code: int = INTERRUPTED_EXIT_CODE,
) -> T:
    """Load settings, configure logging and run `body` in a fresh event loop.

    An AppError becomes `error: ...` on one stderr line and exit code 1;
    Ctrl-C ends the command quietly with `interrupted_exit_code`.
    """
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return asyncio.run(body(settings))
    except AppError as exc:
        fail(exc.detail)
    except KeyboardInterrupt:
        raise typer.Exit(interrupted_exit_code) from None


def fail(detail: str) -> NoReturn:
    # One line, whatever the database put in its message.
    typer.echo("error: " + " ".join(detail.split()), err=True)
    raise typer.Exit(1)


@contextlib.asynccontextmanager
async def open_database(
    settings: Settings, *, pool_size: int = COMMAND_POOL_SIZE
) -> AsyncIterator[Database]:
    """A query pool on DATABASE_URL for the length of one command."""
    database = Database(
        create_engine(
            settings.require_database_url(),
            pool_size=pool_size,
            connect_timeout=max(settings.database_connect_timeout, 1.0),
        )
    )
    try:
        yield database
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError) as exc:
        raise ConfigError(NO_SCHEMA) from exc
    finally:
        await database.dispose()


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Any]:
    """One connection to DATABASE_URL, for a command that needs only that."""
    async with open_database(settings) as database, database.connection() as conn:
        yield conn

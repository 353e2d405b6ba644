"""Run commands as a user would, through Typer's CliRunner, on the test database.

Each command runs its own event loop with asyncio.run, which cannot nest in
the test's loop, so the runner works in a thread while the test awaits it.
"""

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result
from uuid_utils import uuid7

from app.cli.main import app
from tests.fixtures.postgres import throwaway_database

# Loggers that a command (configure_logging, dev) reconfigures for the process.
CONFIGURED_LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "sqlalchemy.engine",
    "pgserver",
)

BOX_DRAWING = re.compile("[\u2500-\u257f]")


@dataclass(frozen=True)
class Cli:
    database_url: str

    async def run(self, *args: str, **env: str | None) -> Result:
        """Run `selftune-events ARGS` with DATABASE_URL set, unless `env` says not.

        Logs stay at warning unless a test asks for more, so that stderr holds
        what the command itself says.
        """
        environment: dict[str, str | None] = {
            "DATABASE_URL": self.database_url,
            "LOG_LEVEL": "warning",
            **env,
        }
        runner = CliRunner()
        return await asyncio.to_thread(
            lambda: runner.invoke(
                app, list(args), env=environment, catch_exceptions=False
            )
        )


@pytest.fixture
def cli(migrated_database_url: str) -> Cli:
    return Cli(migrated_database_url)


@pytest.fixture
def empty_database_url(migrated_database_url: str) -> Iterator[str]:
    """A database of its own on the test server, with no schema."""
    server_url = make_url(migrated_database_url).set(database="postgres")
    with throwaway_database(server_url.render_as_string(hide_password=False)) as url:
        yield url


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put back the logging a command configured: its handler wrote to the
    runner's captured stderr, which is gone once the command returns."""
    saved = []
    for name in CONFIGURED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def error_line(result: Result) -> str:
    """The single `error: ...` line a refused command prints, and nothing else."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def usage_error(result: Result) -> str:
    """The stderr of a command rejected for bad usage, which changes nothing."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # Typer draws the message in a box that wraps it; keep only the words.
    return " ".join(BOX_DRAWING.sub(" ", result.stderr).split())


def single_line(result: Result) -> str:
    """The one line a successful command prints on stdout."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def new_uuid() -> uuid.UUID:
    """A well-formed id that names nothing in the database."""
    return uuid.UUID(str(uuid7()))

"""`serve` refuses a database whose schema is not the one it needs."""

import asyncio
import subprocess
import sys

from sqlalchemy.engine import make_url

from tests.fixtures.postgres import throwaway_database
from tests.fixtures.server import find_free_port


async def test_serve_on_an_unmigrated_database_says_to_migrate(
    migrated_database_url: str,
) -> None:
    """It used to report ready and then answer every request with a 500."""
    cluster = make_url(migrated_database_url).set(database="postgres")

    with throwaway_database(cluster.render_as_string(hide_password=False)) as empty:
        finished = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "app.cli.main",
                "serve",
                "--port",
                str(find_free_port()),
            ],
            env={"DATABASE_URL": empty, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert finished.returncode == 1
    assert finished.stderr.count("\n") == 1
    assert "selftune-events migrate" in finished.stderr

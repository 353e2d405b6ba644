"""`runs`: improve runs, the streams' subjects."""

import uuid

import typer

from app.cli.arguments import OrgOption
from app.cli.execution import connect, run_command
from app.cli.orgs import ensure_org_exists
from app.config import Settings
from app.db import runs as run_queries
from app.ids import RUN_PREFIX, format_id

app = typer.Typer(help="Manage improve runs.", no_args_is_help=True)


@app.command("create")
def create(org: OrgOption) -> None:
    """Create a run in the queued state, with no events, and print its id."""
    run_id = run_command(lambda settings: create_run(settings, org))
    typer.echo(format_id(RUN_PREFIX, run_id))


async def create_run(settings: Settings, org_id: uuid.UUID) -> uuid.UUID:
    async with connect(settings) as conn:
        await ensure_org_exists(conn, org_id)
        return await run_queries.create_run(conn, org_id)

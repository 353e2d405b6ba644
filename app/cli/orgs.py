"""`orgs`: organisations, the tenants that own keys and runs."""

import uuid
from typing import Annotated, Any

import typer

from app.cli.execution import connect, run_command
from app.config import Settings
from app.db import orgs as org_queries
from app.errors import NotFound
from app.ids import ORG_PREFIX, format_id

app = typer.Typer(help="Manage organisations.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A name people will recognise.")
    ],
    runtime: Annotated[
        bool,
        typer.Option(
            "--runtime/--no-runtime",
            help="Whether the organisation has a Cloud Improve runtime; "
            "without one its streams answer 503.",
        ),
    ] = True,
) -> None:
    """Create an organisation and print its id."""
    name = name.strip()
    if not name:
        raise typer.BadParameter("must not be empty", param_hint="NAME")

    org_id = run_command(lambda settings: create_org(settings, name, runtime))
    typer.echo(format_id(ORG_PREFIX, org_id))


async def create_org(settings: Settings, name: str, has_runtime: bool) -> uuid.UUID:
    async with connect(settings) as conn:
        return await org_queries.create_org(conn, name, has_runtime=has_runtime)


async def ensure_org_exists(conn: Any, org_id: uuid.UUID) -> None:
    """Refuse a command that names an organisation the database does not have."""
    if not await org_queries.org_exists(conn, org_id):
        raise NotFound(f"no organisation has the id {format_id(ORG_PREFIX, org_id)}")

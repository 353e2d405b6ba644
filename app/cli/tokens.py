"""`tokens`: scoped read tokens, for browsers that must never see an API key."""

import datetime
import uuid
from typing import Annotated

import typer

from app.cli.arguments import parse_run_argument
from app.cli.execution import connect, run_command
from app.config import Settings
from app.db import runs as run_queries
from app.db import tokens as token_queries
from app.errors import NotFound
from app.tokens import DEFAULT_TTL, parse_ttl

app = typer.Typer(help="Mint scoped read tokens.", no_args_is_help=True)


def parse_ttl_option(text: str) -> datetime.timedelta:
    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("create")
def create(
    run: Annotated[
        uuid.UUID,
        typer.Option(
            "--run",
            parser=parse_run_argument,
            metavar="RUN",
            help="The one run the token may read: its run_ id or UUID.",
            show_default=False,
        ),
    ],
    ttl: Annotated[
        datetime.timedelta,
        typer.Option(
            parser=parse_ttl_option,
            metavar="TTL",
            help="How long it lives: 900, 900s, 15m, 2h or 1d (at most 24 h).",
        ),
    ] = DEFAULT_TTL,
) -> None:
    """Mint a token that reads one run's events until it expires; print it."""
    token = run_command(lambda settings: mint(settings, run, ttl))
    typer.echo(token)


async def mint(settings: Settings, run_id: uuid.UUID, ttl: datetime.timedelta) -> str:
    async with connect(settings) as conn:
        run = await run_queries.get_run(conn, run_id)
        if run is None:
            raise NotFound("no run with that id")
        token, _expires_at = await token_queries.create_read_token(
            conn, run_id=run.id, org_id=run.org_id, ttl=ttl
        )
    return token

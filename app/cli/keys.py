"""`keys`: API keys. A key is shown once, at creation; only its hash is kept."""

import datetime
import uuid
from typing import Annotated

import typer

from app.cli.arguments import OrgOption
from app.cli.execution import connect, run_command
from app.cli.orgs import ensure_org_exists
from app.config import Settings
from app.db import keys as key_queries
from app.errors import AppError, NotFound
from app.keys import (
    LIVE_KEY_PREFIX,
    TEST_KEY_PREFIX,
    VISIBLE_PREFIX_LENGTH,
    generate_key,
    hash_key,
    is_key_format,
    visible_prefix,
)

app = typer.Typer(help="Manage API keys.", no_args_is_help=True)


@app.command("create")
def create(
    org: OrgOption,
    test: Annotated[
        bool,
        typer.Option("--test", help="Make an st_test_ key instead of st_live_."),
    ] = False,
) -> None:
    """Create an API key and print it. It is shown this once: keep it safe."""
    key = generate_key(test=test)
    run_command(lambda settings: store_key(settings, org, key))
    typer.echo(key)


@app.command("list")
def list_(org: OrgOption) -> None:
    """List an organisation's keys: visible prefix, created, active or revoked."""
    listings = run_command(lambda settings: read_keys(settings, org))
    for listing in listings:
        state = (
            "active"
            if listing.revoked_at is None
            else f"revoked {format_time(listing.revoked_at)}"
        )
        typer.echo(f"{listing.prefix}  {format_time(listing.created_at)}  {state}")


@app.command("revoke")
def revoke(
    key_or_prefix: Annotated[
        str,
        typer.Argument(
            metavar="KEY_OR_PREFIX",
            help="The full key, or its first 16 characters as `keys list` shows.",
        ),
    ],
) -> None:
    """Revoke a key at once; clients using it get 401 from then on."""
    text = key_or_prefix.strip()
    if is_key_format(text):
        run_command(lambda settings: revoke_key(settings, text))
    elif is_visible_prefix(text):
        run_command(lambda settings: revoke_key_by_prefix(settings, text))
    else:
        raise typer.BadParameter(
            "give the full key or its 16-character visible prefix "
            f"(starting {LIVE_KEY_PREFIX} or {TEST_KEY_PREFIX})",
            param_hint="KEY_OR_PREFIX",
        )


async def store_key(settings: Settings, org_id: uuid.UUID, key: str) -> None:
    async with connect(settings) as conn:
        await ensure_org_exists(conn, org_id)
        await key_queries.insert_key(
            conn, org_id, prefix=visible_prefix(key), key_hash=hash_key(key)
        )


async def read_keys(
    settings: Settings, org_id: uuid.UUID
) -> list[key_queries.KeyListing]:
    async with connect(settings) as conn:
        await ensure_org_exists(conn, org_id)
        return await key_queries.list_keys(conn, org_id)


async def revoke_key(settings: Settings, key: str) -> None:
    async with connect(settings) as conn:
        if await key_queries.revoke_by_hash(conn, hash_key(key)) == 0:
            raise NotFound("no key matches the one given")


async def revoke_key_by_prefix(settings: Settings, prefix: str) -> None:
    async with connect(settings) as conn, conn.transaction():
        matching = await key_queries.count_keys_with_prefix(conn, prefix)
        if matching == 0:
            raise NotFound(f"no key has the visible prefix {prefix}")
        if matching > 1:
            raise AppError(
                f"{matching} keys share the visible prefix {prefix}; "
                "revoke the one you mean by its full key"
            )
        await key_queries.revoke_by_prefix(conn, prefix)


def is_visible_prefix(text: str) -> bool:
    return len(text) == VISIBLE_PREFIX_LENGTH and text.startswith(
        (LIVE_KEY_PREFIX, TEST_KEY_PREFIX)
    )


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""Scoped read tokens: minted by a key, good for one run, for a while."""

import asyncio
import datetime
import uuid

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from app.cli.main import app as cli
from app.db import tokens as token_queries
from app.tokens import hash_token, parse_ttl
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth, read_all_events


async def mint(server: LiveServer, key: str, run: str, **body: int) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{server.base_url}/api/v1/improve-runs/{run}/read-tokens",
            headers=auth(key),
            json=body or None,
        )


async def test_read_token_reads_its_run(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "run_enqueued")
    await publish(run_id, "run_completed")

    minted = await mint(live_server, tenant.key, run_typeid(run_id), ttl_seconds=60)
    token = minted.json()["token"]
    events = await read_all_events(live_server.events_url(run_typeid(run_id)), token)

    assert minted.status_code == 201
    assert token.startswith("st_read_")
    assert minted.json()["run_id"] == run_typeid(run_id)
    assert [event["type"] for event in events] == ["run_enqueued", "run_completed"]


async def test_read_token_for_another_run_is_403_with_words_that_say_so(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant()
    granted, other = await make_run(tenant), await make_run(tenant)
    token = (await mint(live_server, tenant.key, run_typeid(granted))).json()["token"]

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url(run_typeid(other)), headers=auth(token)
        )

    assert response.status_code == 403
    assert "another run" in response.json()["detail"]


async def test_read_token_expired_is_401_with_words_that_say_so(
    live_server: LiveServer,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    token = (await mint(live_server, tenant.key, run_typeid(run_id))).json()["token"]
    await db.execute(
        "UPDATE read_tokens SET expires_at = now() - interval '1 second'"
        " WHERE token_hash = $1",
        hash_token(token),
    )

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url(run_typeid(run_id)), headers=auth(token)
        )

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


async def test_read_token_cannot_mint_tokens(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant()
    run = run_typeid(await make_run(tenant))
    token = (await mint(live_server, tenant.key, run)).json()["token"]

    response = await mint(live_server, token, run)

    assert response.status_code == 403


async def test_read_token_mint_needs_the_runs_own_organisation(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    owner, stranger = await make_tenant("owner"), await make_tenant("stranger")
    run = run_typeid(await make_run(owner))

    responses = [
        await mint(live_server, stranger.key, run),
        await mint(live_server, owner.key, run_typeid(uuid.uuid4())),
        await mint(live_server, "st_live_bogus", run),
    ]

    assert [response.status_code for response in responses] == [403, 404, 401]


async def test_read_token_unknown_is_401(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url(run_typeid(run_id)),
            headers=auth("st_read_" + "x" * 43),
        )

    assert response.status_code == 401


async def test_tokens_create_command_prints_a_working_token(
    migrated_database_url: str,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)

    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["tokens", "create", "--run", run_typeid(run_id), "--ttl", "15m"],
        env={"DATABASE_URL": migrated_database_url},
    )
    grant = await token_queries.find_read_token(db, hash_token(result.stdout.strip()))

    assert result.exit_code == 0, result.stderr
    assert grant is not None
    assert grant.run_id == run_id
    now = datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=14) < grant.expires_at - now
    assert grant.expires_at - now <= datetime.timedelta(minutes=15)


@pytest.mark.parametrize("ttl", ["0", "25h", "soon", "-5m", "15x"])
def test_tokens_ttl_outside_the_rules_is_refused(ttl: str) -> None:
    with pytest.raises(ValueError, match="duration|between"):
        parse_ttl(ttl)

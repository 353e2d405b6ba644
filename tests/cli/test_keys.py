"""`keys create`, `keys list` and `keys revoke`."""

import secrets

import asyncpg

from app.db import keys as key_queries
from app.ids import ORG_PREFIX, format_id
from app.keys import generate_key, hash_key, visible_prefix
from tests.cli.conftest import Cli, error_line, new_uuid, single_line, usage_error
from tests.fixtures.factories import MakeTenant, Tenant


async def test_keys_create_prints_a_live_key_that_authenticates(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()

    result = await cli.run("keys", "create", "--org", org_typeid(tenant))

    key = single_line(result)
    assert key.startswith("st_live_")
    assert len(key) >= len("st_live_") + 32
    owner = await key_queries.find_active_key_owner(db, hash_key(key))
    assert owner is not None
    assert owner.org_id == tenant.org_id


async def test_keys_create_test_flag_prints_a_test_key(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()

    result = await cli.run("keys", "create", "--org", str(tenant.org_id), "--test")

    key = single_line(result)
    assert key.startswith("st_test_")
    assert await key_queries.find_active_key_owner(db, hash_key(key)) is not None


async def test_keys_create_stores_only_the_hash(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()

    key = single_line(await cli.run("keys", "create", "--org", org_typeid(tenant)))

    row = await db.fetchrow(
        "SELECT prefix, key_hash FROM api_keys WHERE key_hash = $1", hash_key(key)
    )
    assert row["prefix"] == key[:16]
    assert key.encode() not in bytes(row["key_hash"])


async def test_keys_create_unknown_org_exits_without_writing(
    cli: Cli, db: asyncpg.Connection
) -> None:
    unknown = format_id(ORG_PREFIX, new_uuid())
    keys_before = await db.fetchval("SELECT count(*) FROM api_keys")

    result = await cli.run("keys", "create", "--org", unknown)

    assert "no organisation" in error_line(result)
    assert await db.fetchval("SELECT count(*) FROM api_keys") == keys_before


async def test_keys_create_malformed_org_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("keys", "create", "--org", "acme")

    assert "--org" in usage_error(result)


async def test_keys_list_shows_prefix_created_and_state(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    revoked = await add_key(db, tenant)
    await key_queries.revoke_by_hash(db, hash_key(revoked))

    result = await cli.run("keys", "list", "--org", org_typeid(tenant))

    assert result.exit_code == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == [tenant.key[:16], revoked[:16]]
    assert [line[2] for line in lines] == ["active", "revoked"]
    assert all(line[1].endswith("Z") for line in lines)
    assert tenant.key not in result.stdout


async def test_keys_list_org_without_keys_prints_nothing(
    cli: Cli, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    tenant = await make_tenant()
    await db.execute("DELETE FROM api_keys WHERE org_id = $1", tenant.org_id)

    result = await cli.run("keys", "list", "--org", org_typeid(tenant))

    assert (result.exit_code, result.stdout) == (0, "")


async def test_keys_list_unknown_org_exits_with_one_line(cli: Cli) -> None:
    result = await cli.run("keys", "list", "--org", str(new_uuid()))

    assert "no organisation" in error_line(result)


async def test_keys_revoke_by_full_key_revokes_it(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()

    result = await cli.run("keys", "revoke", tenant.key)

    assert (result.exit_code, result.stdout) == (0, ""), result.stderr
    assert await key_queries.find_active_key_owner(db, hash_key(tenant.key)) is None


async def test_keys_revoke_by_prefix_revokes_only_that_key(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    other = await add_key(db, tenant)

    result = await cli.run("keys", "revoke", visible_prefix(tenant.key))

    assert (result.exit_code, result.stdout) == (0, ""), result.stderr
    assert await key_queries.find_active_key_owner(db, hash_key(tenant.key)) is None
    assert await key_queries.find_active_key_owner(db, hash_key(other)) is not None


async def test_keys_revoke_twice_keeps_the_key_revoked(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    await cli.run("keys", "revoke", tenant.key)

    result = await cli.run("keys", "revoke", tenant.key)

    assert result.exit_code == 0, result.stderr
    assert await key_queries.find_active_key_owner(db, hash_key(tenant.key)) is None


async def test_keys_revoke_unknown_key_exits_without_echoing_it(cli: Cli) -> None:
    key = generate_key()

    result = await cli.run("keys", "revoke", key)

    assert key not in error_line(result)


async def test_keys_revoke_unknown_prefix_exits_with_one_line(cli: Cli) -> None:
    result = await cli.run("keys", "revoke", "st_live_" + secrets.token_hex(4))

    assert "no key" in error_line(result)


async def test_keys_revoke_shared_prefix_exits_without_revoking(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    prefix = "st_test_" + secrets.token_hex(4)
    first = await add_key(db, tenant, prefix=prefix)
    second = await add_key(db, tenant, prefix=prefix)

    result = await cli.run("keys", "revoke", prefix)

    assert "2 keys share" in error_line(result)
    for key in (first, second):
        assert await key_queries.find_active_key_owner(db, hash_key(key)) is not None


async def test_keys_revoke_neither_key_nor_prefix_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("keys", "revoke", "st_live_abc")

    assert "16-character visible prefix" in usage_error(result)


def org_typeid(tenant: Tenant) -> str:
    return format_id(ORG_PREFIX, tenant.org_id)


async def add_key(db: asyncpg.Connection, tenant: Tenant, *, prefix: str = "") -> str:
    """Another key for the tenant; with `prefix`, one that starts with it."""
    key = generate_key(test=True)
    if prefix:
        key = prefix + key[len(prefix) :]
    await key_queries.insert_key(
        db, tenant.org_id, prefix=visible_prefix(key), key_hash=hash_key(key)
    )
    return key

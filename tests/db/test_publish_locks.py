"""What a publish locks: its run's row, never its organisation's (migration 0004)."""

import uuid

import asyncpg

from tests.db.backends import Connect
from tests.fixtures.factories import MakeRun, Tenant


async def test_publishing_does_not_lock_the_organisation_row(
    connect: Connect, tenant: Tenant, run_id: uuid.UUID
) -> None:
    """Writers for different runs of one organisation (a runtime evolving many
    skills at once) used to share-lock its row through a second foreign key,
    and contended on it. A session holding that row shows whether they still
    do: the publish must not wait for it."""
    holder = await connect()
    writer = await connect()
    async with holder.transaction():
        await holder.execute(
            "SELECT 1 FROM organisations WHERE id = $1 FOR UPDATE", tenant.org_id
        )
        await writer.execute("SET lock_timeout = '2s'")
        seq = await writer.fetchval(
            "INSERT INTO run_events (run_id, type, phase) "
            "VALUES ($1, 'phase_changed', 'locks') RETURNING seq",
            run_id,
        )

    assert seq == 1


async def test_an_event_still_needs_an_existing_run_of_its_organisation(
    connect: Connect, tenant: Tenant, make_run: MakeRun
) -> None:
    """The one composite key keeps what the two did: no event without its
    run, and none that names another organisation than its run's."""
    conn = await connect()
    run_id = await make_run(tenant)
    foreign_org = uuid.uuid4()

    constraints = await conn.fetch(
        """
        SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint
        WHERE conrelid = 'run_events'::regclass AND contype = 'f'
        """
    )
    # The trigger sets org_id from the run, so only a row written around it
    # can try another organisation; the transaction is rolled back.
    refused: asyncpg.PostgresError | None = None
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("ALTER TABLE run_events DISABLE TRIGGER USER")
        await conn.execute(
            "INSERT INTO run_events (id, run_id, org_id, seq, type, created_at)"
            " VALUES ($1, $2, $3, 1, 'phase_changed', now())",
            uuid.uuid4(),
            run_id,
            foreign_org,
        )
    except asyncpg.ForeignKeyViolationError as error:
        refused = error
    finally:
        await transaction.rollback()

    assert [row["definition"] for row in constraints] == [
        "FOREIGN KEY (run_id, org_id) REFERENCES runs(id, org_id)"
    ]
    assert refused is not None

"""One foreign key from an event to its run and organisation, not two.

Revision 0001 gave `run_events` a foreign key to `runs` and another to
`organisations`. Each INSERT then share-locked its organisation's row as
well as its run's; writers publishing for different runs of one organisation
(a runtime evolving many skills at once) all locked that one row, and
PostgreSQL records several lockers of a row in a multixact, which every
later locker extends. (A quick run without that key had four writers at 0.91
of a plain INSERT + NOTIFY against 0.66 with it; the benchmark's own writes
scenario, whose runs may not share an organisation, showed no difference
beyond its noise.)

The trigger already sets an event's organisation from its run, so one
composite key, `(run_id, org_id)` to `runs (id, org_id)`, says all that the
two did: the run exists and the event carries the run's organisation. Its
check locks only the run's row, which the trigger holds already.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:40
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Writers lock run_events (their INSERT) before runs (the trigger's row
# lock); taking both up front in that order keeps a migration run under
# live writers from deadlocking with them (seen as 40P01 in a writer).
LOCK_AS_WRITERS_DO = "LOCK TABLE run_events, runs IN ACCESS EXCLUSIVE MODE"


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each one.
    op.execute(LOCK_AS_WRITERS_DO)
    op.execute("ALTER TABLE runs ADD CONSTRAINT runs_id_org_id UNIQUE (id, org_id)")
    op.execute(
        """
        ALTER TABLE run_events
            ADD CONSTRAINT run_events_run_org_fkey
            FOREIGN KEY (run_id, org_id) REFERENCES runs (id, org_id)
        """
    )
    op.execute("ALTER TABLE run_events DROP CONSTRAINT run_events_run_id_fkey")
    op.execute("ALTER TABLE run_events DROP CONSTRAINT run_events_org_id_fkey")


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE run_events
            ADD CONSTRAINT run_events_run_id_fkey
            FOREIGN KEY (run_id) REFERENCES runs (id)
        """
    )
    op.execute(
        """
        ALTER TABLE run_events
            ADD CONSTRAINT run_events_org_id_fkey
            FOREIGN KEY (org_id) REFERENCES organisations (id)
        """
    )
    op.execute("ALTER TABLE run_events DROP CONSTRAINT run_events_run_org_fkey")
    op.execute("ALTER TABLE runs DROP CONSTRAINT runs_id_org_id")

"""Events can be deleted only once their run has ended.

Since revision 0003 the next sequence of a run is max(seq) + 1. Deleting a
running run's latest event would hand its number to the next event, and a
client that had already received the deleted one would skip the new one as
already sent: a silent loss (found by a break-it run that deleted the tail
of a live run). Deleting the history of an ended run, which is what
`selftune-events prune` does, takes no number from anyone, so it stays
allowed. TRUNCATE stays allowed too: it resets the whole log, as a test
database or a fresh environment needs, and clients following a run across
a reset are beyond any promise.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 20:30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Writers lock run_events (their INSERT) before runs (the trigger's row
# lock); taking both up front in that order keeps a migration run under
# live writers from deadlocking with them (seen as 40P01 in a writer).
LOCK_AS_WRITERS_DO = "LOCK TABLE run_events, runs IN ACCESS EXCLUSIVE MODE"

REFUSE_DELETE_FUNCTION = """
CREATE FUNCTION selftune_refuse_live_event_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM runs WHERE id = OLD.run_id AND ended_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('run %s has not ended: its events cannot be deleted',
                             OLD.run_id),
            HINT = 'events are an append-only log: end the run first (for '
                'instance with run_cancelled), then delete its events or '
                'remove them with selftune-events prune';
    END IF;
    RETURN OLD;
END;
$$
"""


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each one.
    op.execute(LOCK_AS_WRITERS_DO)
    op.execute(REFUSE_DELETE_FUNCTION)
    op.execute(
        """
        CREATE TRIGGER run_events_delete_only_ended
            BEFORE DELETE ON run_events
            FOR EACH ROW EXECUTE FUNCTION selftune_refuse_live_event_delete()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER run_events_delete_only_ended ON run_events")
    op.execute("DROP FUNCTION selftune_refuse_live_event_delete()")

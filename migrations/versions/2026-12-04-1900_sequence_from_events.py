"""Number events from the (run_id, seq) index instead of a counter on the run.

Revision 0001's trigger bumped `runs.last_seq` for every event, so every
event left a new version of its run's row. One transaction writing many
events for a run walked an ever longer chain of its own versions (quadratic:
100k events in one INSERT did not finish in four minutes), and while any
transaction elsewhere on the server stayed open the dead versions could not
be pruned, so publishes on a busy run slowed down (docs/PERFORMANCE.md,
finding 8). Now:

1. The trigger still locks the run's row until commit, so writers of one run
   queue and sequence order is commit order. It takes FOR NO KEY UPDATE, the
   lock an UPDATE of the run's status takes anyway: it excludes the other
   writers but, unlike FOR UPDATE, not a foreign-key check from a table that
   references the run (a read token being created).
2. The next number is max(seq) + 1, read from the unique (run_id, seq) index
   under that lock. In READ COMMITTED each statement of the trigger takes a
   new snapshot, which shows every event committed before the lock was
   granted; rows inserted earlier by the same statement are visible to a
   VOLATILE function's queries in a row-level BEFORE trigger.
   https://www.postgresql.org/docs/current/trigger-datachanges.html
3. REPEATABLE READ and SERIALIZABLE writers keep the snapshot their
   transaction began with, which lacks what committed later: the events of
   the writer whose lock they waited for, or of one that finished just
   before they asked. Their first event for a run in a transaction
   therefore probes the index with the number it is about to take (a nested
   INSERT in a subtransaction that always rolls back; the unique check sees
   committed rows whatever the snapshot). If the number is taken the write
   fails with serialization_failure (40001), which asks the writer to retry
   the whole transaction; the unique index stays the last word, so no path
   can store a duplicate or leave a gap. Later events of that run in the
   same transaction skip the probe: the latest event is then the
   transaction's own (unless written in a savepoint, which only costs
   another probe), and the lock has been held since it was written.
4. The run's row is written only by events that carry a status: `status`,
   `updated_at` (now the time of the last status change) and `ended_at`.
5. `runs.last_seq` is gone; readers take the latest event from the index.

Instances of the previous release read `runs.last_seq`; stop them before
this migration runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The type of the probe row (item 3). It is not an event type, so a writer
# who uses it at the top level gets the ordinary unknown-type refusal.
PROBE_TYPE = "selftune_seq_probe"

# The checks, their order, SQLSTATEs and words are revision 0001's; what
# changed is marked with the numbers of the list in the module docstring.
PUBLISH_FUNCTION = f"""
CREATE OR REPLACE FUNCTION selftune_publish_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    required_field text;
    allowed_statuses text[];
    run_row runs%ROWTYPE;
    latest_seq bigint;
    latest_xmin xid;
BEGIN
    -- The probe row of item 3, inserted by selftune_check_snapshot: it only
    -- has to reach the unique index. Its organisation is the run's own id,
    -- which names no organisation, so the row can never be stored, even if
    -- a writer's own trigger sends one here.
    IF NEW.type = '{PROBE_TYPE}' AND pg_trigger_depth() > 1 THEN
        NEW.org_id := NEW.run_id;
        RETURN NEW;
    END IF;

    CASE NEW.type
        WHEN 'run_enqueued' THEN allowed_statuses := ARRAY['queued'];
        WHEN 'run_started' THEN allowed_statuses := ARRAY['running'];
        WHEN 'phase_changed' THEN required_field := 'phase';
        WHEN 'candidate_persisted' THEN required_field := 'candidate_id';
        WHEN 'proposal_created' THEN required_field := 'proposal_id';
        WHEN 'run_completed' THEN allowed_statuses := ARRAY['succeeded', 'no_winner'];
        WHEN 'run_failed' THEN allowed_statuses := ARRAY['failed'];
        WHEN 'run_cancelled' THEN allowed_statuses := ARRAY['cancelled'];
        ELSE
            RAISE EXCEPTION USING
                ERRCODE = 'check_violation',
                MESSAGE = format('unknown event type %L', NEW.type),
                HINT = 'type must be one of run_enqueued, run_started, '
                    'phase_changed, candidate_persisted, proposal_created, '
                    'run_completed, run_failed, run_cancelled';
    END CASE;

    IF allowed_statuses IS NOT NULL THEN
        IF NEW.status IS NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'check_violation',
                MESSAGE = format('event type %s requires a status', NEW.type),
                HINT = format('status must be one of %s',
                              array_to_string(allowed_statuses, ', '));
        END IF;
        IF NOT NEW.status = ANY (allowed_statuses) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'check_violation',
                MESSAGE = format('status %L does not fit event type %s',
                                 NEW.status, NEW.type),
                HINT = format('status must be one of %s',
                              array_to_string(allowed_statuses, ', '));
        END IF;
    ELSIF NEW.status IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = format('status %L does not fit event type %s',
                             NEW.status, NEW.type),
            HINT = 'only run_enqueued, run_started, run_completed, run_failed '
                'and run_cancelled carry a status';
    END IF;

    IF required_field = 'phase' AND coalesce(NEW.phase, '') = ''
        OR required_field = 'candidate_id' AND coalesce(NEW.candidate_id, '') = ''
        OR required_field = 'proposal_id' AND coalesce(NEW.proposal_id, '') = ''
    THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = format('event type %s requires a non-empty %s',
                             NEW.type, required_field);
    END IF;

    IF NEW.payload IS NOT NULL AND jsonb_typeof(NEW.payload) <> 'object' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = format('payload must be a JSON object, not %s',
                             jsonb_typeof(NEW.payload));
    END IF;

    IF NEW.run_id IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'not_null_violation',
            MESSAGE = 'an event needs a run_id',
            HINT = 'give the UUID of the run the event belongs to';
    END IF;

    -- Item 1: held until commit, so writers of one run queue behind each
    -- other, sequence order is commit order, and a rollback hands the
    -- number back.
    SELECT * INTO run_row FROM runs WHERE id = NEW.run_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('unknown run %s', NEW.run_id),
            HINT = 'create the run before publishing its events';
    END IF;

    -- Item 2: one step down the (run_id, seq) index.
    SELECT seq, xmin INTO latest_seq, latest_xmin
    FROM run_events WHERE run_id = NEW.run_id
    ORDER BY seq DESC LIMIT 1;

    -- Item 3. Checked before anything else is read: a snapshot that misses
    -- events could also miss the retried id or the terminal event.
    IF current_setting('transaction_isolation') IN ('repeatable read', 'serializable')
        AND latest_xmin IS DISTINCT FROM pg_current_xact_id()::xid
    THEN
        PERFORM selftune_check_snapshot(NEW.run_id, coalesce(latest_seq, 0) + 1);
    END IF;

    -- Checked under the run lock, so a retry of a committed write is always
    -- told the id is taken, never given a second event. It comes before the
    -- ended-run check: a retried terminal event must hear that its write
    -- succeeded, not that the run (which it ended itself) is over.
    IF NEW.id IS NOT NULL
        AND EXISTS (SELECT 1 FROM run_events WHERE id = NEW.id)
    THEN
        RAISE EXCEPTION USING
            ERRCODE = 'unique_violation',
            MESSAGE = format('event %s already exists', NEW.id),
            HINT = 'the write was already published; do not retry it';
    END IF;

    IF run_row.ended_at IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('run %s has already ended with status %s',
                             NEW.run_id, run_row.status),
            HINT = 'no event may follow run_completed, run_failed or run_cancelled';
    END IF;

    NEW.id := coalesce(NEW.id, selftune_uuidv7());
    NEW.org_id := run_row.org_id;
    NEW.seq := coalesce(latest_seq, 0) + 1;
    NEW.created_at := clock_timestamp();

    -- Item 4: only a status changes the run's row.
    IF NEW.status IS NOT NULL THEN
        UPDATE runs SET
            status = NEW.status,
            updated_at = NEW.created_at,
            ended_at = CASE
                WHEN NEW.type IN ('run_completed', 'run_failed', 'run_cancelled')
                THEN NEW.created_at
            END
        WHERE id = NEW.run_id;
    END IF;

    RETURN NEW;
END;
$$
"""

# Item 3. The nested INSERT runs in the subtransaction of the EXCEPTION
# block and never survives it: the unique index either refuses the number,
# or passes it and the row then fails its organisation's foreign-key check
# at the end of the INSERT. Either way the subtransaction rolls back, with
# the row and the notification its AFTER trigger would have queued.
SNAPSHOT_CHECK_FUNCTION = f"""
CREATE FUNCTION selftune_check_snapshot(run uuid, next_seq bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    violated text;
BEGIN
    INSERT INTO run_events (id, run_id, org_id, seq, type, created_at)
    VALUES (gen_random_uuid(), run, run, next_seq, '{PROBE_TYPE}', clock_timestamp());
    -- Reached only if an organisation shares the run's id: roll back all
    -- the same.
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation';
EXCEPTION
    WHEN foreign_key_violation THEN
        RETURN;
    WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS violated = CONSTRAINT_NAME;
        IF violated IS DISTINCT FROM 'run_events_run_id_seq' THEN
            RAISE;
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'serialization_failure',
            MESSAGE = format('run %s has events that this transaction''s '
                             'snapshot does not show', run),
            HINT = 'another transaction published to the run after this one '
                'took its snapshot; retry the whole transaction';
END;
$$
"""

# Writers lock run_events (their INSERT) before runs (the trigger's row
# lock); taking both up front in that order keeps a migration run under
# live writers from deadlocking with them (seen as 40P01 in a writer).
LOCK_AS_WRITERS_DO = "LOCK TABLE run_events, runs IN ACCESS EXCLUSIVE MODE"

UPDATED_AT_COMMENT = """
COMMENT ON COLUMN runs.updated_at IS
    'When the run''s status last changed (the event that carried it)'
"""


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each one. The check comes
    # first because the trigger function names it.
    op.execute(LOCK_AS_WRITERS_DO)
    op.execute(SNAPSHOT_CHECK_FUNCTION)
    op.execute(PUBLISH_FUNCTION)
    op.execute("ALTER TABLE runs DROP COLUMN last_seq")
    op.execute(UPDATED_AT_COMMENT)


def downgrade() -> None:
    # Revision 0001's function, read from its own file so that the two
    # cannot drift apart; it needs the counter back, filled from the index
    # (a pruned run has no events left and restarts at 0, but it has ended
    # and takes no more events).
    script = op.get_context().script
    if script is None:  # pragma: no cover - Alembic always passes its scripts
        raise RuntimeError("downgrade needs Alembic's script directory")
    first = script.get_revision("0001").module

    op.execute("ALTER TABLE runs ADD COLUMN last_seq bigint NOT NULL DEFAULT 0")
    op.execute(
        """
        UPDATE runs SET last_seq = latest.seq
        FROM (
            SELECT run_id, max(seq) AS seq FROM run_events GROUP BY run_id
        ) AS latest
        WHERE runs.id = latest.run_id
        """
    )
    op.execute("COMMENT ON COLUMN runs.updated_at IS NULL")
    op.execute("DROP FUNCTION selftune_publish_event() CASCADE")
    for statement in first.PUBLISH_TRIGGER:
        op.execute(statement)
    op.execute("DROP FUNCTION selftune_check_snapshot(uuid, bigint)")

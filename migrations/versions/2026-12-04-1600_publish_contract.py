"""Organisations, keys, runs and run_events with the publish contract.

SPEC section 3 lives here, in the database, so that a writer in any language
gets it from one plain INSERT: the triggers validate the event, give it its id,
organisation, created_at and per-run sequence, keep the run's status, and
notify listeners on commit.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 16:00
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


TABLES = [
    """
CREATE TABLE organisations (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name <> ''),
    has_runtime boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
)""",
    """
CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organisations (id),
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
)""",
    "CREATE INDEX api_keys_org_id ON api_keys (org_id)",
    "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
    """
CREATE TABLE runs (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organisations (id),
    status text NOT NULL DEFAULT 'queued',
    -- The sequence of the run's latest event. The insert trigger bumps it
    -- under the row lock, which is what makes sequences gap-free and in
    -- commit order (see docs/ARCHITECTURE.md).
    last_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz
)""",
    "CREATE INDEX runs_org_id ON runs (org_id)",
    """
CREATE TABLE run_events (
    id uuid PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES runs (id),
    org_id uuid NOT NULL REFERENCES organisations (id),
    seq bigint NOT NULL,
    type text NOT NULL,
    status text,
    phase text,
    candidate_id text,
    proposal_id text,
    payload jsonb,
    created_at timestamptz NOT NULL,
    CONSTRAINT run_events_run_id_seq UNIQUE (run_id, seq)
)""",
]

# PostgreSQL 15 and 16 have no uuidv7(); this builds one from a random UUID:
# the first 48 bits become the Unix time in whole milliseconds (truncated, not
# rounded, so an id never carries a time after its event's created_at) and
# the version nibble becomes 7 (RFC 9562, section 5.7).
UUIDV7 = [
    """
CREATE FUNCTION selftune_uuidv7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(
            set_bit(
                overlay(
                    uuid_send(gen_random_uuid())
                    PLACING substring(
                        int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                        FROM 3
                    )
                    FROM 1 FOR 6
                ),
                52, 1
            ),
            53, 1
        ),
        'hex'
    )::uuid
$$
""",
]

# Every rule a writer can break raises with a message naming the rule and a
# SQLSTATE a client can branch on: check_violation for a malformed event,
# not_null_violation for a missing run_id, foreign_key_violation for an
# unknown run, object_not_in_prerequisite_state for an event after the end,
# unique_violation for a reused id.
PUBLISH_TRIGGER = [
    """
CREATE FUNCTION selftune_publish_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    required_field text;
    allowed_statuses text[];
    run_row runs%ROWTYPE;
BEGIN
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

    -- The row lock taken here is held until commit: writers of one run queue
    -- behind each other, so sequence order is commit order, and a rollback
    -- hands the number back.
    SELECT * INTO run_row FROM runs WHERE id = NEW.run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('unknown run %s', NEW.run_id),
            HINT = 'create the run before publishing its events';
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
    NEW.seq := run_row.last_seq + 1;
    NEW.created_at := clock_timestamp();

    UPDATE runs SET
        last_seq = NEW.seq,
        status = coalesce(NEW.status, status),
        updated_at = NEW.created_at,
        ended_at = CASE
            WHEN NEW.type IN ('run_completed', 'run_failed', 'run_cancelled')
            THEN NEW.created_at
        END
    WHERE id = NEW.run_id;

    RETURN NEW;
END;
$$
""",
    """
CREATE TRIGGER run_events_publish
    BEFORE INSERT ON run_events
    FOR EACH ROW EXECUTE FUNCTION selftune_publish_event()
""",
]

# The payload is the run and the sequence, never the event: PostgreSQL caps
# it at 8000 bytes, and listeners read the rows themselves. NOTIFY is queued
# by the transaction and delivered only on commit, in commit order.
# https://www.postgresql.org/docs/current/sql-notify.html
NOTIFY_TRIGGER = [
    """
CREATE FUNCTION selftune_notify_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('selftune_run_events', NEW.run_id::text || ' ' || NEW.seq);
    RETURN NULL;
END;
$$
""",
    """
CREATE TRIGGER run_events_notify
    AFTER INSERT ON run_events
    FOR EACH ROW EXECUTE FUNCTION selftune_notify_event()
""",
]

# Events are an append-only log: a rewrite would break exactly-once resumes.
APPEND_ONLY_TRIGGER = [
    """
CREATE FUNCTION selftune_refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'object_not_in_prerequisite_state',
        MESSAGE = 'run_events is append-only: events cannot be updated';
END;
$$
""",
    """
CREATE TRIGGER run_events_append_only
    BEFORE UPDATE ON run_events
    FOR EACH ROW EXECUTE FUNCTION selftune_refuse_event_change()
""",
]


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each one.
    for statement in [
        *TABLES,
        *UUIDV7,
        *PUBLISH_TRIGGER,
        *NOTIFY_TRIGGER,
        *APPEND_ONLY_TRIGGER,
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE run_events, runs, api_keys, organisations")
    for function in [
        "selftune_publish_event",
        "selftune_notify_event",
        "selftune_refuse_event_change",
        "selftune_uuidv7",
    ]:
        op.execute(f"DROP FUNCTION {function}()")

"""Scoped read tokens, and runs whose history was pruned.

A read token lets a browser follow one run without ever holding the
organisation's API key; like keys, only its SHA-256 is stored. `pruned_at`
marks a run whose events were removed by `selftune-events prune`, so that a
stream for it can answer 410 Gone instead of an empty history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:30
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE read_tokens (
            token_hash bytea PRIMARY KEY,
            run_id uuid NOT NULL REFERENCES runs (id),
            org_id uuid NOT NULL REFERENCES organisations (id),
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX read_tokens_expires_at ON read_tokens (expires_at)")
    op.execute("ALTER TABLE runs ADD COLUMN pruned_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE runs DROP COLUMN pruned_at")
    op.execute("DROP TABLE read_tokens")

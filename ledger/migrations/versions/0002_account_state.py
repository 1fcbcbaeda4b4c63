"""Per-account reconciliation and rate-limit state: account_state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from ledger.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_state",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("watermark", UTCDateTime()),
        sa.Column("poll_scheduled_at", UTCDateTime()),
        sa.Column("lease_token", sa.String(36)),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("last_poll_started_at", UTCDateTime()),
        sa.Column("last_success_at", UTCDateTime()),
        sa.Column("last_failure_at", UTCDateTime()),
        sa.Column("last_error", sa.Text),
        sa.Column("last_found", sa.Integer),
        sa.Column("last_new", sa.Integer),
        sa.Column("paused_until", UTCDateTime()),
        sa.Column("pause_reason", sa.Text),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "account", name="uq_account_state_key"),
    )


def downgrade() -> None:
    op.drop_table("account_state")

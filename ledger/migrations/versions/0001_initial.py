"""The initial ledger: recordings, deliveries, recording_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from ledger.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("recording_key", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("call_id", sa.String(256)),
        sa.Column("hints", sa.JSON, nullable=False),
        sa.Column("parent_id", Id, sa.ForeignKey("recordings.id")),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("enqueued_at", UTCDateTime()),
        sa.Column("claimed_at", UTCDateTime()),
        sa.Column("claim_token", sa.String(36)),
        sa.Column("last_error", sa.Text),
        sa.Column("storage_key", sa.String(1024)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("stored_at", UTCDateTime()),
        sa.UniqueConstraint("provider", "account", "recording_key", name="uq_recordings_key"),
    )
    op.create_index("ix_recordings_state_enqueued", "recordings", ["state", "enqueued_at"])
    op.create_index("ix_recordings_state_updated", "recordings", ["state", "updated_at"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("delivery_id", sa.String(256), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "account", "delivery_id", name="uq_deliveries_key"),
    )
    op.create_table(
        "recording_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("recording_id", Id, sa.ForeignKey("recordings.id"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_recording_events_recording", "recording_events", ["recording_id", "id"])


def downgrade() -> None:
    op.drop_table("recording_events")
    op.drop_table("deliveries")
    op.drop_table("recordings")

"""sink ledger: cluster mode's batch plans, journal sequence and dedup claims

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row: the next journal sequence number a sink batch may take (see meterd.backends.sql.ledger).
    op.create_table(
        "sink_sequence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("next", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO sink_sequence (id, next) VALUES (1, 1)")
    op.create_table(
        "sink_batches",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("first_offset", sa.BigInteger(), nullable=False),
        sa.Column("last_offset", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("stored", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", "part", "first_offset"),
    )
    op.create_index("sink_batches_unstored", "sink_batches", ["stored", "first_seq"])
    op.create_table(
        "dedup_claims",
        sa.Column("key", sa.LargeBinary(length=16), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("msg_offset", sa.BigInteger(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("dedup_claims_claimed_at", "dedup_claims", ["claimed_at"])
    # How far `meterd worker` has followed the stored batches (by seq), per feed.
    op.create_table(
        "feed_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("feed_cursors")
    op.drop_table("dedup_claims")
    op.drop_table("sink_batches")
    op.drop_table("sink_sequence")

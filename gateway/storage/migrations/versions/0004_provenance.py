"""Which model wrote which part of a logged response: ``requests.provenance``, a nullable JSON list of
``{"model", "text"}`` runs in order (consecutive pieces of one model merged), whose texts concatenate to
``response``.

It is kept under the same switch as the response text (a key or gateway that does not log prompts logs no runs) and
is NULL for answers of one plain backend, where ``model_chosen`` wrote everything; rows logged before this revision
keep NULL. The operator's page (``/ui``) colours the response by these runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("provenance", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("provenance")

"""Indexes for the operator's page (``/ui``): a covering index of the columns window aggregates read, latency in
order per route, requests by chosen model over time, and each key's spend.

The page aggregates per time bucket, route and key (``ix_requests_window`` holds every column those read, so they
scan the index and not the wide rows with prompts and decisions), reads latency percentiles off
``(route, latency_ms, created_at)`` without sorting, expands collaborations' usage for rows found by
``(model_chosen, created_at)``, and sums each key's spend from ``(key_id, created_at, cost_usd)`` alone;
``python -m bench.ui_load`` measures the page on a large log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-06-03
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


WINDOW_COLUMNS = ["created_at", "route", "key_id", "status", "cost_usd", "latency_ms", "prompt_tokens",
                  "completion_tokens"]


def upgrade() -> None:
    op.create_index("ix_requests_window", "requests", WINDOW_COLUMNS)
    op.create_index("ix_requests_route_latency_ms_created_at", "requests", ["route", "latency_ms", "created_at"])
    op.create_index("ix_requests_model_chosen_created_at", "requests", ["model_chosen", "created_at"])
    op.create_index("ix_requests_key_id_created_at_cost_usd", "requests", ["key_id", "created_at", "cost_usd"])


def downgrade() -> None:
    op.drop_index("ix_requests_key_id_created_at_cost_usd", table_name="requests")
    op.drop_index("ix_requests_model_chosen_created_at", table_name="requests")
    op.drop_index("ix_requests_route_latency_ms_created_at", table_name="requests")
    op.drop_index("ix_requests_window", table_name="requests")

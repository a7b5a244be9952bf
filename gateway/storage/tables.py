"""The schema: ``requests`` (one row per request), ``feedback`` (outcomes attached later), ``api_keys`` and
``agents`` (TCAR agents: a route with a description, owned by a key or global).

Times are Unix seconds (float) so SQLite and Postgres compare them alike. JSON columns hold the router's decision,
the per-model usage list (``gateway.usage.Usage.to_list()``), the prompt messages and the response's provenance runs
(``[{"model", "text"}]``, ``gateway.provenance``). The migration scripts in
``migrations/versions`` create exactly this; a test compares them.

What it leaves out: reading and writing (``request_log``, ``keys``) and migrations (``db``).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

requests = Table(
    "requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("route", String(200), nullable=True),
    Column("model_chosen", String(200), nullable=True),
    Column("decision", JSON(none_as_null=True), nullable=True),
    Column("usage", JSON(none_as_null=True), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Column("status", String(16), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("stream", Boolean, nullable=False, default=False),
    Column("prompt", JSON(none_as_null=True), nullable=True),
    Column("response", Text, nullable=True),
    Column("eval_run", String(64), nullable=True),
    # 0004: which model wrote which part of ``response`` (gateway.provenance); NULL for one plain backend's answer
    Column("provenance", JSON(none_as_null=True), nullable=True),
    Index(None, "created_at"),
    Index(None, "eval_run"),
    Index(None, "key_id", "created_at"),
    # 0003, for the page at /ui (gateway.storage.log_stats): a covering index of what window aggregates read, so
    # they scan the index and not the wide rows; latency in order per route (percentiles without a sort); per
    # chosen model over time; each key's spend (covering).
    Index("ix_requests_window", "created_at", "route", "key_id", "status", "cost_usd", "latency_ms", "prompt_tokens",
          "completion_tokens"),
    Index(None, "route", "latency_ms", "created_at"),
    Index(None, "model_chosen", "created_at"),
    Index(None, "key_id", "created_at", "cost_usd"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("score", Float, nullable=False),
    Column("label", String(200), nullable=True),
    Column("key_id", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
    Index(None, "request_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("budget_usd", Float, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("log_prompts", Boolean, nullable=False, default=True),
    Column("revoked", Boolean, nullable=False, default=False),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("route", String(200), nullable=False),
    Column("key_id", String(64), nullable=True),  # owner; NULL: a global agent (created by the admin)
    Column("created_at", Float, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Index(None, "key_id"),
)

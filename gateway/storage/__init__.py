"""The gateway's storage: the SQL request log, feedback, and API keys hashed at rest.

``db`` makes engines and runs the Alembic migrations shipped in ``migrations/``; ``tables`` declares the schema;
``request_log`` writes one row per request without blocking the event loop (retry, then spool to disk);
``keys`` creates, looks up and revokes API keys. What it leaves out: Redis state (limits, budgets) and HTTP.
"""

from gateway.storage.db import make_engine, migrate, ping
from gateway.storage.keys import ApiKey, KeyStore, hash_key
from gateway.storage.request_log import LogRow, RequestLog

__all__ = ["ApiKey", "KeyStore", "LogRow", "RequestLog", "hash_key", "make_engine", "migrate", "ping"]

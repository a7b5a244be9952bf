"""API keys, hashed at rest: create (the plaintext is shown once), look up, change, revoke, list.

A key is ``tdm-`` followed by 32 random bytes in URL-safe base64; only ``hash_key(key)`` (SHA-256 hex) is stored,
so a stolen database holds no usable key. Each key may carry a dollar budget, requests-per-minute and
tokens-per-minute limits, and whether its prompts are logged.

``tandem keys`` (``gateway.cli``) and the admin endpoints (``gateway.admin_keys``, which the page at ``/ui`` uses)
call the same methods here and render a key with the same :meth:`ApiKey.to_json`, so the two cannot disagree.

What it leaves out: enforcing limits and budgets (Redis, ``gateway.limits``), the admin key (config), HTTP auth
headers, and caching lookups. The methods are synchronous: call them from a worker thread inside the event loop.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, insert, select, update

from gateway.storage.tables import api_keys

KEY_PREFIX = "tdm-"
UNCHANGED: Final = object()
"""Default of :meth:`KeyStore.update`'s fields: leave the stored value as it is (None clears a limit)."""
EDITABLE = ("name", "budget_usd", "rpm", "tpm", "log_prompts")
"""The fields :meth:`KeyStore.update` may change."""


def hash_key(plaintext: str) -> str:
    """SHA-256 of the key's UTF-8 bytes, lowercase hex (64 characters)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def new_plaintext_key() -> str:
    """A fresh key: ``tdm-`` + 32 random bytes, URL-safe base64 without padding."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    """One key's stored record (never the plaintext)."""

    id: str
    name: str | None
    created_at: float
    budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    log_prompts: bool = True
    revoked: bool = False

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        m = row._mapping
        return cls(
            id=m["id"], name=m["name"], created_at=m["created_at"], budget_usd=m["budget_usd"], rpm=m["rpm"],
            tpm=m["tpm"], log_prompts=bool(m["log_prompts"]), revoked=bool(m["revoked"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The record as the CLI prints it and the admin API returns it (never the plaintext or its hash)."""
        return {"id": self.id, "object": "api_key", "name": self.name, "created_at": self.created_at,
                "budget_usd": self.budget_usd, "rpm": self.rpm, "tpm": self.tpm, "log_prompts": self.log_prompts,
                "revoked": self.revoked}


def _check_limits(budget_usd: float | None, rpm: int | None, tpm: int | None) -> None:
    if budget_usd is not None and not budget_usd >= 0:
        raise ValueError(f"budget_usd must be >= 0, got {budget_usd}")
    for name, v in (("rpm", rpm), ("tpm", tpm)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


class KeyStore:
    """API keys in the ``api_keys`` table of a migrated database."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def create(self, name: str | None = None, budget_usd: float | None = None, rpm: int | None = None,
               tpm: int | None = None, log_prompts: bool = True) -> tuple[str, ApiKey]:
        """Store a new key; returns ``(plaintext, record)``. The plaintext cannot be recovered later."""
        _check_limits(budget_usd, rpm, tpm)
        plaintext = new_plaintext_key()
        key = ApiKey(id="key_" + secrets.token_hex(8), name=name, created_at=time.time(), budget_usd=budget_usd,
                     rpm=rpm, tpm=tpm, log_prompts=log_prompts, revoked=False)
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(
                id=key.id, name=key.name, key_hash=hash_key(plaintext), created_at=key.created_at,
                budget_usd=key.budget_usd, rpm=key.rpm, tpm=key.tpm, log_prompts=key.log_prompts, revoked=False,
            ))
        return plaintext, key

    def lookup(self, plaintext: str) -> ApiKey | None:
        """The live key whose hash matches ``plaintext``; None for unknown or revoked keys."""
        if not plaintext:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == hash_key(plaintext))).first()
        if row is None or row._mapping["revoked"]:
            return None
        return ApiKey.from_row(row)

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if row is None else ApiKey.from_row(row)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when no such key exists."""
        with self.engine.begin() as conn:
            n = conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked=True)).rowcount
        return n > 0

    def update(self, key_id: str, *, name: Any = UNCHANGED, budget_usd: Any = UNCHANGED, rpm: Any = UNCHANGED,
               tpm: Any = UNCHANGED, log_prompts: Any = UNCHANGED) -> ApiKey | None:
        """Change the given fields of a key (revoked or not) and return the new record; None when no such key.
        A field left at :data:`UNCHANGED` keeps its value; ``None`` clears a limit (no budget, no rpm/tpm cap)."""
        given = {k: v for k, v in (("name", name), ("budget_usd", budget_usd), ("rpm", rpm), ("tpm", tpm),
                                   ("log_prompts", log_prompts)) if v is not UNCHANGED}
        _check_limits(given.get("budget_usd"), given.get("rpm"), given.get("tpm"))
        if given.get("log_prompts", False) is None:
            raise ValueError("log_prompts must be true or false, got None")
        with self.engine.begin() as conn:
            if given:
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**given))
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if row is None else ApiKey.from_row(row)

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        """All keys, oldest first."""
        q = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked.is_(False))
        with self.engine.connect() as conn:
            return [ApiKey.from_row(r) for r in conn.execute(q)]

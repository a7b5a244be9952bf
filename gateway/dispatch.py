"""Routes and dispatch: resolve a client's ``model`` to a route, then call it with retries and fallbacks.

A :class:`RouteTable` maps names to :class:`BackendRoute`. :func:`call_whole` and :func:`open_stream` walk the
route's chain — the route itself, then its fallbacks in order — retrying retryable failures (connection refused,
timeouts, 5xx) up to each route's ``retries`` with a short backoff. A client mistake (``InvalidRequest``) is never
retried. A stream is only "open" once its first event has arrived, so a backend that fails before streaming
anything still falls back; after that a failure reaches the client as an SSE error.

With a :class:`~gateway.cooldown.CooldownStore`, a backend that keeps failing is skipped (to its fallbacks) while
it cools down, and every retryable failure and success is reported to the store.

A route with deployments (:func:`deployments_route`) has a :class:`~gateway.balancer.Balancer` and one view per
replica (a :class:`BackendRoute` of the same name on that replica's backend, so pricing, the log's ``model_chosen``
and the response's ``model`` are the replica's). Its attempts go to the replicas in the balancer's order: after a
retryable failure the next attempt goes to the strategy's next choice among the replicas not yet failed (and not
cooling), each replica once, up to ``max(retries + 1, replicas)`` attempts (more than that starts the round again,
after a short backoff); then the route's fallbacks. A plain route never touches a balancer.

Both route types describe themselves (:meth:`BackendRoute.describe` for ``GET /v1/models``, ``target`` in words for
the start-up log), so callers never probe which kind they hold.

A :class:`RouterRoute` that chose a candidate names what to try if that candidate's chain fails: its other
candidates in the router's order (best score first; ``candidate_fallback``), then its own ``fallbacks``. The
innermost router's list comes first. Candidates that are routers themselves are not tried there (they would need a
decision of their own).

What it leaves out: how routers decide and collaborations generate (``routers``, ``collab``), the cooldown rule
itself (``gateway.cooldown``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.backends.base import (
    CAP_COMPLETIONS,
    CAP_LOGPROBS,
    CAP_N,
    CAP_TOOLS,
    Backend,
    ChatRequest,
    CompletionRequest,
    StreamEvent,
)
from gateway.balancer import Balancer, HeldStream, ReplicaState
from gateway.cooldown import CooldownStore
from gateway.errors import BackendError, InvalidRequest, ModelNotFound, TandemError
from gateway.tracing import Span
from routers.base import RouteQuery, Router

ALIASES = ("auto", "default")
T = TypeVar("T")


@dataclass
class BackendRoute:
    """A route that calls one backend, with retries and fallback routes."""

    name: str
    backend: Backend
    fallbacks: list[str] = field(default_factory=list)
    retries: int = 1
    description: str = ""
    kind: str = "backend"
    balancer: Balancer | None = None  # deployments: picks one of ``replicas`` per request (None: ``backend`` alone)
    replicas: tuple[BackendRoute, ...] = ()  # deployments: one view per replica, in the balancer's order
    replica: ReplicaState | None = None  # on a replica's view: that replica's state

    @property
    def target(self) -> str:
        """What answers for the route, in words."""
        if self.balancer is not None:
            names = ", ".join(r.backend.name for r in self.replicas)
            return f"{len(self.replicas)} deployments ({self.balancer.strategy}): {names}"
        return f"{self.backend.kind} backend {self.backend.name}"

    def describe(self) -> dict[str, Any]:
        """The route's fields in ``GET /v1/models``: kind, backend, candidates (None here), description; with
        deployments also ``deployments`` (their backends) and ``strategy``."""
        d = {"kind": self.kind, "backend": self.backend.name, "candidates": None, "description": self.description}
        if self.balancer is not None:
            d["deployments"] = [r.backend.name for r in self.replicas]
            d["strategy"] = self.balancer.strategy
        return d


def deployments_route(name: str, backends: Sequence[Backend], balancer: Balancer, fallbacks: Sequence[str] = (),
                      retries: int = 1, description: str = "") -> BackendRoute:
    """A route over several deployments of one model (``backends[i]`` is ``balancer.replicas[i]``); its own
    ``backend`` is the first one's (capabilities, prompt-token estimates)."""
    if [b.name for b in backends] != [r.name for r in balancer.replicas]:
        raise ValueError(f"route '{name}': the balancer's replicas are not the deployments' backends")
    views = tuple(BackendRoute(name, b, list(fallbacks), retries, description, replica=st)
                  for b, st in zip(backends, balancer.replicas, strict=True))
    return BackendRoute(name, backends[0], list(fallbacks), retries, description, balancer=balancer, replicas=views)


@dataclass
class RouterRoute:
    """A route whose query-level router picks one of ``candidates`` per request (``routers`` package)."""

    name: str
    router: Router
    candidates: list[str]
    model_map: dict[str, str] = field(default_factory=dict)  # router's model name -> candidate route
    description: str = ""
    kind: str = "router"
    fallbacks: list[str] = field(default_factory=list)  # tried after the candidates, in order
    candidate_fallback: bool = True  # on failure, the other candidates in the router's order come first

    @property
    def target(self) -> str:
        """What answers for the route, in words."""
        return f"{self.kind} over {', '.join(self.candidates)}"

    def describe(self) -> dict[str, Any]:
        """The route's fields in ``GET /v1/models``: kind, backend (None here), candidates, description."""
        return {"kind": self.kind, "backend": None, "candidates": self.candidates, "description": self.description}

    def pick(self, query: Any) -> tuple[str, dict[str, Any]]:
        """The candidate route for one request, and the decision as logged (with ``fallbacks``: the routes to try,
        in order, if the chosen one fails). A router that fails falls back to the first candidate (and says so), so
        a broken artifact never fails requests."""
        to_router = {route: model for model, route in self.model_map.items()}
        names = [to_router.get(c, c) for c in self.candidates]
        try:
            d = self.router.decide(query, names)
        except Exception as e:  # noqa: BLE001 - any router failure degrades to the first candidate
            chosen = self.candidates[0]
            return chosen, {"route": self.name, "kind": "router", "router": self.router.name,
                            "chosen": chosen, "scores": {}, "reason": f"router failed ({e}); first candidate",
                            "fallbacks": self.fallbacks_after(chosen, {})}
        chosen = self.model_map.get(d.route, d.route)
        scores = {self.model_map.get(k, k): float(v) for k, v in d.scores.items()}
        return chosen, {"route": self.name, "kind": "router", "router": self.router.name, "chosen": chosen,
                        "scores": scores, "reason": d.reason, "fallbacks": self.fallbacks_after(chosen, scores)}

    def fallbacks_after(self, chosen: str, scores: dict[str, float]) -> list[str]:
        """After ``chosen``: the other candidates by score, best first (unscored ones after, in list order), if
        ``candidate_fallback``; then ``fallbacks``."""
        others = [c for c in self.candidates if c != chosen] if self.candidate_fallback else []
        return sorted(others, key=lambda c: -scores.get(c, -math.inf)) + list(self.fallbacks)

    def warm(self) -> float:
        """One decision on a throwaway prompt, so the first real request does not pay for loading (and tracing) the
        router's sentence-embedding model. Blocking; returns the seconds it took (``tandem serve`` prints them at
        start-up: "router route NAME: warm in …s")."""
        t0 = time.perf_counter()
        self.pick(RouteQuery(prompt="tandem warm-up: which route answers this?"))
        return time.perf_counter() - t0


Route = BackendRoute | RouterRoute


@dataclass
class Attempted:
    """Which route finally answered, and why (the routers' decisions that led there, then retries/fallbacks)."""

    route: BackendRoute
    reason: str
    failures: list[str] = field(default_factory=list)
    routed: list[dict[str, Any]] = field(default_factory=list)
    replica: dict[str, str] | None = None  # deployments: {"replica", "strategy", "replica_reason"}

    def decision(self, requested: str) -> dict[str, Any]:
        d = {"route": requested, "chosen": self.route.name, "backend": self.route.backend.name,
             "kind": self.routed[0]["kind"] if self.routed else self.route.kind, "reason": self.reason,
             "failures": self.failures}
        if self.replica is not None:
            d.update(self.replica)
        if self.routed:
            d["reason"] = "; ".join([r["reason"] for r in self.routed] + [self.reason])
            d["routers"] = self.routed
        return d


class RouteTable:
    """Named routes plus the default used for ``auto``/``default``."""

    def __init__(self, routes: dict[str, Route], default: str):
        if default not in routes:
            raise ValueError(f"default route '{default}' is not a route")
        self.routes = routes
        self.default = default

    def names(self) -> list[str]:
        return list(self.routes)

    def resolve(self, model: str) -> Route:
        if model in ALIASES:
            model = self.default
        route = self.routes.get(model)
        if route is None:
            raise ModelNotFound(model, self.names() + list(ALIASES))
        return route

    async def select(self, route: Route, query: Any) -> tuple[BackendRoute, list[dict[str, Any]]]:
        """Follow routers until a route that generates; returns it and the routers' decisions."""
        decisions: list[dict[str, Any]] = []
        for _ in range(8):
            if not isinstance(route, RouterRoute):
                return route, decisions
            chosen, d = await asyncio.to_thread(route.pick, query)  # embeddings may take milliseconds
            decisions.append(d)
            if chosen not in self.routes:
                raise BackendError(f"router '{route.name}' chose '{chosen}', which is not a route here")
            route = self.routes[chosen]
        raise InvalidRequest(f"route '{decisions[0]['route']}' nests routers more than 8 deep", param="model")

    def chain(self, route: BackendRoute, then: Sequence[str] = ()) -> list[BackendRoute]:
        """The route, then its fallbacks depth-first, then each route named in ``then`` with its own fallbacks
        (`router_fallbacks`); each route once, routers skipped."""
        out: list[BackendRoute] = []
        seen: set[str] = set()

        def walk(r: Route) -> None:
            if r.name in seen or not isinstance(r, BackendRoute):
                return
            seen.add(r.name)
            out.append(r)
            for f in r.fallbacks:
                walk(self.routes[f])

        walk(route)
        for name in then:
            walk(self.routes[name])
        return out

    @staticmethod
    def router_fallbacks(decisions: Sequence[dict[str, Any]]) -> list[str]:
        """What the routers that led to a route would try if it fails, the innermost router's list first."""
        return [name for d in reversed(decisions) for name in d.get("fallbacks", [])]


def required_capabilities(req: ChatRequest | CompletionRequest) -> dict[str, str]:
    """Capabilities the request needs, each with the request field that needs it."""
    need: dict[str, str] = {}
    if isinstance(req, ChatRequest):
        if req.n > 1:
            need[CAP_N] = "n"
        if req.tools:
            need[CAP_TOOLS] = "tools"
        if req.logprobs or req.top_logprobs:
            need[CAP_LOGPROBS] = "logprobs"
    else:
        need[CAP_COMPLETIONS] = "model"
        if req.logprobs:
            need[CAP_LOGPROBS] = "logprobs"
    return need


def check_capabilities(route: BackendRoute, req: ChatRequest | CompletionRequest) -> None:
    """A clear 400 when the route cannot do what the request asks (e.g. n > 1 on an in-process model)."""
    for cap, param in required_capabilities(req).items():
        if cap not in route.backend.capabilities:
            what = "/v1/completions" if cap == CAP_COMPLETIONS else f"'{param}'"
            raise InvalidRequest(f"route '{route.name}' (backend {route.backend.kind} '{route.backend.name}') "
                                 f"does not support {what}", param=param)


def _capable(route: BackendRoute, req: ChatRequest | CompletionRequest) -> bool:
    try:
        check_capabilities(route, req)
    except InvalidRequest:
        return False
    return True


def is_retryable(e: BaseException) -> bool:
    """Whether dispatch tries the same backend again after ``e`` (declared by the error class tree:
    ``gateway.errors.TandemError.retryable``)."""
    return isinstance(e, TandemError) and e.retryable


def _backend_names(chain: Sequence[BackendRoute]) -> list[str]:
    """Every backend the chain may call: each route's, or each of its replicas'."""
    return [v.backend.name for r in chain for v in (r.replicas or (r,))]


async def _with_fallbacks(table: RouteTable, route: BackendRoute, req: ChatRequest | CompletionRequest,
                          call: Callable[[BackendRoute], Awaitable[T]],
                          cooldowns: CooldownStore | None = None, then: Sequence[str] = (),
                          hold: Callable[[T, ReplicaState], T] | None = None) -> tuple[T, Attempted]:
    check_capabilities(route, req)
    failures: list[str] = []
    last: TandemError | None = None
    chain = table.chain(route, then)
    cooling: set[str] = set()
    if cooldowns is not None:
        names = [r.backend.name for r in chain]
        for r in chain:
            if r.replicas:  # deployments: their replicas' backends
                names = _backend_names(chain)
                break
        cooling = await cooldowns.cooling(names)
        if cooling:
            usable = set(_backend_names([r for i, r in enumerate(chain) if i == 0 or _capable(r, req)]))
            if usable <= cooling:
                cooling = set()  # every usable candidate cools: try them anyway rather than fail for cooldowns alone
    for i, r in enumerate(chain):
        if r.balancer is not None:
            got, err = await _try_replicas(r, i == 0, req, call, cooldowns, cooling, failures, hold)
            if got is not None:
                return got
            last = err or last
            continue
        if r.backend.name in cooling:
            failures.append(f"{r.name}: cooling down after repeated failures")
            continue
        if i > 0:
            try:
                check_capabilities(r, req)
            except InvalidRequest:
                failures.append(f"{r.name}: lacks a needed capability")
                continue
        for attempt in range(r.retries + 1):
            try:
                out = await call(r)
            except BackendError as e:
                last = e
                failures.append(f"{r.name}: {e.message}")
                if not is_retryable(e):
                    break
                if cooldowns is not None and await cooldowns.failure(r.backend.name):
                    break  # it just started cooling: go on to the fallbacks
                if attempt < r.retries:
                    await asyncio.sleep(0.05 * (2**attempt))
                continue
            if cooldowns is not None:
                await cooldowns.success(r.backend.name)
            reason = "direct route" if i == 0 and attempt == 0 else (
                f"retry {attempt} of route {r.name}" if i == 0 else f"fallback to {r.name}")
            return out, Attempted(r, reason, failures)
    assert last is not None
    raise last


async def _try_replicas(route: BackendRoute, first: bool, req: ChatRequest | CompletionRequest,
                        call: Callable[[BackendRoute], Awaitable[T]], cooldowns: CooldownStore | None,
                        cooling: set[str], failures: list[str], hold: Callable[[T, ReplicaState], T] | None
                        ) -> tuple[tuple[T, Attempted] | None, TandemError | None]:
    """A deployments route's attempts (the module docstring's rule): the answer and how it was reached, or None and
    the last error. ``hold`` takes over a successful attempt's in-flight count (a stream keeps it until it ends)."""
    bal = route.balancer
    assert bal is not None
    views = route.replicas
    out_of_play: set[int] = set()  # cooling, lacking a capability, or cooling since it failed here
    for j, v in enumerate(views):
        if v.backend.name in cooling:
            out_of_play.add(j)
            failures.append(f"{route.name}: replica {v.backend.name}: cooling down after repeated failures")
        elif (j > 0 or not first) and not _capable(v, req):
            out_of_play.add(j)
            failures.append(f"{route.name}: replica {v.backend.name}: lacks a needed capability")
    if isinstance(req, ChatRequest):
        key = bal.request_key(req.messages, None)
    else:
        key = bal.request_key(None, req.prompt)
    attempts = max(route.retries + 1, len(views) - len(out_of_play))
    exclude = set(out_of_play)
    failed: list[str] = []
    last: TandemError | None = None
    rounds = 0
    while len(failed) < attempts:
        pick = bal.choose(key, exclude)
        if pick is None:  # every replica in play failed once: start the round again
            if len(out_of_play) == len(views):
                break
            await asyncio.sleep(0.05 * (2**rounds))
            rounds += 1
            exclude = set(out_of_play)
            continue
        j, why = pick
        v = views[j]
        st = bal.replicas[j]
        st.inflight += 1
        held = False
        t0 = time.perf_counter()
        try:
            out = await call(v)
            st.observe(time.perf_counter() - t0)
            if hold is not None:
                out, held = hold(out, st), True
        except BackendError as e:
            last = e
            failures.append(f"{route.name}: replica {v.backend.name}: {e.message}")
            if not is_retryable(e):
                return None, e
            failed.append(v.backend.name)
            exclude.add(j)
            if cooldowns is not None and await cooldowns.failure(v.backend.name):
                out_of_play.add(j)  # it just started cooling: not tried again for this request
            continue
        finally:
            if not held:
                st.inflight -= 1
        if cooldowns is not None:
            await cooldowns.success(v.backend.name)
        if not first:
            reason = f"fallback to {route.name}"
        elif failed:
            reason = f"retry on replica {v.backend.name} after {', '.join(failed)} failed"
        else:
            reason = "direct route"
        return (out, Attempted(v, reason, failures, replica={"replica": v.backend.name, "strategy": bal.strategy,
                                                                "replica_reason": why})), None
    return None, last


async def call_whole(table: RouteTable, route: BackendRoute, req: ChatRequest | CompletionRequest,
                     cooldowns: CooldownStore | None = None, then: Sequence[str] = (), span: Span | None = None):
    """A non-streaming chat or completion through the route's chain (then the routes in ``then``); each backend
    call is a child span of ``span`` (``gateway.tracing``). Returns (ChatResult or CompletionResult, Attempted,
    backend seconds)."""

    async def call(r: BackendRoute):
        t0 = time.perf_counter()
        res = await (r.backend.chat(req) if isinstance(req, ChatRequest) else r.backend.complete(req))
        return res, time.perf_counter() - t0

    if span is not None:
        call = span.wrap_call(call)
    (res, secs), att = await _with_fallbacks(table, route, req, call, cooldowns, then)
    return res, att, secs


async def open_stream(table: RouteTable, route: BackendRoute, req: ChatRequest | CompletionRequest,
                      cooldowns: CooldownStore | None = None, then: Sequence[str] = (), span: Span | None = None
                      ) -> tuple[StreamEvent | None, AsyncGenerator[StreamEvent, None], Attempted, float]:
    """Start streaming through the chain (then the routes in ``then``); returns once the first event arrived (or the
    stream ended empty). Each backend call is a child span of ``span`` until its first event.
    Returns (first event, the rest, which route, seconds waited for the first event)."""

    async def call(r: BackendRoute):
        t0 = time.perf_counter()
        it = (r.backend.stream_chat(req) if isinstance(req, ChatRequest) else r.backend.stream_complete(req))
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await _aclose(it)
            raise
        return first, it, time.perf_counter() - t0

    if span is not None:
        call = span.wrap_call(call)
    (first, it, secs), att = await _with_fallbacks(table, route, req, call, cooldowns, then, _hold_stream)
    return first, it, att, secs


def _hold_stream(opened: tuple[StreamEvent | None, AsyncGenerator[StreamEvent, None], float], state: ReplicaState
                 ) -> tuple[StreamEvent | None, AsyncGenerator[StreamEvent, None], float]:
    """An opened stream on a replica keeps the replica's in-flight count until it ends."""
    first, it, secs = opened
    return first, HeldStream(it, state), secs


async def _aclose(it: AsyncGenerator[StreamEvent, None]) -> None:
    try:
        await it.aclose()
    except Exception:  # noqa: BLE001 - closing a broken stream must not hide the real error
        pass

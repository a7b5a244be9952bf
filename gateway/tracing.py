"""OpenTelemetry traces of requests, with the GenAI semantic conventions — or nothing at all.

One span per request, named ``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat auto``, ``text_completion
small``), kind SERVER, with the request's GenAI attributes (``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
``gen_ai.request.temperature``, …), the answer's (``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``) and tandem's own (``tandem.route``, ``tandem.decision.reason``, ``tandem.cost_usd``,
``tandem.status``, ``tandem.cache``, …). Its children:

* ``route {name}`` — the routers' decision (chosen route, reason, scores) when the requested route is a router;
* ``{operation} {backend}`` (kind CLIENT) — one per backend call made by dispatch, so retries and fallbacks show as
  sibling spans (``tandem.attempt`` counts the calls of one route, ``tandem.fallback`` marks a fallback route's); a
  failed call has status ERROR and ``error.type``. A streamed call's span ends when its first event arrived (the
  request span covers the whole stream);
* ``member {backend}`` — one per model the request's usage lists when it lists several (a collaboration's members,
  TCAR's agents) with that model's tokens and cost. The collaboration runtime does not time its members, so these
  spans cover the request's backend time, not each member's own.

Tracing is on when the standard variables ask for OTLP: ``OTEL_TRACES_EXPORTER`` names ``otlp`` (or ``console``),
or it is unset and ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
(:func:`tracing_settings`, a pure function). Spans go through a ``BatchSpanProcessor`` (``OTEL_BSP_*``) to the
OTLP/HTTP protobuf exporter, which reads its endpoint, headers and timeout from the ``OTEL_EXPORTER_OTLP_*``
variables; ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name the service (default ``tandem``). Otherwise
:class:`NoTracer` hands out one :class:`NoSpan` whose methods do nothing, and ``opentelemetry`` is never imported
(``python -m bench.gateway_overhead --json`` measures the hot path with tracing off).

What it leaves out: trace context from incoming ``traceparent`` headers (a request span is always a root), OTLP/gRPC
and HTTP/JSON, metrics and logs over OTLP (metrics are Prometheus, ``gateway.metrics``), prompt and completion text
in spans (the request log holds those, under its own ``log_prompts`` switch).
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.backends.base import ChatRequest, CompletionRequest
from gateway.errors import ConfigError
from gateway.usage import Usage

log = logging.getLogger("tandem")

T = TypeVar("T")
R = TypeVar("R", bound="CallTarget")
OPERATIONS = {"chat": "chat", "completions": "text_completion"}
"""Endpoint of the request flow → ``gen_ai.operation.name``."""
EXPORTERS = ("otlp", "console")
"""Values of ``OTEL_TRACES_EXPORTER`` this gateway carries out (``none`` turns tracing off)."""


class CallTarget(Protocol):
    """What a traced backend call names: the route it walks (``gateway.dispatch.BackendRoute`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def backend(self) -> Any: ...  # a gateway.backends.base.Backend: its ``name`` and ``kind``


# ---------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TracingSettings:
    """Which exporters the environment asks for (never empty)."""

    exporters: tuple[str, ...]


def tracing_settings(env: Mapping[str, str]) -> TracingSettings | None:
    """The tracing the standard ``OTEL_*`` variables ask for; None: tracing off. Raises ConfigError for an exporter
    or protocol this gateway does not carry (it never silently drops spans someone asked for)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        exporters = tuple(dict.fromkeys(e.strip() for e in named.split(",") if e.strip()))
        unknown = [e for e in exporters if e not in (*EXPORTERS, "none")]
        if unknown:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {unknown}; tandem exports with "
                              f"{' or '.join(EXPORTERS)} (or none)", param="OTEL_TRACES_EXPORTER")
        exporters = tuple(e for e in exporters if e != "none")
    else:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        exporters = ("otlp",) if endpoint and endpoint.strip() else ()
    if not exporters:
        return None
    if "otlp" in exporters:
        protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or
                    "http/protobuf").strip().lower()
        if protocol != "http/protobuf":
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: tandem exports OTLP over HTTP with protobuf "
                              "only (http/protobuf, port 4318 of a collector)", param="OTEL_EXPORTER_OTLP_PROTOCOL")
    return TracingSettings(exporters)


# ---------------------------------------------------------------------------------------------------- attributes


def request_attributes(endpoint: str, route: str, req: ChatRequest | CompletionRequest) -> dict[str, Any]:
    """GenAI request attributes of one request (unset sampling fields are left out)."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": OPERATIONS.get(endpoint, endpoint),
                             "gen_ai.request.model": route}
    for name, value in (("max_tokens", req.max_tokens), ("temperature", req.temperature), ("top_p", req.top_p),
                        ("seed", req.seed)):
        if value is not None:
            attrs[f"gen_ai.request.{name}"] = value
    if req.stop:
        attrs["gen_ai.request.stop_sequences"] = list(req.stop)
    if isinstance(req, ChatRequest) and req.n != 1:
        attrs["gen_ai.request.choice.count"] = req.n
    return attrs


def usage_attributes(usage: Usage) -> dict[str, Any]:
    """Token and dollar totals of a request's (or one model's) usage."""
    return {"gen_ai.usage.input_tokens": usage.prompt_tokens, "gen_ai.usage.output_tokens": usage.completion_tokens,
            "tandem.usage.cached_input_tokens": usage.cached_tokens, "tandem.cost_usd": usage.cost_usd}


def decision_attributes(decision: Mapping[str, Any] | None) -> dict[str, Any]:
    """tandem's decision as span attributes: which route answered, why, and what failed on the way."""
    if not decision:
        return {}
    attrs: dict[str, Any] = {"tandem.route.chosen": str(decision.get("chosen", "")),
                             "tandem.decision.kind": str(decision.get("kind", "")),
                             "tandem.decision.reason": str(decision.get("reason", ""))}
    if decision.get("backend"):
        attrs["tandem.backend"] = str(decision["backend"])
    if decision.get("failures"):
        attrs["tandem.decision.failures"] = [str(f) for f in decision["failures"]]
    return attrs


def router_attributes(decisions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The routers' decisions on the way to a generating route (outermost first)."""
    if not decisions:
        return {}
    first = decisions[0]
    attrs: dict[str, Any] = {"tandem.router.name": str(first.get("router", first.get("kind", ""))),
                             "tandem.router.chosen": str(decisions[-1].get("chosen", "")),
                             "tandem.router.reason": "; ".join(str(d.get("reason", "")) for d in decisions),
                             "tandem.router.path": [str(d.get("chosen", "")) for d in decisions]}
    for cand, score in (first.get("scores") or {}).items():
        attrs[f"tandem.router.score.{cand}"] = float(score)
    return attrs


# ---------------------------------------------------------------------------------------------------- spans


class Span(ABC):
    """One span, or nothing (:class:`NoSpan`). ``recording`` says whether attributes are worth computing."""

    recording: bool = False

    @abstractmethod
    def child(self, name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False,
              start_ns: int | None = None) -> Span:
        """A span under this one, started now (or at ``start_ns``, wall-clock nanoseconds)."""

    @abstractmethod
    def set(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes (None values are left out)."""

    @abstractmethod
    def fail(self, error_type: str, message: str = "") -> None:
        """Mark the span failed: status ERROR and ``error.type``."""

    @abstractmethod
    def end(self) -> None:
        """End the span (a second call does nothing)."""

    @abstractmethod
    def wrap_call(self, call: Callable[[R], Awaitable[T]]) -> Callable[[R], Awaitable[T]]:
        """``call`` (dispatch's one attempt on one route) with one child span per invocation."""


class NoSpan(Span):
    """Tracing off: every method does nothing (and ``child`` returns this same span)."""

    def child(self, name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False,
              start_ns: int | None = None) -> Span:
        return self

    def set(self, attributes: Mapping[str, Any]) -> None:
        pass

    def fail(self, error_type: str, message: str = "") -> None:
        pass

    def end(self) -> None:
        pass

    def wrap_call(self, call: Callable[[R], Awaitable[T]]) -> Callable[[R], Awaitable[T]]:
        return call


class OtelSpan(Span):
    """An OpenTelemetry SDK span (the objects of ``opentelemetry`` come from :class:`OtelTracer`)."""

    recording = True

    def __init__(self, tracer: OtelTracer, span: Any, operation: str):
        self.tracer = tracer
        self.span = span
        self.operation = operation
        self._ended = False

    def child(self, name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False,
              start_ns: int | None = None) -> Span:
        return self.tracer.start(name, attributes, parent=self, client=client, start_ns=start_ns,
                                 operation=self.operation)

    def set(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(self, error_type: str, message: str = "") -> None:
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(self.tracer.status(self.tracer.status_error, message or error_type))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self.span.end()

    def wrap_call(self, call: Callable[[R], Awaitable[T]]) -> Callable[[R], Awaitable[T]]:
        calls: dict[str, int] = {}
        first: list[str] = []

        async def traced(r: R) -> T:
            if not first:
                first.append(r.name)
            n = calls.get(r.name, 0)
            calls[r.name] = n + 1
            s = self.child(f"{self.operation} {r.backend.name}", {
                "gen_ai.operation.name": self.operation, "gen_ai.request.model": r.backend.name,
                "gen_ai.provider.name": r.backend.kind or "tandem", "tandem.route": r.name, "tandem.attempt": n,
                "tandem.fallback": r.name != first[0]}, client=True)
            try:
                out = await call(r)
            except BaseException as e:
                s.fail(type(e).__name__, str(e)[:500])
                s.end()
                raise
            s.end()
            return out

        return traced


class Tracer(ABC):
    """Makes request spans; ``enabled`` is False for :class:`NoTracer`."""

    enabled: bool = False

    @abstractmethod
    def request_span(self, endpoint: str, route: str, req: ChatRequest | CompletionRequest | None,
                     started: float) -> Span:
        """The root span of one request, started at ``started`` (a ``time.perf_counter()`` reading); ``req`` is None
        for a request that failed before it was parsed."""

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for the start-up log."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Export what is queued and stop (blocking)."""


class NoTracer(Tracer):
    """Tracing off: one :class:`NoSpan` for every request."""

    def __init__(self) -> None:
        self._span = NoSpan()

    def request_span(self, endpoint: str, route: str, req: ChatRequest | CompletionRequest | None,
                     started: float) -> Span:
        return self._span

    @property
    def description(self) -> str:
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export traces)"


class OtelTracer(Tracer):
    """Spans through an OpenTelemetry SDK ``TracerProvider`` of its own (the global provider is left alone)."""

    enabled = True

    def __init__(self, settings: TracingSettings, service_name: str = "tandem"):
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode

        resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
        self.provider = TracerProvider(resource=resource)
        self.settings = settings
        if "otlp" in settings.exporters:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.exporter = OTLPSpanExporter()
            self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        if "console" in settings.exporters:
            self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        self._tracer = self.provider.get_tracer("tandem.gateway")
        self._in_context = trace.set_span_in_context
        self._server, self._client, self._internal = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
        self.status, self.status_error = Status, StatusCode.ERROR

    @property
    def description(self) -> str:
        endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or
                    os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318")
        return f"OpenTelemetry, exporting with {', '.join(self.settings.exporters)} (OTLP endpoint {endpoint})"

    def start(self, name: str, attributes: Mapping[str, Any] | None, *, parent: OtelSpan | None = None,
              client: bool = False, start_ns: int | None = None, operation: str = "chat") -> OtelSpan:
        kind = self._server if parent is None else (self._client if client else self._internal)
        ctx = self._in_context(parent.span) if parent is not None else None
        attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        span = self._tracer.start_span(name, context=ctx, kind=kind, attributes=attrs, start_time=start_ns)
        return OtelSpan(self, span, operation)

    def request_span(self, endpoint: str, route: str, req: ChatRequest | CompletionRequest | None,
                     started: float) -> Span:
        operation = OPERATIONS.get(endpoint, endpoint)
        attrs = request_attributes(endpoint, route, req) if req is not None else {
            "gen_ai.operation.name": operation, "gen_ai.request.model": route}
        return self.start(f"{operation} {route}", attrs, start_ns=wall_ns(started), operation=operation)

    def shutdown(self) -> None:
        self.provider.shutdown()


def wall_ns(perf: float) -> int:
    """A ``time.perf_counter()`` reading as wall-clock nanoseconds (what span timestamps are)."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def make_tracer(env: Mapping[str, str] | None = None) -> Tracer:
    """The tracer the environment asks for (``os.environ`` unless given): :class:`OtelTracer` or :class:`NoTracer`.
    Raises ConfigError when tracing is asked for and the ``otel`` extra is not installed."""
    settings = tracing_settings(os.environ if env is None else env)
    if settings is None:
        return NoTracer()
    try:
        return OtelTracer(settings)
    except ImportError as e:
        raise ConfigError(f"OTEL_* variables ask for traces, and OpenTelemetry is not installed ({e}): "
                          "pip install 'tandem[otel]'") from None


# ---------------------------------------------------------------------------------------------------- request end


def end_router_span(span: Span, decisions: Sequence[Mapping[str, Any]]) -> None:
    """Close the ``route …`` span with the routers' decisions."""
    if span.recording:
        span.set(router_attributes(decisions))
    span.end()


def end_request_span(span: Span, *, route: str, request_id: str, status: str, http_status: int,
                     error: str | None, usage: Usage, decision: Mapping[str, Any] | None, response_model: str | None,
                     cache: str | None, backend_s: float, overhead_ms: float, stream: bool,
                     key_id: str | None) -> None:
    """Close a request span with the answer's GenAI attributes and tandem's, and one ``member …`` child per model
    when the usage lists several (not for a cache hit: no member worked)."""
    if not span.recording:
        return
    span.set({"gen_ai.response.model": response_model, "tandem.request_id": request_id, "tandem.route": route,
              "tandem.status": status, "http.response.status_code": http_status, "tandem.cache": cache,
              "tandem.stream": stream, "tandem.overhead_ms": round(overhead_ms, 3), "tandem.key_id": key_id,
              **usage_attributes(usage), **decision_attributes(decision)})
    if len(usage.models) > 1 and cache != "hit":
        start = time.time_ns() - int(backend_s * 1e9)
        for m in usage.models:
            member = span.child(f"member {m.model}", {
                "gen_ai.request.model": m.model, "gen_ai.usage.input_tokens": m.prompt_tokens,
                "gen_ai.usage.output_tokens": m.completion_tokens, "tandem.usage.cached_input_tokens": m.cached_tokens,
                "tandem.cost_usd": m.cost_usd}, start_ns=start)
            member.end()
    if error is not None:
        span.fail(error.split(":", 1)[0], error[:500])
    span.end()

"""OpenTelemetry traces: when the standard ``OTEL_*`` variables ask for them, and what a real gateway process sends.

A real OTLP/HTTP endpoint started here (an HTTP server taking ``POST /v1/traces`` and decoding the protobuf with
``opentelemetry-proto``) receives the spans of real requests through ``tandem serve``: one SERVER span per request
with the GenAI attributes, CLIENT children for each backend call (a retry and a fallback show as siblings), a child
for the router's decision, ``member …`` children for a collaboration's models. With no ``OTEL_*`` variables, serving
a request never imports ``opentelemetry``.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from gateway.errors import ConfigError
from gateway.tracing import tracing_settings
from tests.fixtures.counting_upstream import CountingUpstream

# ---------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("env, exporters", [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, None),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),  # the default endpoint, localhost:4318
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ("console", "otlp")),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("otlp",)),
])
def test_settings_follow_the_standard_variables(env, exporters):
    got = tracing_settings(env)
    assert (got.exporters if got else None) == exporters


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "zipkin"},
                                 {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}])
def test_settings_refuse_what_is_not_carried_out(env):
    with pytest.raises(ConfigError):
        tracing_settings(env)


def test_tracing_off_never_imports_opentelemetry(tmp_path):
    """A whole request through the app, in a fresh interpreter with no OTEL_* variable: tandem imports no
    OpenTelemetry module (FastAPI itself imports the OpenTelemetry API for its own hooks: those are there before the
    gateway is built, and no SDK, exporter or protobuf module joins them)."""
    code = f"""
import asyncio, os, sys
for k in list(os.environ):
    if k.startswith("OTEL_"):
        del os.environ[k]
import httpx
from gateway.app import create_app
from gateway.config import parse_config
from gateway.state import Gateway

def otel():
    return sorted(m for m in sys.modules if m.startswith(("opentelemetry", "google.protobuf")))

before = otel()

cfg = parse_config({{"storage": {{"database_url": "sqlite:///{tmp_path}/t.db", "spool_dir": "{tmp_path}/spool"}},
                    "backends": [{{"name": "b", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}],
                    "routes": [{{"name": "r", "backend": "b", "retries": 0, "cache": {{"ttl_s": 5}}}}]}})
async def main():
    gw = Gateway(cfg)
    app = create_app(gw, start=False)
    await gw.start(progress=lambda *a: None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/chat/completions", json={{"model": "r", "messages": [{{"role": "user", "content": "x"}}],
                                                      "temperature": 0}})
    await gw.close()
    print(r.status_code, type(gw.tracer).__name__, [m for m in otel() if m not in before])
    print("sdk" if any(m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")) for m in before) else "no sdk")
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    served, sdk = out.stdout.strip().split("\n")[-2:]
    status, tracer, added = served.split(" ", 2)
    assert int(status) >= 500 and tracer == "NoTracer" and added == "[]", out.stdout  # it reached the backend
    assert sdk == "no sdk", out.stdout


# ---------------------------------------------------------------------------------------------------- a real endpoint


class OtlpReceiver:
    """``POST /v1/traces`` (OTLP/HTTP protobuf): every span received, flattened to dicts."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    data = gzip.decompress(data)
                owner.paths.append(self.path)
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = ExportTraceServiceRequest()
                msg.ParseFromString(data)
                owner.add(msg)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, msg: Any) -> None:
        for rs in msg.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({
                        "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex() or None, "kind": s.kind, "status": s.status.code,
                        "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                        "attrs": {a.key: _value(a.value) for a in s.attributes}, "resource": resource})

    def trace_of(self, request_id: str, timeout: float = 15.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The root span whose ``tandem.request_id`` is ``request_id`` and every span of its trace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roots = [s for s in list(self.spans) if s["attrs"].get("tandem.request_id") == request_id]
            if roots:
                time.sleep(0.3)  # children end before the root; give the batch a moment
                return roots[0], [s for s in list(self.spans) if s["trace_id"] == roots[0]["trace_id"]]
            time.sleep(0.1)
        raise AssertionError(f"no span for request {request_id}; got {[s['name'] for s in self.spans]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def upstream():
    up = CountingUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def traced(receiver, upstream, tmp_path_factory, tiny_model_dir):
    from routers.base import Record
    from routers.registry import default_router_registry
    from tests.fixtures.gateway_proc import start_gateway

    records = [Record(prompt=f"q{i}", candidate=c, score=float(c == "ok"), cost=0.01 if c == "ok" else 0.001)
               for i in range(10) for c in ("ok", "other")]
    artifact = str(tmp_path_factory.mktemp("router") / "best.pkl")
    default_router_registry().create("best").fit(records).save(artifact)
    cfg = {
        "backends": [{"name": "ok", "kind": "openai", "base_url": upstream.url("t-ok"),
                      "price": {"input_per_mtok": 1, "output_per_mtok": 2}},
                     {"name": "other", "kind": "openai", "base_url": upstream.url("t-other")},
                     {"name": "flaky", "kind": "openai", "base_url": upstream.url("fail-t")},
                     {"name": "small", "kind": "local", "path": str(tiny_model_dir),
                      "price": {"input_per_mtok": 1, "output_per_mtok": 2}},
                     {"name": "small2", "kind": "local", "path": str(tiny_model_dir),
                      "price": {"input_per_mtok": 10, "output_per_mtok": 20}}],
        "routes": [{"name": "retrying", "backend": "flaky", "retries": 1, "fallbacks": ["ok"]},
                   {"name": "picker", "kind": "router", "router": "best", "artifact": artifact,
                    "candidates": ["ok", "other"]},
                   {"name": "cached", "backend": "ok", "cache": {"ttl_s": 60}},
                   {"name": "pair", "kind": "collab", "strategy": "r2r", "members": {"slm": "small", "llm": "small2"},
                    "params": {"tau": 0.0}}],
    }
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_SERVICE_NAME": "tandem-under-test"}
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-traced"), env)
    yield g
    g.stop()


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((s for s in spans if s["parent"] == parent["span_id"]), key=lambda s: s["start"])


def test_a_request_with_retries_and_a_fallback_is_one_span_with_a_child_per_backend_call(traced, receiver):
    client = openai.OpenAI(base_url=traced.url, api_key="x", max_retries=0)
    r = client.chat.completions.create(model="retrying", messages=[{"role": "user", "content": "three words here"}],
                                       max_tokens=3, temperature=0.0)
    rid = r.model_extra["tandem"]["request_id"]
    root, spans = receiver.trace_of(rid)
    assert root["name"] == "chat retrying" and root["kind"] == SERVER and root["parent"] is None
    a = root["attrs"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "retrying"
    assert a["gen_ai.response.model"] == "ok" and a["gen_ai.request.max_tokens"] == 3
    assert a["gen_ai.request.temperature"] == 0.0
    assert a["gen_ai.usage.input_tokens"] == r.usage.prompt_tokens and a["gen_ai.usage.output_tokens"] == 3
    assert a["tandem.cost_usd"] == pytest.approx(r.model_extra["tandem"]["cost_usd"])
    assert a["tandem.status"] == "ok" and a["http.response.status_code"] == 200
    assert a["tandem.route.chosen"] == "ok" and "fallback" in a["tandem.decision.reason"]
    assert root["resource"]["service.name"] == "tandem-under-test"
    calls = _children(spans, root)
    assert [(s["name"], s["kind"]) for s in calls] == [("chat flaky", CLIENT)] * 2 + [("chat ok", CLIENT)]
    assert [s["attrs"]["tandem.attempt"] for s in calls] == [0, 1, 0]
    assert [s["attrs"]["tandem.fallback"] for s in calls] == [False, False, True]
    assert [s["status"] == STATUS_ERROR for s in calls] == [True, True, False]
    assert calls[0]["attrs"]["error.type"] and calls[2]["attrs"]["gen_ai.provider.name"] == "openai"
    assert all(root["start"] <= s["start"] <= s["end"] <= root["end"] for s in calls)
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}


def test_a_router_decision_is_a_child_span_and_a_stream_is_traced(traced, receiver):
    client = openai.OpenAI(base_url=traced.url, api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="picker", messages=[{"role": "user", "content": "pick"}],
                                                 max_tokens=2, stream=True, stream_options={"include_usage": True}))
    rid = chunks[-1].model_extra["tandem"]["request_id"]
    root, spans = receiver.trace_of(rid)
    assert root["name"] == "chat picker" and root["attrs"]["tandem.stream"] is True
    assert root["attrs"]["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens == 2
    kids = _children(spans, root)
    assert [s["name"] for s in kids] == ["route picker", "chat ok"]
    route = kids[0]["attrs"]
    assert route["tandem.router.chosen"] == "ok" and route["tandem.router.name"] == "best"
    assert route["tandem.router.path"] == ["ok"] and route["tandem.router.reason"] == "best: ok"
    assert kids[0]["end"] <= kids[1]["start"]


def test_a_collaboration_has_a_member_span_per_model_with_its_usage(traced, receiver):
    client = openai.OpenAI(base_url=traced.url, api_key="x", max_retries=0)
    r = client.chat.completions.create(model="pair", messages=[{"role": "user", "content": "12*7"}], max_tokens=6,
                                       extra_body={"ignore_eos": True})
    usage = {u["model"]: u for u in r.model_extra["tandem"]["usage"]}
    root, spans = receiver.trace_of(r.model_extra["tandem"]["request_id"])
    members = {s["name"]: s["attrs"] for s in _children(spans, root) if s["name"].startswith("member ")}
    assert set(usage) == {"small", "small2"} and set(members) == {"member small", "member small2"}
    for name, u in usage.items():
        m = members[f"member {name}"]
        assert m["gen_ai.usage.input_tokens"] == u["prompt_tokens"]
        assert m["gen_ai.usage.output_tokens"] == u["completion_tokens"]
        assert m["tandem.cost_usd"] == pytest.approx(u["cost_usd"])
    assert root["attrs"]["gen_ai.usage.output_tokens"] == sum(u["completion_tokens"] for u in usage.values())


def test_a_cache_hit_and_a_client_error_are_traced_too(traced, receiver):
    body = {"model": "cached", "messages": [{"role": "user", "content": "again"}], "max_tokens": 2, "temperature": 0}
    httpx.post(traced.url + "/chat/completions", json=body, timeout=30)
    hit = httpx.post(traced.url + "/chat/completions", json=body, timeout=30).json()
    root, spans = receiver.trace_of(hit["tandem"]["request_id"])
    assert root["attrs"]["tandem.cache"] == "hit" and root["attrs"]["tandem.cost_usd"] == 0.0
    assert _children(spans, root) == []  # no backend call
    bad = httpx.post(traced.url + "/chat/completions", json={**body, "model": "no-such-route"}, timeout=30)
    assert bad.status_code == 404
    rid = bad.headers["x-request-id"]
    root, _ = receiver.trace_of(rid)
    assert root["status"] == STATUS_ERROR and root["attrs"]["http.response.status_code"] == 404
    assert root["attrs"]["error.type"] == "ModelNotFound" and json.dumps(root["attrs"])

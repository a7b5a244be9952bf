"""Bad input against a running gateway: schemathesis over its own OpenAPI schema, then hand-made nasty requests.

The gateway (``tandem serve``) fronts ``bench.upstream_stub`` (chat) and the tiny in-process model (text
completions) with small limits (``max_tokens_cap`` 64, 4 KiB prompts,
64 KiB bodies). schemathesis generates valid (positive) and invalid (negative) cases for every operation — at least
1,000 in all, half of the chat/completion bodies pointed at the real route so they reach the backend — and no
answer may be a 5xx. Then: oversized bodies (announced or chunked) are 413, prompts over the limit and huge
``max_tokens`` are 400, invalid JSON and invalid UTF-8 are 400, unknown fields pass, and header injection through a
model name or the eval-run header neither sets a header nor fails with a 5xx.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from bench.schemathesis_load import httpx_kwargs
from bench.soak import start_stub, stop_process

MIN_CASES = 1000
LIMITS = {"max_body_bytes": 65536, "max_prompt_chars": 4096, "max_tokens_cap": 64, "default_max_tokens": 8}
# Examples per operation and mode: operations without parameters are exhausted after one case.
EXAMPLES = {"POST /v1/chat/completions": 260, "POST /v1/completions": 200, "POST /v1/feedback": 120}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, tiny_model_dir):
    from tests.fixtures.gateway_proc import start_gateway

    stub, url = start_stub(tokens=4)
    cfg = {"limits": LIMITS, "backends": [{"name": "stub", "kind": "openai", "base_url": url},
                                          {"name": "tiny", "kind": "local", "path": str(tiny_model_dir),
                                           "device": "cpu", "threads": 1, "max_context": 256}]}
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-fuzz"))
    yield g
    g.stop()
    stop_process(stub)


def _aim(case, real: bool):
    """Point half of the generated bodies at a served route, so they get past model lookup: chats at the stub,
    text completions (which the stub does not serve) at the tiny in-process model."""
    if real and isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "tiny" if case.path.endswith("/completions") and "chat" not in case.path else "stub"
    return case


def test_schemathesis_finds_no_5xx(gw):
    schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(gw.base + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {op.label for op in ops} >= set(EXAMPLES)
    counts: dict[str, int] = {}
    failures: list[str] = []
    with httpx.Client(timeout=30) as client:
        for op in ops:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(op, mode, client, gw.base, counts, failures)
    total = sum(counts.values())
    assert total >= MIN_CASES, counts
    assert not failures, f"{len(failures)}+ answers were 5xx of {total} cases:\n" + "\n".join(failures)
    assert gw.proc.poll() is None


def _fuzz(op, mode, client: httpx.Client, base: str, counts: dict[str, int], failures: list[str]) -> None:
    """Send the generated cases of one operation in one mode; count them and note every 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    strategy = st.tuples(op.as_strategy(generation_mode=mode), st.booleans())

    @settings(max_examples=EXAMPLES.get(op.label, 20), deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=True)
    @given(strategy)
    def run(pair) -> None:
        case = _aim(*pair)
        kw = case.as_transport_kwargs(base_url=base)
        req = client.build_request(kw["method"], kw["url"], **httpx_kwargs(kw))
        r = client.send(req)
        counts[op.label] = counts.get(op.label, 0) + 1
        if r.status_code >= 500 and len(failures) < 20:
            failures.append(f"{r.status_code} {case.as_curl_command()} -> {r.text[:300]}")

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # an operation with no parameters has no invalid form: nothing to send in negative mode




# ---------------------------------------------------------------------------------------------------- hand-made


def _post(gw, body: bytes | dict, path: str = "/chat/completions", **headers: str) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(gw.url + path, json=body, headers=headers, timeout=30)
    return httpx.post(gw.url + path, content=body, headers={"content-type": "application/json", **headers},
                      timeout=30)


def _chat(**extra) -> dict:
    return {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}


def test_oversized_body_is_413(gw):
    big = {"model": "stub", "messages": [{"role": "user", "content": "x" * 70_000}]}
    r = _post(gw, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_oversized_chunked_body_without_length_is_413(gw):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    r = httpx.post(gw.url + "/chat/completions", content=chunks(), timeout=30)
    assert r.status_code == 413


def test_prompt_over_the_limit_is_400(gw):
    r = _post(gw, {"model": "stub", "messages": [{"role": "user", "content": "y" * 5000}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("max_tokens", [65, 10**9, 2**63, 10**40])
def test_huge_max_tokens_is_400(gw, max_tokens):
    r = _post(gw, _chat(max_tokens=max_tokens))
    assert r.status_code == 400 and r.json()["error"]["param"] in ("max_tokens", "max_completion_tokens")


@pytest.mark.parametrize("raw", [b"{", b"{'model': 1}", b"\xff\xfe{}", b'{"model": "stub\xc3\x28"}', b"null", b"[]",
                                 b"[" * 5000 + b"]" * 5000, b'{"model": NaN}', b"", b'"str"', b"1e999999"])
def test_invalid_json_or_utf8_is_400(gw, raw):
    r = _post(gw, raw)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_fields_are_accepted(gw):
    r = _post(gw, _chat(no_such_field={"a": [1, 2]}, another=None))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("bad", [{"messages": []}, {"messages": [{"role": "alien", "content": "x"}]},
                                 {"temperature": 3}, {"n": 0}, {"stop": [""]}, {"stream": "maybe"},
                                 {"messages": "hi"}, {"model": ""}, {"max_tokens": -1}, {"max_tokens": 1.5}])
def test_invalid_fields_are_400(gw, bad):
    r = _post(gw, {**_chat(), **bad})
    assert r.status_code == 400, r.text


def test_bad_content_length_is_4xx(gw):
    u = urlsplit(gw.base)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        head = s.recv(4096).split(b"\r\n", 1)[0]
    assert head.split()[1].startswith(b"4"), head


def _raw(gw, request: bytes) -> bytes:
    u = urlsplit(gw.base)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            part = s.recv(65536)
            if not part:
                break
            data += part
    return data


def test_header_injection_through_model_name(gw):
    body = _chat(model="stub\r\nset-cookie: pwned=1\r\nx-evil: 1")
    r = _post(gw, body)
    assert r.status_code == 404
    assert "set-cookie" not in r.headers and "x-evil" not in r.headers


def test_header_injection_through_eval_run_header(gw):
    data = b'{"model":"stub","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
    for value in (b"run\rx-evil: 1", b"run\nx-evil: 1", b"run\x00x", b"run x", b"a" * 200):
        head = _raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"x-tandem-eval-run: " + value + b"\r\nContent-Length: " + str(len(data)).encode()
                        + b"\r\nConnection: close\r\n\r\n" + data)
        status = head.split(b"\r\n", 1)[0]
        assert status.split()[1].startswith(b"4"), (value, status)
        assert b"x-evil" not in head.lower()

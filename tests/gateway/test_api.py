"""The gateway as a user meets it: the official ``openai`` client against ``tandem serve`` in a subprocess, in front
of a real vLLM-CPU server and a real in-process model."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def gateway(vllm_server, tiny_model_dir, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    cfg = {
        "backends": [
            {"name": "tiny-vllm", "kind": "vllm", "base_url": vllm_server.base_url, "model": vllm_server.model,
             "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}},
            {"name": "tiny-local", "kind": "local", "path": str(tiny_model_dir),
             "price": {"input_per_mtok": 1.0, "output_per_mtok": 3.0}},
            {"name": "dead", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 0.5},
        ],
        "routes": [
            {"name": "tiny", "backend": "tiny-vllm", "description": "tiny model on vLLM"},
            {"name": "dead-then-tiny", "backend": "dead", "fallbacks": ["tiny"], "retries": 1},
        ],
        "default_route": "tiny",
    }
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-api"))
    yield g
    g.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)


MSG = [{"role": "user", "content": "Hello there"}]


def test_chat_returns_text_usage_cost_and_headers(client):
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=MSG, max_tokens=8, temperature=0)
    resp = raw.parse()
    assert raw.headers["x-tandem-route"] == "tiny"
    assert float(raw.headers["x-tandem-overhead-ms"]) >= 0
    cost = float(raw.headers["x-tandem-cost-usd"])
    u = resp.usage
    assert u.completion_tokens >= 1 and u.prompt_tokens >= 1
    assert cost == pytest.approx(u.prompt_tokens * 2e-6 + u.completion_tokens * 8e-6, rel=1e-6)
    tandem = resp.model_extra["tandem"]
    assert tandem["usage"][0]["model"] == "tiny-vllm"
    assert tandem["cost_usd"] == pytest.approx(cost, rel=1e-6)
    assert tandem["decision"]["chosen"] == "tiny"
    assert isinstance(resp.choices[0].message.content, str)


def test_stream_matches_non_stream_text_and_cost(client):
    kw = dict(model="tiny", messages=MSG, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    last = chunks[-1]
    assert last.usage is not None and last.usage.completion_tokens == whole.usage.completion_tokens == 12
    assert last.model_extra["tandem"]["cost_usd"] == pytest.approx(whole.model_extra["tandem"]["cost_usd"], rel=1e-9)


def test_stream_without_include_usage_still_ends_with_tandem_object(client):
    chunks = list(client.chat.completions.create(model="auto", messages=MSG, max_tokens=4, stream=True))
    assert chunks[-1].usage is None
    assert chunks[-1].model_extra["tandem"]["cost_usd"] > 0


def test_sampling_params_pass_through(client):
    kw = dict(model="tiny", messages=MSG, max_tokens=10, temperature=1.0, seed=7)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b
    lp = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3, logprobs=True, top_logprobs=3)
    content = lp.choices[0].logprobs.content
    assert len(content) == lp.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in content)


def test_n_choices_on_vllm(client):
    r = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, n=2, temperature=1.0, seed=3,
                                       extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1] and r.usage.completion_tokens == 8
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3, n=2, stream=True,
                                                 extra_body={"ignore_eos": True}))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_completions_endpoint(client):
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5 and isinstance(r.choices[0].text, str)


def test_local_backend_route_and_capability_errors(client):
    r = client.chat.completions.create(model="tiny-local", messages=MSG, max_tokens=4)
    assert r.model_extra["tandem"]["usage"][0]["model"] == "tiny-local"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-local", messages=MSG, max_tokens=4, n=2)
    assert e.value.body["param"] == "n"


def test_models_lists_routes(client):
    ids = {m.id for m in client.models.list().data}
    assert {"tiny", "tiny-vllm", "tiny-local", "dead", "dead-then-tiny"} <= ids


def test_unknown_model_is_404_listing_routes(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MSG)
    assert e.value.body["code"] == "model_not_found"
    assert "tiny" in e.value.body["routes"]


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "tiny"}, "messages"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "tiny", "messages": MSG, "temperature": 5}, "temperature"),
        ({"model": "tiny", "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": "tiny", "messages": MSG, "max_tokens": 10**9}, "max_tokens"),
        ({"messages": MSG}, "model"),
    ],
)
def test_malformed_body_is_400_naming_the_field(gateway, body, param):
    r = httpx.post(gateway.url + "/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1,2]", b"\xff\xfe{}"])
def test_invalid_json_is_400(gateway, raw):
    r = httpx.post(gateway.url + "/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(gateway):
    r = httpx.post(gateway.url + "/chat/completions", content=b"x" * (5 * 1024 * 1024))
    assert r.status_code == 413


def test_dead_backend_falls_back(client):
    raw = client.chat.completions.with_raw_response.create(model="dead-then-tiny", messages=MSG, max_tokens=3)
    assert raw.headers["x-tandem-route"] == "tiny"
    decision = raw.parse().model_extra["tandem"]["decision"]
    assert decision["reason"] == "fallback to tiny" and len(decision["failures"]) == 2  # 1 try + 1 retry


def test_dead_backend_without_fallback_is_503(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="dead", messages=MSG, max_tokens=3)
    assert e.value.status_code == 503


def test_health_and_metrics(gateway, client):
    client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2)
    assert httpx.get(gateway.base + "/health/live").json() == {"status": "ok"}
    ready = httpx.get(gateway.base + "/health/ready")
    body = ready.json()
    assert body["database"] is True and body["backends"]["tiny-vllm"] is True and body["backends"]["dead"] is False
    assert ready.status_code == 503  # one backend is down: not all ready
    m = httpx.get(gateway.base + "/metrics").text
    assert 'tandem_requests_total{route="tiny",status="ok"}' in m


def test_every_request_is_logged_and_takes_feedback(gateway, client):
    from sqlalchemy import create_engine, text

    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=MSG, max_tokens=3)
    rid = raw.headers["x-request-id"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSG)
    fb = httpx.post(gateway.url + "/feedback", json={"request_id": rid, "score": 1.0, "label": "good"})
    assert fb.status_code == 200, fb.text
    bad = httpx.post(gateway.url + "/feedback", json={"request_id": "missing", "score": 0.5})
    assert bad.status_code == 404
    eng = create_engine(gateway.db_url)
    with eng.connect() as c:
        row = c.execute(text("select route, status, cost_usd, completion_tokens, prompt from requests where id=:i"),
                        {"i": rid}).one()
        assert row.route == "tiny" and row.status == "ok" and row.cost_usd > 0 and row.completion_tokens >= 1
        assert "Hello there" in str(row.prompt)
        errs = c.execute(text("select count(*) from requests where status='error' and http_status=404")).scalar()
        assert errs >= 1
        score = c.execute(text("select score from feedback where request_id=:i"), {"i": rid}).scalar()
        assert score == 1.0

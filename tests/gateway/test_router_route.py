"""A route of kind ``router``: a trained router artifact picks one of its candidate routes per request; the decision
is in the response body, the headers and the request log."""

from __future__ import annotations

import time

import httpx
import openai
from sqlalchemy import create_engine, text

from routers.base import Record
from routers.registry import default_router_registry


def _train(tmp_path, name: str) -> str:
    # "large" passes where "small" fails, at ten times the cost: always-best must pick large, cheapest small.
    records = []
    for i in range(20):
        records.append(Record(prompt=f"question {i}", candidate="small", score=0.0, cost=0.001))
        records.append(Record(prompt=f"question {i}", candidate="large", score=1.0, cost=0.01))
    router = default_router_registry().create(name).fit(records)
    path = tmp_path / f"{name}.pkl"
    router.save(path)
    return str(path)


def test_router_routes_pick_candidates_and_log_the_decision(gateway_factory, tiny_model_dir, tmp_path):
    cfg = {
        "backends": [{"name": "tiny", "kind": "local", "path": str(tiny_model_dir),
                      "price": {"input_per_mtok": 1, "output_per_mtok": 1}}],
        "routes": [
            {"name": "small", "backend": "tiny"},
            {"name": "large", "backend": "tiny"},
            {"name": "pick-best", "kind": "router", "router": "best", "artifact": _train(tmp_path, "best"),
             "candidates": ["small", "large"]},
            {"name": "pick-cheap", "kind": "router", "router": "cheapest",
             "artifact": _train(tmp_path, "cheapest"), "candidates": ["small", "large"]},
            {"name": "nested", "kind": "router", "router": "cheapest", "artifact": _train(tmp_path, "cheapest"),
             "candidates": ["pick-best", "large"], "model_map": {"small": "pick-best"}},
        ],
        "default_route": "pick-best",
    }
    g = gateway_factory(cfg)
    for name in ("pick-best", "pick-cheap", "nested"):  # each router decided once at start, before any request
        assert f"router route {name}: warm in" in g.log()
    client = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0)
    msg = [{"role": "user", "content": "question 3"}]

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=msg, max_tokens=2)
    assert raw.headers["x-tandem-route"] == "large"
    d = raw.parse().model_extra["tandem"]["decision"]
    assert d["kind"] == "router" and d["chosen"] == "large" and d["routers"][0]["router"] == "best"

    assert client.chat.completions.with_raw_response.create(
        model="pick-cheap", messages=msg, max_tokens=2).headers["x-tandem-route"] == "small"

    # Routers compose: nested's cheapest pick maps to the router route pick-best, which then picks large.
    raw = client.chat.completions.with_raw_response.create(model="nested", messages=msg, max_tokens=2)
    d = raw.parse().model_extra["tandem"]["decision"]
    assert [r["chosen"] for r in d["routers"]] == ["pick-best", "large"] and raw.headers["x-tandem-route"] == "large"

    stream = list(client.chat.completions.create(model="pick-cheap", messages=msg, max_tokens=2, stream=True))
    assert stream[-1].model_extra["tandem"]["decision"]["chosen"] == "small"

    models = {m["id"]: m for m in httpx.get(g.url + "/models").json()["data"]}
    assert models["pick-best"]["kind"] == "router" and models["pick-best"]["candidates"] == ["small", "large"]

    eng = create_engine(g.db_url)
    rid = raw.headers["x-request-id"]
    for _ in range(50):
        with eng.connect() as c:
            row = c.execute(text("select decision, model_chosen from requests where id=:i"), {"i": rid}).one_or_none()
        if row is not None:
            break
        time.sleep(0.1)
    assert row is not None and "pick-best" in str(row.decision) and row.model_chosen == "tiny"

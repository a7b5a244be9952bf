"""A route of kind ``tcar`` end to end: ``tandem serve`` in a subprocess, agents added and removed through
``/v1/agents``, tiny in-process models answering as agents and as the refining route.

No capable router LLM runs here, so the router route is :class:`ScriptedTcarRouterLLM` — a TEST DOUBLE, not a
model: a real HTTP server speaking the OpenAI chat API whose answer is whatever the test scripted. It exercises the
protocol's edge cases (one, two, three ids; ``oos``; garbage). The embedding fallback runs for real (MiniLM), and
the test recomputes its choice from its own embeddings.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from gateway.storage.db import make_engine
from gateway.storage.keys import KeyStore
from gateway.tcar_route import OOS_MESSAGE
from routers.tcar import DEFAULT_THRESHOLD, fallback, refine_prompt

ADMIN = "tcar-test-admin-key"
PRICES = {"scripted-router": (100.0, 200.0), "agent-model": (1.0, 2.0), "refine-model": (3.0, 4.0)}  # $/Mtok


class ScriptedTcarRouterLLM:
    """TEST DOUBLE for a router LLM: an OpenAI-compatible chat server on 127.0.0.1 that answers every chat request
    with ``self.reply`` (set by the test) and records the requests it got. Usage: prompt characters / 4, reply
    words."""

    def __init__(self) -> None:
        self.reply = ""
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802
                self._send({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append(body)
                reply = outer.reply
                prompt = sum(len(m.get("content") or "") for m in body["messages"]) // 4
                self._send({"id": "scripted-1", "object": "chat.completion", "created": 0, "model": "scripted",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": prompt, "completion_tokens": len(reply.split()),
                                      "total_tokens": prompt + len(reply.split())}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def last_prompt(self) -> str:
        return "\n".join(m["content"] for m in self.requests[-1]["messages"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def router_llm():
    r = ScriptedTcarRouterLLM()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gateway(router_llm, tiny_model_dir, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    def price(name: str) -> dict[str, float]:
        return {"input_per_mtok": PRICES[name][0], "output_per_mtok": PRICES[name][1]}

    cfg = {
        "auth": {"require_keys": True, "admin_key_env": "TCAR_TEST_ADMIN_KEY"},
        "backends": [
            {"name": "scripted-router", "kind": "openai", "base_url": router_llm.url, "model": "scripted",
             "price": price("scripted-router")},
            {"name": "agent-model", "kind": "local", "path": str(tiny_model_dir), "threads": 1,
             "price": price("agent-model")},
            {"name": "refine-model", "kind": "local", "path": str(tiny_model_dir), "threads": 1,
             "price": price("refine-model")},
        ],
        "routes": [
            {"name": "math-agent", "backend": "agent-model"},
            {"name": "sql-agent", "backend": "agent-model"},
            {"name": "poem-agent", "backend": "agent-model"},
            {"name": "tcar", "kind": "tcar", "router_route": "scripted-router", "refine_route": "refine-model",
             "max_agents": 3},
        ],
        "default_route": "tcar",
    }
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-tcar"), env={"TCAR_TEST_ADMIN_KEY": ADMIN})
    yield g
    g.stop()


def new_key(gateway, name: str) -> str:
    eng = make_engine(gateway.db_url)
    try:
        return KeyStore(eng).create(name=name)[0]
    finally:
        eng.dispose()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def add_agent(gateway, key: str, name: str, description: str, route: str) -> dict[str, Any]:
    r = httpx.post(gateway.url + "/agents", json={"name": name, "description": description, "route": route},
                   headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def globals_(gateway) -> dict[str, str]:
    """Three global agents (created by the admin): name -> id."""
    specs = [("math", "Solves arithmetic and math word problems: sums, products, fractions and equations.",
              "math-agent"),
             ("sql", "Writes and explains SQL queries over relational database tables, joins and aggregates.",
              "sql-agent"),
             ("poetry", "Writes poems, song lyrics and short rhyming verse about any theme.", "poem-agent")]
    return {n: add_agent(gateway, ADMIN, n, d, r)["id"] for n, d, r in specs}


def log_row(gateway, request_id: str) -> Any:
    eng = create_engine(gateway.db_url)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with eng.connect() as c:
                row = c.execute(text("select decision, usage, cost_usd, key_id from requests where id=:i"),
                                {"i": request_id}).first()
            if row is not None:  # raw SQL: JSON columns come back as text on SQLite
                return SimpleNamespace(**{k: json.loads(v) if isinstance(v, str) and k in ("decision", "usage")
                                          else v for k, v in row._mapping.items()})
            time.sleep(0.1)
        raise AssertionError(f"no log row for {request_id}")
    finally:
        eng.dispose()


def tcar_decision(decision: dict[str, Any]) -> dict[str, Any]:
    [d] = [r for r in decision["routers"] if r["kind"] == "tcar"]
    return d


MSG = [{"role": "user", "content": "What is 17 times 23? Compute the product of the two numbers."}]


def test_one_two_three_agents_answer_and_every_call_is_priced(gateway, router_llm, globals_):
    key = new_key(gateway, "ids")
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    one = client.chat.completions.create(model="math-agent", messages=MSG, max_tokens=4)
    per_agent_prompt = one.usage.prompt_tokens  # every agent reads the client's conversation as it is
    order = [globals_["sql"], globals_["math"], globals_["poetry"]]
    for n in (1, 2, 3):
        router_llm.reply = f"<Reason>needs {n}</Reason>" + "".join(f"<ID>{i}</ID>" for i in order[:n])
        res = client.chat.completions.create(model="tcar", messages=MSG, max_tokens=4)
        prompt = router_llm.last_prompt()
        assert all(i in prompt for i in globals_.values()) and "17 times 23" in prompt
        assert "Writes poems, song lyrics" in prompt
        d = tcar_decision(res.model_extra["tandem"]["decision"])
        assert d["chosen"] == order[:n] and "fallback" not in d and d["reason"] == f"router: needs {n}"
        assert [a["id"] for a in d["agents"]] == order[:n]
        usage = {u["model"]: u for u in res.model_extra["tandem"]["usage"]}
        assert set(usage) == {"scripted-router", "agent-model", "refine-model"}
        assert usage["agent-model"]["prompt_tokens"] == n * per_agent_prompt  # n agents were called
        assert usage["scripted-router"]["completion_tokens"] == len(router_llm.reply.split())
        assert usage["refine-model"]["completion_tokens"] >= 1
        expected = sum((u["prompt_tokens"] * PRICES[m][0] + u["completion_tokens"] * PRICES[m][1]) / 1e6
                       for m, u in usage.items())
        assert res.model_extra["tandem"]["cost_usd"] == pytest.approx(expected, rel=1e-9)
        row = log_row(gateway, res.model_extra["tandem"]["request_id"])
        assert tcar_decision(row.decision)["chosen"] == order[:n] and row.cost_usd == pytest.approx(expected)
        assert {u["model"] for u in row.usage} == set(usage)


def test_streamed_reply_is_the_refining_routes_answer_to_the_agents_answers(gateway, router_llm, globals_):
    key = new_key(gateway, "stream")
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    router_llm.reply = f"<Reason>two</Reason><ID>{globals_['math']}</ID><ID>{globals_['sql']}</ID>"
    chunks = list(client.chat.completions.create(model="tcar", messages=MSG, max_tokens=12, stream=True,
                                                 stream_options={"include_usage": True}))
    last = chunks[-1].model_extra["tandem"]
    d = tcar_decision(last["decision"])
    assert d["chosen"] == [globals_["math"], globals_["sql"]] and d["refined_by"] == "refine-model"
    usage = {u["model"]: u for u in last["usage"]}
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == sum(u["completion_tokens"] for u in usage.values())
    # Rebuild the same steps by hand (greedy decoding is deterministic): each agent's answer, the refine prompt,
    # then the refining model's answer to it.
    answers = [(name, client.chat.completions.create(model=route, messages=MSG, max_tokens=12)
                .choices[0].message.content) for name, route in (("math", "math-agent"), ("sql", "sql-agent"))]
    direct = client.chat.completions.create(model="refine-model", messages=refine_prompt(MSG, answers), max_tokens=12)
    assert streamed == direct.choices[0].message.content
    assert usage["refine-model"]["prompt_tokens"] == direct.usage.prompt_tokens
    assert usage["refine-model"]["completion_tokens"] == direct.usage.completion_tokens


def test_oos_answers_without_calling_agents(gateway, router_llm, globals_):
    client = openai.OpenAI(base_url=gateway.url, api_key=new_key(gateway, "oos"), max_retries=0)
    router_llm.reply = "<Reason>Weather forecasts are not covered.</Reason><ID>oos</ID>"
    res = client.chat.completions.create(model="tcar", messages=[{"role": "user", "content": "Rain tomorrow?"}],
                                         max_tokens=4)
    assert res.choices[0].message.content == OOS_MESSAGE
    d = tcar_decision(res.model_extra["tandem"]["decision"])
    assert d["chosen"] == "oos" and "fallback" not in d
    assert {u["model"] for u in res.model_extra["tandem"]["usage"]} == {"scripted-router"}


def test_garbage_router_output_falls_back_to_description_embeddings(gateway, router_llm, globals_):
    from routers.embedder import Embedder

    client = openai.OpenAI(base_url=gateway.url, api_key=new_key(gateway, "garbage"), max_retries=0)
    router_llm.reply = "Hmm, I would probably ask the numbers person <ID>agent-7</ID>"
    res = client.chat.completions.create(model="tcar", messages=MSG, max_tokens=4)
    d = tcar_decision(res.model_extra["tandem"]["decision"])
    assert d["fallback"] == "embedding" and "unparseable" in d["reason"]
    assert d["router_output"] == router_llm.reply
    # the same choice, recomputed here from real MiniLM embeddings of the query and the agents' descriptions
    listed = httpx.get(gateway.url + "/agents", headers=auth(ADMIN)).json()["data"]
    agents = [a for a in listed if a["key_id"] is None]
    vecs = Embedder().embed([MSG[0]["content"]] + [f"{a['name']}: {a['description']}" for a in agents])
    expected = fallback(vecs[0], {a["id"]: vecs[i + 1] for i, a in enumerate(agents)}, 3, DEFAULT_THRESHOLD)
    assert d["chosen"] == expected and expected[0] == globals_["math"]
    assert set(d["scores"]) == {a["id"] for a in agents}
    row = log_row(gateway, res.model_extra["tandem"]["request_id"])
    assert tcar_decision(row.decision)["fallback"] == "embedding"
    assert "embedding fallback chose" in gateway.log()


def test_agents_added_and_removed_at_run_time(gateway, router_llm, globals_):
    key = new_key(gateway, "runtime")
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    pid = gateway.proc.pid
    geo = add_agent(gateway, key, "geometry", "Computes areas, angles and volumes of shapes.", "math-agent")
    router_llm.reply = f"<Reason>shapes</Reason><ID>{geo['id']}</ID>"
    res = client.chat.completions.create(model="tcar", messages=MSG, max_tokens=3)
    assert geo["id"] in router_llm.last_prompt()
    assert tcar_decision(res.model_extra["tandem"]["decision"])["chosen"] == [geo["id"]]

    assert httpx.delete(gateway.url + f"/agents/{geo['id']}", headers=auth(key)).status_code == 200
    res = client.chat.completions.create(model="tcar", messages=MSG, max_tokens=3)
    assert geo["id"] not in router_llm.last_prompt()
    d = tcar_decision(res.model_extra["tandem"]["decision"])
    assert d["fallback"] == "embedding" and geo["id"] not in d["chosen"]  # the router named a removed agent
    assert gateway.proc.pid == pid and gateway.proc.poll() is None
    assert httpx.delete(gateway.url + f"/agents/{geo['id']}", headers=auth(key)).status_code == 404


def test_keys_never_see_each_others_agents(gateway, router_llm, globals_):
    a, b = new_key(gateway, "owner-a"), new_key(gateway, "owner-b")
    mine = add_agent(gateway, a, "private", "Answers questions about key A's private notes.", "poem-agent")
    ids_b = {x["id"] for x in httpx.get(gateway.url + "/agents", headers=auth(b)).json()["data"]}
    ids_a = {x["id"] for x in httpx.get(gateway.url + "/agents", headers=auth(a)).json()["data"]}
    assert mine["id"] not in ids_b and set(globals_.values()) <= ids_b
    assert ids_a == ids_b | {mine["id"]}
    assert httpx.delete(gateway.url + f"/agents/{mine['id']}", headers=auth(b)).status_code == 404
    assert httpx.delete(gateway.url + f"/agents/{globals_['math']}", headers=auth(a)).status_code == 403
    admin_view = {x["id"]: x for x in httpx.get(gateway.url + "/agents", headers=auth(ADMIN)).json()["data"]}
    assert admin_view[mine["id"]]["key_id"] is not None and admin_view[globals_["math"]]["owner"] == "global"

    router_llm.reply = f"<Reason>private</Reason><ID>{mine['id']}</ID>"
    client_b = openai.OpenAI(base_url=gateway.url, api_key=b, max_retries=0)
    res = client_b.chat.completions.create(model="tcar", messages=MSG, max_tokens=3)
    assert mine["id"] not in router_llm.last_prompt()
    assert tcar_decision(res.model_extra["tandem"]["decision"])["fallback"] == "embedding"
    client_a = openai.OpenAI(base_url=gateway.url, api_key=a, max_retries=0)
    res = client_a.chat.completions.create(model="tcar", messages=MSG, max_tokens=3)
    assert tcar_decision(res.model_extra["tandem"]["decision"])["chosen"] == [mine["id"]]


def test_agent_api_validation(gateway, globals_):
    key = new_key(gateway, "validation")
    body = {"name": "x", "description": "y", "route": "no-such-route"}
    r = httpx.post(gateway.url + "/agents", json=body, headers=auth(key))
    assert r.status_code == 400 and r.json()["error"]["param"] == "route"
    r = httpx.post(gateway.url + "/agents", json={**body, "route": "tcar"}, headers=auth(key))
    assert r.status_code == 400 and r.json()["error"]["param"] == "route"
    r = httpx.post(gateway.url + "/agents", json={"name": "x", "route": "math-agent"}, headers=auth(key))
    assert r.status_code == 400 and r.json()["error"]["param"] == "description"
    assert httpx.get(gateway.url + "/agents").status_code == 401
    assert httpx.get(gateway.url + "/agents", headers=auth("tdm-wrong")).status_code == 401

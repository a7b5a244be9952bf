"""The embedded default's ``fusionroute`` route (zoo small as the tuned router over the three zoo experts): served by a
real gateway subprocess, a streamed client call gets the same answer as the strategy run in process from the same
router file, with every token credited to an expert and usage for the router and the experts."""

from __future__ import annotations

import asyncio

import openai
import pytest

from gateway.config import default_config

PROMPT = "db shop: how many customers?"


def _fusion_route() -> dict:
    cfg = default_config()
    route = next((r for r in cfg.routes if r.name == "fusionroute"), None)
    if route is None:
        pytest.skip("no collab/artifacts/fusionroute-mixed.pt or zoo experts: the default has no fusionroute route")
    members = set(route.members.values())
    backends = [b.model_dump(exclude_none=True) for b in cfg.backends if b.name in members]
    return {"backends": backends, "routes": [route.model_dump(exclude_none=True)]}


def _in_process(cfg: dict, max_tokens: int) -> str:
    from collab.inproc import HFModel
    from collab.registry import default_strategy_registry
    from collab.session import Session

    paths = {b["name"]: b["path"] for b in cfg["backends"]}
    route = cfg["routes"][0]
    models = {n: HFModel(n, p) for n, p in paths.items()}
    tok = models[route["members"]["router"]].tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    stops = {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}
    session = Session(models, ids, stop_ids=stops, decode=lambda t: tok.decode(t, skip_special_tokens=True))
    strategy = default_strategy_registry().build_from_artifact("fusionroute", route["artifact"], **route["members"])
    return asyncio.run(strategy.run(session, max_tokens)).text


def test_default_fusionroute_route_serves_the_trained_router(gateway_factory) -> None:
    cfg = _fusion_route()
    experts = {v for k, v in cfg["routes"][0]["members"].items() if k != "router"}
    g = gateway_factory(cfg)
    client = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0, timeout=120)
    chunks = list(client.chat.completions.create(
        model="fusionroute", messages=[{"role": "user", "content": PROMPT}], max_tokens=48, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    writers = {c.model_extra["tandem"]["model"] for c in chunks
               if c.choices and c.choices[0].delta.content and c.model_extra.get("tandem")}
    assert text and writers and writers <= experts
    used = {u["model"] for u in chunks[-1].model_extra["tandem"]["usage"]}
    assert "small" in used and used - {"small"} <= experts
    assert text == _in_process(cfg, 48)

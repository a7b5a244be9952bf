"""A route of kind ``collab``: member backends write one answer together; the stream says which member wrote each
piece, and the usage prices every member with its own price; the members' shared tokenizer."""

from __future__ import annotations

import openai
import pytest

from evals.zoo.llama import make_llama


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory, zoo_tokenizer_dir):
    return make_llama(tmp_path_factory.mktemp("big") / "big", layers=2, hidden=128, heads=4, seed=1,
                      tokenizer_dir=zoo_tokenizer_dir)


def test_collab_route_streams_provenance_and_prices_each_member(gateway_factory, tiny_model_dir, second_model_dir):
    cfg = {
        "backends": [
            {"name": "small", "kind": "local", "path": str(tiny_model_dir),
             "price": {"input_per_mtok": 1, "output_per_mtok": 2}},
            {"name": "large", "kind": "local", "path": str(second_model_dir),
             "price": {"input_per_mtok": 10, "output_per_mtok": 20}},
        ],
        "routes": [
            {"name": "r2r-all-large", "kind": "collab", "strategy": "r2r", "members": {"slm": "small", "llm": "large"},
             "params": {"tau": 0.0}},
            {"name": "r2r-all-small", "kind": "collab", "strategy": "r2r", "members": {"slm": "small", "llm": "large"},
             "params": {"tau": 1.0}},
            {"name": "draft-only", "kind": "collab", "strategy": "arbitrage",
             "members": {"draft": "small", "target": "large"}, "params": {"mode": "draft"}},
        ],
    }
    g = gateway_factory(cfg)
    client = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0)
    msg = [{"role": "user", "content": "12*7"}]
    kw = dict(messages=msg, max_tokens=8, extra_body={"ignore_eos": True})

    large_only = client.chat.completions.create(model="large", **kw).choices[0].message.content
    chunks = list(client.chat.completions.create(model="r2r-all-large", stream=True,
                                                 stream_options={"include_usage": True}, **kw))
    writers = {c.model_extra["tandem"]["model"] for c in chunks if c.choices and c.choices[0].delta.content}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert writers <= {"large"} and text == large_only
    usage = {u["model"]: u for u in chunks[-1].model_extra["tandem"]["usage"]}
    assert usage["large"]["completion_tokens"] >= 1
    expected = sum(u["prompt_tokens"] * p_in + u["completion_tokens"] * p_out for u, (p_in, p_out) in
                   ((usage[m], prices) for m, prices in (("large", (10e-6, 20e-6)), ("small", (1e-6, 2e-6)))
                    if m in usage))
    assert chunks[-1].model_extra["tandem"]["cost_usd"] == pytest.approx(expected, rel=1e-6)

    small = client.chat.completions.create(model="r2r-all-small", **kw)
    assert small.choices[0].message.content == client.chat.completions.create(model="small", **kw).choices[
        0].message.content
    prov = small.model_extra["tandem"]["provenance"]
    assert {p["model"] for p in prov} <= {"small"}

    draft = client.chat.completions.create(model="draft-only", **kw)
    assert {u["model"] for u in draft.model_extra["tandem"]["usage"] if u["completion_tokens"]} == {"small"}

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="r2r-all-large", messages=msg, max_tokens=4, n=2)


class _Member:
    """A stand-in member backend; ``tokenizer`` set only when given (a backend that names none lacks it)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_shared_tokenizer_comes_from_the_first_member_that_names_one(tiny_model_dir):
    from gateway.backends.collab_backend import HasTokenizer, shared_tokenizer

    loaded = object()
    assert isinstance(_Member(tokenizer=None), HasTokenizer) and not isinstance(_Member(), HasTokenizer)
    assert shared_tokenizer({"a": _Member(), "b": _Member(tokenizer=None), "c": _Member(tokenizer=loaded)},
                            None) is loaded
    tok = shared_tokenizer({"a": _Member(tokenizer=str(tiny_model_dir)), "b": _Member(tokenizer=loaded)}, None)
    assert tok is not loaded and tok.decode(tok("12*7", add_special_tokens=False)["input_ids"]) == "12*7"
    with pytest.raises(ValueError, match="no member has a tokenizer"):
        shared_tokenizer({"a": _Member(), "b": _Member(tokenizer=None)}, None)


def test_a_hidden_state_router_needs_an_in_process_small_model(tiny_model_dir, tmp_path):
    """R2R's router file trained with --hidden reads the small model's hidden state: over a remote (OpenAI-protocol)
    small model the route is refused at start, naming the member; the logprobs-only router is accepted there, and the
    hidden-state one over an in-process small model."""
    from collab.r2r import R2RRouter
    from collab.registry import default_strategy_registry
    from gateway.backends.collab_backend import CollabBackend
    from gateway.backends.local import LocalBackend
    from gateway.backends.openai_http import OpenAIHTTPBackend
    from gateway.config import LocalBackendConfig
    from gateway.errors import ConfigError

    local = LocalBackend.from_config(LocalBackendConfig(name="local", path=str(tiny_model_dir), device="cpu"))
    remote = OpenAIHTTPBackend("remote", "http://127.0.0.1:9/v1", tokenizer=str(tiny_model_dir))
    hidden_router, logprob_router = tmp_path / "hidden.pt", tmp_path / "logprobs.pt"
    R2RRouter(512, hidden_size=64).save(hidden_router, tau=0.5)
    R2RRouter(512).save(logprob_router, tau=0.5)
    strategies = default_strategy_registry()

    def build(slm, artifact):
        return CollabBackend("r2r", "r2r", {slm.name: slm, "local": local}, {"slm": slm.name, "llm": "local"},
                             strategies, str(artifact), tokenizer=str(tiny_model_dir))

    with pytest.raises(ConfigError, match="hidden state of 'remote'"):
        build(remote, hidden_router)
    assert build(remote, logprob_router).members["remote"] is remote
    assert build(local, hidden_router).members["local"] is local

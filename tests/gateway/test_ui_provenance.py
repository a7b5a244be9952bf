"""Who wrote which part of an answer, from a real request to the page: ``tandem serve`` in a subprocess with two tiny
in-process models and a collaboration that mixes them (``tests.fixtures.mixing_collab``: the draft writes the first
step, the target the rest), driven by the official ``openai`` client. The request log keeps the answer's runs
(``/ui/api/requests`` returns them) for non-streamed, streamed and cached answers — the same runs the client was sent,
concatenating to the logged response — and none for a plain backend or a key that does not log prompts. In headless
Chromium the page draws the response as one span per run in its model's colour (the usage chip's), names the model
in a legend and a tooltip, and shows a ``<script>`` inside a run as text with nothing run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from bench.chromium_cdp import Chromium, find_chromium
from evals.gateway_process import start_gateway
from evals.zoo.llama import make_llama
from gateway.storage.db import make_engine
from gateway.storage.request_log import LogRow, write_rows
from tests.fixtures.mixing_collab import mixing_route, step_index_router

ADMIN = "admin-provenance-test-key"
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> & </td>'
MEMBERS = {"tiny-s", "tiny-l"}
ASK = dict(messages=[{"role": "user", "content": "12*7"}], max_tokens=9, temperature=0)


@pytest.fixture(scope="module")
def prov_gw(tmp_path_factory, tiny_model_dir, zoo_tokenizer_dir):
    work = tmp_path_factory.mktemp("gw-provenance")
    other = make_llama(work / "other", layers=2, hidden=128, heads=4, seed=1, tokenizer_dir=zoo_tokenizer_dir)
    router = step_index_router(work / "step-index.pt")
    cfg = {
        "backends": [
            {"name": "tiny-s", "kind": "local", "path": str(tiny_model_dir), "price": {"input_per_mtok": 1, "output_per_mtok": 1}},
            {"name": "tiny-l", "kind": "local", "path": str(other), "price": {"input_per_mtok": 5, "output_per_mtok": 5}},
        ],
        "routes": [mixing_route("mix", "tiny-s", "tiny-l", router),
                   mixing_route("mix-cached", "tiny-s", "tiny-l", router, cache={"ttl_s": 600})],
        "default_route": "mix",
    }
    g = start_gateway(cfg, work, env={"TANDEM_ADMIN_KEY": ADMIN})
    yield g
    g.stop()


def _client(g, key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url, api_key=key, max_retries=0, timeout=120)


def _logged(g, request_id: str) -> dict:
    """The request's row as ``/ui/api/requests`` returns it (waits for the background writer)."""
    for _ in range(200):
        rows = httpx.get(g.base + "/ui/api/requests?limit=500", headers={"authorization": f"Bearer {ADMIN}"},
                         timeout=30).json()["data"]
        found = [r for r in rows if r["id"] == request_id]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} not logged")


def _client_runs(chunks) -> list[dict[str, str]]:
    """Runs as the streaming client saw them: each content piece with the model its chunk named."""
    runs: list[dict[str, str]] = []
    for c in chunks:
        if not c.choices or not c.choices[0].delta.content:
            continue
        model, piece = c.model_extra["tandem"]["model"], c.choices[0].delta.content
        if runs and runs[-1]["model"] == model:
            runs[-1]["text"] += piece
        else:
            runs.append({"model": model, "text": piece})
    return runs


def _stream(client: openai.OpenAI, model: str) -> tuple[str, list, str]:
    chunks = list(client.chat.completions.create(model=model, stream=True, **ASK))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, chunks[-1].model_extra["tandem"]["request_id"]


def _assert_runs_of(row: dict, text: str) -> list[dict[str, str]]:
    runs = row["provenance"]
    assert runs and row["response"] == text and "".join(r["text"] for r in runs) == text
    assert all(r["text"] for r in runs) and all(a["model"] != b["model"] for a, b in zip(runs, runs[1:]))
    return runs


def test_logged_runs_are_the_runs_the_client_got(prov_gw) -> None:
    client = _client(prov_gw)

    # non-streamed: the row's runs are the response's tandem.provenance, and the answer mixes both members
    whole = client.chat.completions.create(model="mix", **ASK)
    tandem = whole.model_extra["tandem"]
    row = _logged(prov_gw, tandem["request_id"])
    runs = _assert_runs_of(row, whole.choices[0].message.content)
    assert runs == tandem["provenance"]
    assert {r["model"] for r in runs} == MEMBERS and runs[0]["model"] == "tiny-s"  # the draft's first step
    assert {u["model"] for u in row["usage"] if u["completion_tokens"]} == MEMBERS

    # streamed: the row's runs are the chunks' writers, merged
    text, chunks, rid = _stream(client, "mix")
    streamed = _assert_runs_of(_logged(prov_gw, rid), text)
    assert streamed == _client_runs(chunks) and {r["model"] for r in streamed} == MEMBERS
    assert text == whole.choices[0].message.content  # greedy: the same answer either way

    # cached: a hit logs the stored answer's runs, whole and streamed
    first = client.chat.completions.create(model="mix-cached", **ASK)
    again = client.chat.completions.create(model="mix-cached", **ASK)
    assert again.model_extra["tandem"]["decision"]["cache"] == "hit"
    hit_row = _logged(prov_gw, again.model_extra["tandem"]["request_id"])
    assert hit_row["decision"]["cache"] == "hit" and hit_row["cost_usd"] == 0
    assert _assert_runs_of(hit_row, again.choices[0].message.content) == first.model_extra["tandem"]["provenance"]
    text, chunks, rid = _stream(client, "mix-cached")
    hit_stream = _logged(prov_gw, rid)
    assert hit_stream["decision"]["cache"] == "hit"
    assert _assert_runs_of(hit_stream, text) == _client_runs(chunks) == first.model_extra["tandem"]["provenance"]

    # one plain backend: no runs (the chosen model wrote it all), the text as before
    plain = client.chat.completions.create(model="tiny-s", **ASK)
    plain_row = _logged(prov_gw, plain.model_extra["tandem"]["request_id"])
    assert plain_row["provenance"] is None and plain_row["response"] == plain.choices[0].message.content
    text, _, rid = _stream(client, "tiny-s")
    assert _logged(prov_gw, rid)["provenance"] is None

    # a key that does not log prompts logs no runs either
    quiet = httpx.post(prov_gw.base + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"},
                       json={"name": "quiet", "log_prompts": False}, timeout=30).json()
    for rid in (_client(prov_gw, quiet["key"]).chat.completions.create(model="mix", **ASK).model_extra["tandem"][
            "request_id"], _stream(_client(prov_gw, quiet["key"]), "mix")[2]):
        r = _logged(prov_gw, rid)
        assert r["key_id"] == quiet["id"] and r["response"] is None and r["provenance"] is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_page_colours_the_response_by_writer(prov_gw, tmp_path) -> None:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed")
    client = _client(prov_gw)
    mixed_id = client.chat.completions.create(model="mix", **ASK).model_extra["tandem"]["request_id"]
    mixed = _logged(prov_gw, mixed_id)
    plain_id = client.chat.completions.create(model="tiny-s", **ASK).model_extra["tandem"]["request_id"]
    # Logged text is user input, a model's included: a run holding markup, as a model could have written it.
    engine = make_engine(prov_gw.db_url)
    try:
        write_rows(engine, [LogRow(id="xss-run", route="mix", model_chosen="mix", created_at=time.time(),
                                   usage=[{"model": "tiny-s", "prompt_tokens": 1, "completion_tokens": 5},
                                          {"model": "tiny-l", "prompt_tokens": 1, "completion_tokens": 2}],
                                   prompt=[{"role": "user", "content": "markup please"}], response=XSS + " ok",
                                   provenance=[{"model": "tiny-s", "text": XSS}, {"model": "tiny-l", "text": " ok"}],
                                   ).to_params()])
    finally:
        engine.dispose()
    _logged(prov_gw, "xss-run")

    def spans(rid: str) -> list[dict]:
        return br.eval(f"""[...document.querySelector("tr.req[data-id='{rid}']").nextElementSibling
            .querySelectorAll('.msg.response .run')].map(s => ({{model: s.dataset.model, text: s.textContent,
            title: s.title, bg: getComputedStyle(s).backgroundColor, line: getComputedStyle(s).borderBottomColor}}))""")

    def chip_colour(rid: str, model: str) -> str:
        sel = f"tr.req[data-id='{rid}'] .chip[data-model='{model}'] .swatch"
        return br.eval(f'getComputedStyle(document.querySelector("{sel}")).backgroundColor')

    with Chromium(binary, width=1400, height=1000) as br:
        br.navigate(prov_gw.base + "/ui")
        br.wait_for("document.body.dataset.view === 'login'")
        br.type_into("#admin-key", ADMIN)
        br.click("#login-form button[type=submit]")
        br.wait_for("document.body.dataset.loaded === '1'")
        br.eval("document.querySelectorAll('#requests details').forEach(d => d.open = true)")

        got = spans(mixed_id)
        assert [{"model": s["model"], "text": s["text"]} for s in got] == mixed["provenance"]
        assert "".join(s["text"] for s in got) == mixed["response"]
        by_model: dict[str, set[tuple[str, str]]] = {}
        for s in got:
            by_model.setdefault(s["model"], set()).add((s["bg"], s["line"]))
            assert s["title"] == s["model"]
        assert set(by_model) == MEMBERS and all(len(v) == 1 for v in by_model.values())  # one colour per model
        (small,), (large,) = by_model["tiny-s"], by_model["tiny-l"]
        assert small[0] != large[0] and small[1] != large[1]  # different models, different colours
        for m in MEMBERS:  # ... the colour of the model's usage chip
            assert next(iter(by_model[m]))[1] == chip_colour(mixed_id, m)
        legend = br.eval(f"""document.querySelector("tr.req[data-id='{mixed_id}']").nextElementSibling
            .querySelector('.writers').textContent""")
        assert all(m in legend for m in MEMBERS)

        # without runs the response is one text, as before
        assert spans(plain_id) == []
        plain_text = br.eval(f"""document.querySelector("tr.req[data-id='{plain_id}']").nextElementSibling
            .querySelector('.msg.response .text').textContent""")
        assert plain_text == _logged(prov_gw, plain_id)["response"]

        # markup inside a run is text; nothing of it ran
        xss = spans("xss-run")
        assert [s["text"] for s in xss] == [XSS, " ok"] and xss[0]["bg"] != xss[1]["bg"]
        assert br.eval("document.querySelectorAll('#requests img, #requests script, main script').length") == 0
        time.sleep(0.3)
        assert br.eval("window.__xss") is None
        assert br.exceptions == [], br.exceptions

        shots = Path(os.environ.get("TANDEM_UI_SCREENSHOTS", tmp_path))
        shot = br.screenshot(shots / "ui-provenance.png", selector="section.panel:has(#requests)", max_height=1000)
        assert shot.stat().st_size > 10_000

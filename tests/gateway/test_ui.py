"""The operator's page at ``/ui`` in real headless Chromium (driven over the DevTools protocol), against ``tandem
serve`` in a subprocess whose log was filled through its own API: the official ``openai`` client through backend,
router and collaboration routes (the upstream stub and two tiny in-process models). The browser logs in, sees an
empty log, then charts, router mix and member shares drawn from what was sent, changes a budget and revokes a key
from the page (and that key's next request is refused), and shows a logged ``<script>`` prompt as text with no
script run. Also: the page's headers (CSP, no-store), admin-key checks and bad parameters of ``/ui/api``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from bench.chromium_cdp import Chromium, find_chromium
from bench.upstream_stub import start_stub
from evals.gateway_process import start_gateway, stop_process
from evals.zoo.llama import make_llama
from routers.base import Record
from routers.registry import default_router_registry
from tests.fixtures.mixing_collab import mixing_route, step_index_router

ADMIN = "admin-ui-test-key"
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> & </td>'
PICK_PROMPTS = [f"question number {i}" for i in range(8)]


def _random_router(tmp_path: Path) -> str:
    records = [Record(prompt=f"q{i}", candidate=c, score=s, cost=cost) for i in range(10)
               for c, s, cost in (("cheap", 0.0, 0.001), ("dear", 1.0, 0.01))]
    path = tmp_path / "random.pkl"
    default_router_registry().create("random").fit(records).save(path)
    return str(path)


@pytest.fixture(scope="module")
def ui_gw(tmp_path_factory, tiny_model_dir, zoo_tokenizer_dir):
    work = tmp_path_factory.mktemp("gw-ui")
    other = make_llama(work / "other", layers=2, hidden=128, heads=4, seed=1, tokenizer_dir=zoo_tokenizer_dir)
    stub, url = start_stub(tokens=4)
    cfg = {
        "backends": [
            {"name": "stub-cheap", "kind": "openai", "base_url": url, "price": {"input_per_mtok": 1, "output_per_mtok": 2}},
            {"name": "stub-dear", "kind": "openai", "base_url": url, "price": {"input_per_mtok": 10, "output_per_mtok": 20}},
            {"name": "tiny-s", "kind": "local", "path": str(tiny_model_dir), "price": {"input_per_mtok": 1, "output_per_mtok": 1}},
            {"name": "tiny-l", "kind": "local", "path": str(other), "price": {"input_per_mtok": 5, "output_per_mtok": 5}},
        ],
        "routes": [
            {"name": "cheap", "backend": "stub-cheap"},
            {"name": "dear", "backend": "stub-dear"},
            {"name": "pick", "kind": "router", "router": "random", "artifact": _random_router(work),
             "candidates": ["cheap", "dear"]},
            mixing_route("duo", "tiny-s", "tiny-l", step_index_router(work / "step-index.pt")),
        ],
        "default_route": "cheap",
        "auth": {"require_keys": True},
    }
    g = start_gateway(cfg, work, env={"TANDEM_ADMIN_KEY": ADMIN})
    yield g
    g.stop()
    stop_process(stub)


def _admin(g, method: str, path: str, token: str | None = ADMIN, **kw) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, g.base + path, headers=headers, timeout=30, **kw)


def test_page_headers_auth_and_parameters(ui_gw):
    page = httpx.get(ui_gw.base + "/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script src=\"/ui/ui.js\"" in page.text and "<script>" not in page.text and " style=" not in page.text
    js = httpx.get(ui_gw.base + "/ui/ui.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert ".innerHTML" not in js.text and "document.cookie" not in js.text and "eval(" not in js.text
    assert httpx.get(ui_gw.base + "/ui/ui.css").status_code == 200
    assert httpx.get(ui_gw.base + "/ui/secret.py").status_code == 404
    for path in ("/ui/api/overview", "/ui/api/requests"):
        assert _admin(ui_gw, "GET", path, token=None).status_code == 401
        assert _admin(ui_gw, "GET", path, token="tdm-nope").status_code == 403
        ok = _admin(ui_gw, "GET", path)
        assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    for path, param in (("/ui/api/overview?hours=abc", "hours"), ("/ui/api/overview?hours=0", "hours"),
                        ("/ui/api/requests?limit=100000", "limit"), ("/ui/api/requests?before=zzz", "before")):
        r = _admin(ui_gw, "GET", path)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, path


def _wait_rows(g, n: int) -> list[dict]:
    for _ in range(100):
        rows = _admin(g, "GET", "/ui/api/requests?limit=200").json()["data"]
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"only {len(rows)} of {n} requests logged")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_page_in_chromium(ui_gw, tmp_path):
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed")
    a = _admin(ui_gw, "POST", "/admin/keys", json={"name": "team-a", "budget_usd": 5.0}).json()
    b = _admin(ui_gw, "POST", "/admin/keys", json={"name": "team-b"}).json()

    with Chromium(binary, width=1400, height=1000) as br:
        # 1. the login form; a wrong key stays on it with the server's message
        br.navigate(ui_gw.base + "/ui")
        br.wait_for("document.body.dataset.view === 'login'")
        br.type_into("#admin-key", "not-the-admin-key")
        br.click("#login-form button[type=submit]")
        br.wait_for("document.getElementById('login-error').textContent.includes('admin key')")
        assert br.eval("sessionStorage.getItem('tandem-admin-key')") is None
        # 2. an empty log renders
        br.type_into("#admin-key", ADMIN)
        br.click("#login-form button[type=submit]")
        br.wait_for("document.body.dataset.loaded === '1'")
        assert br.eval("document.body.dataset.view") == "app"
        assert br.eval("document.cookie") == ""  # the key is never a cookie
        assert br.eval("document.getElementById('chart-requests').dataset.series") == "0"
        assert "no requests" in br.eval("document.getElementById('chart-requests').textContent")
        assert br.eval("document.querySelectorAll('#keys tr[data-key]').length") == 2

        # 3. fill the log through the gateway's own API
        ca = openai.OpenAI(base_url=ui_gw.url, api_key=a["key"], max_retries=0, timeout=120)
        cb = openai.OpenAI(base_url=ui_gw.url, api_key=b["key"], max_retries=0, timeout=120)
        for p in PICK_PROMPTS:
            ca.chat.completions.create(model="pick", messages=[{"role": "user", "content": p}], max_tokens=4)
        ca.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        list(cb.chat.completions.create(model="dear", messages=[{"role": "user", "content": "streamed"}], max_tokens=4,
                                        stream=True))
        cb.chat.completions.create(model="duo", messages=[{"role": "user", "content": "12*7"}], max_tokens=32,
                                   extra_body={"ignore_eos": True})
        cb.chat.completions.create(model="cheap", messages=[{"role": "user", "content": XSS}], max_tokens=4)
        with pytest.raises(openai.NotFoundError):
            ca.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "x"}])
        rows = _wait_rows(ui_gw, 13)
        picked = {r["decision"]["routers"][0]["chosen"] for r in rows if r["route"] == "pick"}

        br.click("#refresh")
        br.wait_for("document.body.dataset.loaded === '1' && document.getElementById('requests').dataset.rows === '13'")
        # charts: one series per route seen (cheap, dear, pick, duo and the unknown route's error)
        series = int(br.eval("document.getElementById('chart-requests').dataset.series"))
        assert series == 5
        assert int(br.eval("document.getElementById('chart-errors').dataset.series")) == 5
        assert br.eval("document.querySelectorAll('#chart-requests svg path.series').length") == 5
        legend = br.eval("document.getElementById('legend').textContent")
        assert all(n in legend for n in ("pick", "cheap", "dear", "duo", "no-such-route"))
        assert br.eval("document.getElementById('totals').textContent").startswith("requests13")
        # per key: team-a, team-b (the unknown route's request was a's)
        br.eval("(() => { const s = document.getElementById('group-by'); s.value = 'key'; "
                "s.dispatchEvent(new Event('change')); })()")
        assert "team-a" in br.eval("document.getElementById('legend').textContent")
        assert int(br.eval("document.getElementById('chart-requests').dataset.series")) == 2
        # the router's mix: every decision counted, the candidates it picked
        router = br.eval("document.querySelector('#routers .router[data-route=pick]').textContent")
        assert f"pick — {len(PICK_PROMPTS)} decisions" in router
        assert all(c in router for c in picked)
        assert br.eval("document.querySelector('#routers .router svg.bar').dataset.parts") == str(len(picked))
        # the collaboration's members and their share (the draft writes the first step, the target the rest)
        collab = br.eval("document.querySelector('#collab .collab[data-route=duo]').textContent")
        assert "tiny-s" in collab and "tiny-l" in collab
        assert br.eval("document.querySelector('#collab .collab[data-route=duo] svg.bar').dataset.parts") == "2"
        # latency: a row per route
        lat = br.eval("[...document.querySelectorAll('#latency tbody tr')].map(r => r.cells[0].textContent)")
        assert set(lat) == {"pick", "cheap", "dear", "duo", "no-such-route"}

        # 4. logged text is text: the XSS prompt shows as its characters and nothing of it ran
        texts = br.eval("[...document.querySelectorAll('#requests .msg .text')].map(e => e.textContent)")
        assert XSS in texts
        assert br.eval("document.querySelectorAll('#requests img, #requests script, main script').length") == 0
        br.eval("document.querySelectorAll('#requests details').forEach(d => d.open = true)")
        time.sleep(0.3)
        assert br.eval("window.__xss") is None
        assert br.exceptions == [], br.exceptions

        shots = Path(os.environ.get("TANDEM_UI_SCREENSHOTS", tmp_path))
        shot = br.screenshot(shots / "ui-requests.png", selector="section.panel:has(#requests)", max_height=1400)
        assert shot.stat().st_size > 10_000

        # 5. change a budget from the page: team-a's next request is over it
        br.type_into(f"#keys tr[data-key='{a['id']}'] input.budget", "0")
        br.click(f"#keys tr[data-key='{a['id']}'] button.set-budget")
        br.wait_for(f"document.querySelector(\"#keys tr[data-key='{a['id']}'] td.left\").textContent === '$0'")
        with pytest.raises(openai.RateLimitError):
            ca.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hi"}], max_tokens=4)

        # 6. revoke from the page (two clicks: arm, confirm): team-b's next request is refused
        cb.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "still ok"}], max_tokens=4)
        revoke = f"#keys tr[data-key='{b['id']}'] button.revoke"
        br.click(revoke)
        assert br.eval(f"document.querySelector(\"{revoke}\").textContent") == "Confirm revoke"
        br.click(revoke)
        br.wait_for(f"document.querySelector(\"#keys tr[data-key='{b['id']}'] td.state\").textContent === 'revoked'")
        with pytest.raises(openai.AuthenticationError) as e:
            cb.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "after"}], max_tokens=4)
        assert e.value.status_code == 401
        # ... and the page shows that refusal as the newest request
        deadline = time.monotonic() + 20
        while True:
            br.click("#refresh")
            br.wait_for("document.body.dataset.loaded === '1'")
            newest = br.eval("document.querySelector('#requests tr.req td.status').textContent")
            if newest.startswith("401") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert newest.startswith("401") and "revoked" in newest
        assert br.eval("document.querySelectorAll('#requests tr.req.err').length") >= 3
        assert br.exceptions == [], br.exceptions

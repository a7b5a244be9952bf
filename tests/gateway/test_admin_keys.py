"""Keys over HTTP (``/admin/keys``) against ``tandem serve`` in a subprocess in front of the upstream stub: the admin
key is required, bad bodies are 400s naming the field, the secret is shown once and only its hash is stored, a
revoked key is refused at once by the process that revoked it, a changed budget applies to the next request, and the
CLI sees what HTTP made."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from bench.upstream_stub import start_stub
from evals.gateway_process import start_gateway, stop_process

ADMIN = "admin-test-key-123"
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    stub, url = start_stub(tokens=3)
    cfg = {"backends": [{"name": "stub", "kind": "openai", "base_url": url,
                         "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}],
           "routes": [{"name": "chat", "backend": "stub"}], "default_route": "chat",
           "auth": {"require_keys": True}}
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-admin-keys"), env={"TANDEM_ADMIN_KEY": ADMIN})
    yield g
    g.stop()
    stop_process(stub)


def admin(g, method: str, path: str, token: str | None = ADMIN, **kw) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, g.base + path, headers=headers, timeout=30, **kw)


def chat(g, key: str):
    return openai.OpenAI(base_url=g.url, api_key=key, max_retries=0).chat.completions.create(
        model="chat", messages=MSG, max_tokens=3)


@pytest.mark.parametrize("method,path", [("POST", "/admin/keys"), ("GET", "/admin/keys"),
                                         ("GET", "/admin/keys/key_x"), ("PATCH", "/admin/keys/key_x"),
                                         ("DELETE", "/admin/keys/key_x")])
def test_admin_key_required(gw, method, path):
    body = {"json": {"name": "x"}} if method in ("POST", "PATCH") else {}
    none = admin(gw, method, path, token=None, **body)
    assert none.status_code == 401 and none.json()["error"]["code"] == "invalid_api_key"
    wrong = admin(gw, method, path, token="tdm-not-the-admin", **body)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "permission_denied"
    assert {"message", "type", "param", "code"} <= set(wrong.json()["error"])


def test_create_shows_the_secret_once_and_stores_only_its_hash(gw):
    r = admin(gw, "POST", "/admin/keys", json={"name": "team-a", "budget_usd": 2.5, "rpm": 100, "tpm": 50_000,
                                               "log_prompts": False})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    made = r.json()
    secret = made["key"]
    assert secret.startswith("tdm-") and made["id"].startswith("key_")
    assert (made["name"], made["budget_usd"], made["rpm"], made["tpm"], made["log_prompts"], made["revoked"]) == (
        "team-a", 2.5, 100, 50_000, False, False)
    assert "key_hash" not in made

    listed = admin(gw, "GET", "/admin/keys").json()["data"]
    one = admin(gw, "GET", f"/admin/keys/{made['id']}").json()
    for shown in [*listed, one]:
        assert secret not in json.dumps(shown) and "key_hash" not in shown
    assert made["id"] in {k["id"] for k in listed}

    with create_engine(gw.db_url).connect() as c:
        rows = [dict(r._mapping) for r in c.execute(text("select * from api_keys where id = :i"), {"i": made["id"]})]
    assert rows[0]["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret[4:20] not in str(v) for v in rows[0].values())

    assert chat(gw, secret).usage.completion_tokens == 3  # the shown secret is a working key


@pytest.mark.parametrize("body,field", [
    ({"budget_usd": -1}, "budget_usd"), ({"budget_usd": "5"}, "budget_usd"), ({"rpm": 0}, "rpm"),
    ({"tpm": 1.5}, "tpm"), ({"log_prompts": "yes"}, "log_prompts"), ({"name": "x" * 201}, "name"),
    ({"colour": "red"}, "colour"), ({"rpm": True}, "rpm"),
])
def test_bad_bodies_are_400_naming_the_field(gw, body, field):
    for method, path in (("POST", "/admin/keys"), ("PATCH", f"/admin/keys/{_live_key(gw)['id']}")):
        r = admin(gw, method, path, json=body)
        assert r.status_code == 400, (method, body, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == field and field in err["message"]


def test_non_json_and_empty_bodies_are_400(gw):
    assert admin(gw, "POST", "/admin/keys", content=b"{nope").status_code == 400
    assert admin(gw, "POST", "/admin/keys", content=b"[1]").status_code == 400
    k = _live_key(gw)
    r = admin(gw, "PATCH", f"/admin/keys/{k['id']}", json={})
    assert r.status_code == 400 and "no field" in r.json()["error"]["message"]
    r = admin(gw, "PATCH", f"/admin/keys/{k['id']}", json={"log_prompts": None})
    assert r.status_code == 400 and r.json()["error"]["param"] == "log_prompts"
    assert admin(gw, "GET", "/admin/keys?include_revoked=maybe").status_code == 400


def test_unknown_ids_are_404(gw):
    for method in ("GET", "PATCH", "DELETE"):
        r = admin(gw, method, "/admin/keys/key_missing", **({"json": {"rpm": 5}} if method == "PATCH" else {}))
        assert r.status_code == 404 and r.json()["error"]["param"] == "key_id", method


def _live_key(g, **fields) -> dict:
    r = admin(g, "POST", "/admin/keys", json={"name": "t", **fields})
    assert r.status_code == 201
    return r.json()


def test_revoke_refuses_the_key_at_once(gw):
    k = _live_key(gw)
    chat(gw, k["key"])  # the lookup is now cached in the gateway for KEY_CACHE_S
    r = admin(gw, "DELETE", f"/admin/keys/{k['id']}")
    assert r.status_code == 200 and r.json() == {"id": k["id"], "object": "api_key", "revoked": True}
    with pytest.raises(openai.AuthenticationError):
        chat(gw, k["key"])
    assert admin(gw, "GET", f"/admin/keys/{k['id']}").json()["revoked"] is True
    assert k["id"] not in {x["id"] for x in admin(gw, "GET", "/admin/keys?include_revoked=false").json()["data"]}
    assert admin(gw, "DELETE", f"/admin/keys/{k['id']}").status_code == 200  # revoking twice is no error


def test_patch_changes_limits_for_the_next_request(gw):
    k = _live_key(gw, budget_usd=100.0)
    chat(gw, k["key"])
    r = admin(gw, "PATCH", f"/admin/keys/{k['id']}", json={"budget_usd": 0, "name": "renamed"})
    assert r.status_code == 200
    got = r.json()
    assert (got["budget_usd"], got["name"], got["rpm"]) == (0.0, "renamed", None)
    assert got["usage"]["spent_usd"] > 0 and got["usage"]["budget_left_usd"] == 0.0
    with pytest.raises(openai.RateLimitError) as e:
        chat(gw, k["key"])
    assert e.value.status_code == 429
    r = admin(gw, "PATCH", f"/admin/keys/{k['id']}", json={"budget_usd": None})  # null clears the budget
    assert r.status_code == 200 and r.json()["budget_usd"] is None and r.json()["usage"]["budget_left_usd"] is None
    assert chat(gw, k["key"]).usage.completion_tokens == 3


def test_listed_usage_counts_logged_spend(gw):
    k = _live_key(gw, budget_usd=1.0)
    for _ in range(3):
        chat(gw, k["key"])
    for _ in range(50):  # the request log is written in the background
        u = admin(gw, "GET", f"/admin/keys/{k['id']}").json()["usage"]
        if u["logged_requests"] == 3:
            break
    assert u["logged_requests"] == 3
    # the stub answers 3 completion tokens to a 1-token prompt: (1 * 1 + 3 * 2) dollars per million tokens
    assert u["logged_cost_usd"] == pytest.approx(3 * 7e-6, rel=1e-6)
    assert u["spent_usd"] == pytest.approx(u["logged_cost_usd"], rel=1e-6)
    assert u["budget_left_usd"] == pytest.approx(1.0 - u["spent_usd"], rel=1e-9)
    unlimited = _live_key(gw)
    chat(gw, unlimited["key"])
    assert admin(gw, "GET", f"/admin/keys/{unlimited['id']}").json()["usage"]["spent_usd"] is None


def test_cli_and_http_share_the_store(gw):
    made = _live_key(gw, rpm=7)
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "list", "--db", gw.db_url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = {k["id"]: k for k in map(json.loads, out.stdout.splitlines())}
    http = {k["id"]: k for k in admin(gw, "GET", "/admin/keys").json()["data"]}
    assert listed[made["id"]]["rpm"] == 7
    assert {i: {f: v for f, v in k.items() if f != "usage"} for i, k in http.items()} == listed
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "revoke", "--db", gw.db_url, "--id", "key_nope"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "no key" in out.stderr

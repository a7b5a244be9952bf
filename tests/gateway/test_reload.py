"""Reload without restart: ``POST /admin/reload`` (admin key) and SIGHUP re-read the config file; a bad file keeps
the old config running."""

from __future__ import annotations

import signal
import time

import httpx
import yaml

ADMIN = "admin-secret-for-tests"


def _routes(g) -> set[str]:
    return {m["id"] for m in httpx.get(g.url + "/models").json()["data"]}


def test_admin_reload_and_sighup(gateway_factory, tiny_model_dir):
    cfg = {"backends": [{"name": "tiny", "kind": "local", "path": str(tiny_model_dir)}]}
    g = gateway_factory(cfg, env={"TANDEM_ADMIN_KEY": ADMIN})
    assert _routes(g) == {"tiny"}

    cfg["routes"] = [{"name": "alias", "backend": "tiny"}]
    g.config_path.write_text(yaml.safe_dump({**yaml.safe_load(g.config_path.read_text()), "routes": cfg["routes"]}))
    assert httpx.post(g.base + "/admin/reload").status_code == 403
    assert httpx.post(g.base + "/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 403
    r = httpx.post(g.base + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert r.status_code == 200, r.text
    assert _routes(g) == {"tiny", "alias"}

    # A broken file: 400 naming the field, and the running config stays.
    good = g.config_path.read_text()
    g.config_path.write_text(good.replace("backend: tiny", "backend: missing"))
    r = httpx.post(g.base + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert r.status_code == 400 and "routes.0.backend" in r.json()["error"]["message"]
    assert _routes(g) == {"tiny", "alias"}

    # SIGHUP does the same as the endpoint.
    data = yaml.safe_load(good)
    data["routes"].append({"name": "alias2", "backend": "tiny"})
    g.config_path.write_text(yaml.safe_dump(data))
    g.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "alias2" in _routes(g):
            break
        time.sleep(0.1)
    assert _routes(g) == {"tiny", "alias", "alias2"}

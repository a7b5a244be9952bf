"""The gateway's subcommands (``python -m gateway.cli``): keys create/list/revoke against a real SQLite file; it
knows serve and keys only (the whole ``tandem`` command is ``evals.command``, tested in tests/evals)."""

from __future__ import annotations

import json
import subprocess
import sys

from gateway.storage.db import make_engine
from gateway.storage.keys import KeyStore


def tandem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=120)


def test_keys_create_list_revoke(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    out = tandem("keys", "create", "--db", db, "--name", "team-a", "--budget", "2.5", "--rpm", "10", "--tpm", "999")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["key"].startswith("tdm-") and made["budget_usd"] == 2.5 and made["rpm"] == 10 and made["tpm"] == 999
    store = KeyStore(make_engine(db))
    assert store.lookup(made["key"]).id == made["id"]
    listed = [json.loads(line) for line in tandem("keys", "list", "--db", db).stdout.splitlines()]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    assert tandem("keys", "revoke", "--db", db, "--id", made["id"]).returncode == 0
    assert store.lookup(made["key"]) is None


def test_gateway_cli_has_serve_and_keys_only():
    out = tandem("eval", "replay", "--help")
    assert out.returncode == 2 and "invalid choice: 'eval'" in out.stderr
    assert tandem("serve", "--help").returncode == 0 and tandem("keys", "--help").returncode == 0


def test_gateway_cli_passes_its_resolver_to_serve(monkeypatch):
    from gateway import cli

    got = {}
    def fake_serve(cfg, path, log_level, prm_resolver, workers, runtime):
        got.update(port=cfg.server.port, path=path, resolver=prm_resolver, workers=workers, runtime=runtime)
        return 0

    monkeypatch.setattr("gateway.serve.serve", fake_serve)
    resolver = object()
    assert cli.main(["serve", "--port", "0"], prm_resolver=resolver) == 0  # type: ignore[arg-type]
    assert got == {"port": 0, "path": None, "resolver": resolver, "workers": 1, "runtime": "tuned"}
    assert cli.main(["serve", "--port", "0", "--workers", "3", "--runtime", "default"]) == 0
    assert (got["workers"], got["runtime"]) == (3, "default")
    assert cli.main(["serve", "--port", "0"]) == 0 and got["resolver"] is None

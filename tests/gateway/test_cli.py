"""The ``tandem`` command: keys create/list/revoke against a real SQLite file, and delegation to other packages."""

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


def test_delegated_subcommand_without_a_known_word_is_a_usage_error():
    out = tandem("eval", "nonsense")
    assert out.returncode == 2 and "replay" in out.stderr

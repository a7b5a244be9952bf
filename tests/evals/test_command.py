"""The ``tandem`` console command (``evals.command``): every subcommand word reaches its owner with the same words as
before, ``--help`` works at every level, and ``serve`` gets the suite PRM resolver."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evals import command
from evals.collab_tasks import parse_prm


def tandem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evals.command", *args], capture_output=True, text=True, timeout=120)


def test_delegated_subcommand_without_a_known_word_is_a_usage_error():
    out = tandem("eval", "nonsense")
    assert out.returncode == 2 and "replay" in out.stderr
    assert tandem("eval").returncode == 2


@pytest.mark.parametrize("words,shows", [
    (("--help",), "serve"),
    (("eval", "--help"), "replay"),
    (("eval", "replay", "--help"), "--data"),
    (("eval", "live", "--help"), "--gateway"),
    (("eval", "collab", "--help"), "--strategy"),
    (("train", "--help"), "fusionroute"),
    (("train", "r2r", "--help"), "--slm"),
    (("train", "knn", "--help"), "--from-db"),
    (("zoo", "--help"), "build"),
    (("report", "--help"), "--out"),
    (("serve", "--help"), "--config"),
    (("keys", "--help"), "revoke"),
], ids=lambda w: " ".join(w) if isinstance(w, tuple) else None)
def test_help_at_every_level(words, shows):
    out = tandem(*words)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout and shows in out.stdout


def test_keys_through_the_command(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    made = tandem("keys", "create", "--db", db, "--name", "n")
    assert made.returncode == 0, made.stderr
    listed = tandem("keys", "list", "--db", db)
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [json.loads(made.stdout)["id"]]


def _recorder(calls: list, name: str):
    def run(argv: list[str]) -> int:
        calls.append((name, argv))
        return 7
    return run


def test_words_reach_their_owner_with_the_same_arguments_as_before(monkeypatch):
    calls: list[tuple[str, list[str]]] = []
    for fn in ("_eval_replay", "_eval_live", "_eval_collab", "_report", "_zoo", "_train_collab", "_train_router"):
        monkeypatch.setattr(command, fn, _recorder(calls, fn))
    cases = [
        (["eval", "replay", "--data", "x.csv"], ("_eval_replay", ["--data", "x.csv"])),
        (["eval", "live", "--gateway", "u"], ("_eval_live", ["live", "--gateway", "u"])),
        (["eval", "demo"], ("_eval_live", ["demo"])),
        (["eval", "collab", "--strategy", "r2r"], ("_eval_collab", ["--strategy", "r2r"])),
        (["report", "run1", "--out", "d"], ("_report", ["run1", "--out", "d"])),
        (["zoo", "build", "--steps", "3"], ("_zoo", ["build", "--steps", "3"])),
        (["train", "r2r", "--slm", "s"], ("_train_collab", ["r2r", "--slm", "s"])),
        (["train", "arbitrage"], ("_train_collab", ["arbitrage"])),
        (["train", "fusionroute"], ("_train_collab", ["fusionroute"])),
        (["train", "knn", "--from-db", "u", "--out", "f"], ("_train_router", ["knn", "--from-db", "u", "--out", "f"])),
        (["train"], ("_train_router", [])),
    ]
    for argv, expected in cases:
        calls.clear()
        assert command.main(argv) == 7
        assert calls == [expected], argv


def test_serve_gets_the_suite_prm_resolver(monkeypatch):
    got = {}
    monkeypatch.setattr(command.gateway_cli, "cmd_serve",
                        lambda args, prm_resolver=None: got.update(port=args.port, resolver=prm_resolver) or 0)
    assert command.main(["serve", "--port", "9"]) == 0
    assert got == {"port": 9, "resolver": parse_prm}


def test_unknown_serve_flag_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        command.main(["serve", "--bogus"])
    assert e.value.code == 2

"""The ``tandem`` command: serve, keys, and the entry points of the other packages (eval, …).

Each subcommand parses its own flags and calls into the package that does the work; nothing heavy is imported
until a subcommand needs it, so ``tandem --help`` is fast. What it leaves out: the work itself.
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.errors import ConfigError


def _load(path: str | None):
    from gateway.config import default_config, load_config

    return load_config(path) if path else default_config()


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    cfg = _load(args.config)
    if args.host:
        cfg.server.host = args.host
    if args.port is not None:
        cfg.server.port = args.port
    serve(cfg, args.config, log_level=args.log_level)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.storage.db import make_engine, migrate
    from gateway.storage.keys import KeyStore

    cfg = _load(args.config)
    engine = make_engine(args.db or cfg.storage.database_url)
    migrate(engine)
    store = KeyStore(engine)
    if args.action == "create":
        plaintext, key = store.create(name=args.name, budget_usd=args.budget, rpm=args.rpm, tpm=args.tpm,
                                      log_prompts=not args.no_log_prompts)
        print(json.dumps({"key": plaintext, "id": key.id, "name": key.name, "budget_usd": key.budget_usd,
                          "rpm": key.rpm, "tpm": key.tpm, "log_prompts": key.log_prompts}))
        print("store this key now: only its hash is kept", file=sys.stderr)
    elif args.action == "list":
        for k in store.list():
            print(json.dumps({"id": k.id, "name": k.name, "budget_usd": k.budget_usd, "rpm": k.rpm, "tpm": k.tpm,
                              "revoked": k.revoked}))
    elif args.action == "revoke":
        if not args.id:
            print("tandem keys revoke needs --id", file=sys.stderr)
            return 2
        store.revoke(args.id)
        print(json.dumps({"revoked": args.id}))
    return 0


# Subcommands whose flags belong to another package: (command, first word) -> "module:function(argv) -> int".
# The function gets the words after the command (its own subcommand word first), except where STRIP_WORD says the
# function is that subcommand already.
STRIP_WORD = {("eval", "replay"), ("eval", "collab")}
DELEGATED = {
    ("eval", "replay"): "evals.replay:main",
    ("eval", "live"): "evals.cli:main",
    ("eval", "demo"): "evals.cli:main",
    ("eval", "collab"): "evals.collab_eval:main",
    ("report", None): "evals.cli:report_main",
    ("zoo", None): "evals.zoo.cli:main",
    ("train", "r2r"): "evals.collab_train:main",
    ("train", "fusionroute"): "evals.collab_train:main",
    ("train", "arbitrage"): "evals.collab_train:main",
    ("train", None): "evals.router_training:main",  # any query-level router: tandem train knn --from-db URL --out FILE
}


def run_delegated(command: str, rest: list[str]) -> int:
    """Hand ``rest`` to the package that owns the subcommand (imported only now)."""
    import importlib

    first = rest[0] if rest else None
    key = (command, first) if (command, first) in DELEGATED else (command, None)
    target = DELEGATED.get(key)
    if target is None:
        known = sorted(w for c, w in DELEGATED if c == command and w)
        print(f"tandem {command}: expected one of {', '.join(known)}", file=sys.stderr)
        return 2
    module, func = target.split(":")
    argv = rest[1:] if key in STRIP_WORD else rest
    return getattr(importlib.import_module(module), func)(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem", description="OpenAI-compatible multi-model router and "
                                "token-level collaboration gateway")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway (no --config: the embedded default)")
    s.add_argument("--config", help="YAML config file")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--log-level", default="warning")
    s.set_defaults(func=cmd_serve)

    k = sub.add_parser("keys", help="create, list or revoke API keys")
    k.add_argument("action", choices=["create", "list", "revoke"])
    k.add_argument("--config", help="YAML config file (for the database URL)")
    k.add_argument("--db", help="database URL (overrides the config)")
    k.add_argument("--name")
    k.add_argument("--budget", type=float, help="lifetime budget in USD")
    k.add_argument("--rpm", type=int, help="requests per minute")
    k.add_argument("--tpm", type=int, help="tokens per minute")
    k.add_argument("--no-log-prompts", action="store_true", help="never store this key's prompts and responses")
    k.add_argument("--id", help="key id (revoke)")
    k.set_defaults(func=cmd_keys)

    for name, help_ in (("eval", "evaluations: replay | live | demo | collab"), ("report", "HTML report of an eval run"), ("zoo", "build or evaluate the model zoo"),
                        ("train", "train a router: r2r | fusionroute | arbitrage | any query-level router")):
        d = sub.add_parser(name, help=help_, add_help=False)
        d.set_defaults(delegate=name)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if getattr(args, "delegate", None):
            return run_delegated(args.delegate, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.func(args)
    except ConfigError as e:
        print(f"tandem: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

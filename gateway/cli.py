"""The gateway's own subcommands of ``tandem``: ``serve`` and ``keys``, with their flags.

The ``tandem`` console command itself is ``evals.command`` (the top layer: it also runs evals, reports, the zoo and
training); it adds these two subcommands with :func:`add_serve_arguments` / :func:`add_keys_arguments` and runs
them with :func:`cmd_serve` / :func:`cmd_keys`, passing the resolver of suite process rewards to ``serve``. This
module knows no evals. ``python -m gateway.cli serve|keys`` runs them without it (a collab route naming a suite PRM
is then a config error). Nothing heavy is imported until a subcommand runs.

What it leaves out: the other subcommands (``evals.command``) and the work itself (``gateway.serve``,
``gateway.storage.keys``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import TandemConfig
    from gateway.route_kinds import PrmResolver

SERVE_HELP = "run the gateway (no --config: the embedded default)"
KEYS_HELP = "create, list or revoke API keys"


def _load(path: str | None) -> TandemConfig:
    from gateway.config import default_config, load_config

    return load_config(path) if path else default_config()


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``tandem serve``."""
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway processes sharing the port (more than 1 needs storage.redis_url)")
    p.add_argument("--runtime", choices=["tuned", "default"], default="tuned",
                   help="garbage collector after start-up: tuned (freeze the start-up heap out of the collector, "
                        "fewer young collections) or CPython's default")


def add_keys_arguments(p: argparse.ArgumentParser) -> None:
    """The action and flags of ``tandem keys``."""
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("--config", help="YAML config file (for the database URL)")
    p.add_argument("--db", help="database URL (overrides the config)")
    p.add_argument("--name")
    p.add_argument("--budget", type=float, help="lifetime budget in USD")
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute")
    p.add_argument("--no-log-prompts", action="store_true", help="never store this key's prompts and responses")
    p.add_argument("--id", help="key id (revoke)")


def cmd_serve(args: argparse.Namespace, prm_resolver: PrmResolver | None = None) -> int:
    """``tandem serve``: run the gateway until interrupted (``prm_resolver``: see ``gateway.serve.serve``)."""
    from gateway.serve import serve

    cfg = _load(args.config)
    if args.host:
        cfg.server.host = args.host
    if args.port is not None:
        cfg.server.port = args.port
    return serve(cfg, args.config, log_level=args.log_level, prm_resolver=prm_resolver, workers=args.workers,
                 runtime=args.runtime)


def cmd_keys(args: argparse.Namespace) -> int:
    """``tandem keys create|list|revoke``."""
    from gateway.storage.db import make_engine, migrate
    from gateway.storage.keys import KeyStore

    cfg = _load(args.config)
    engine = make_engine(args.db or cfg.storage.database_url)
    migrate(engine)
    store = KeyStore(engine)
    # The same store methods and the same rendering (ApiKey.to_json) as POST/GET/DELETE /admin/keys.
    if args.action == "create":
        try:
            plaintext, key = store.create(name=args.name, budget_usd=args.budget, rpm=args.rpm, tpm=args.tpm,
                                          log_prompts=not args.no_log_prompts)
        except ValueError as e:
            print(f"tandem keys create: {e}", file=sys.stderr)
            return 2
        print(json.dumps({"key": plaintext, **key.to_json()}))
        print("store this key now: only its hash is kept", file=sys.stderr)
    elif args.action == "list":
        for k in store.list():
            print(json.dumps(k.to_json()))
    elif args.action == "revoke":
        if not args.id:
            print("tandem keys revoke needs --id", file=sys.stderr)
            return 2
        if not store.revoke(args.id):
            print(f"tandem keys revoke: no key '{args.id}'", file=sys.stderr)
            return 1
        print(json.dumps({"revoked": args.id}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """``serve`` and ``keys`` only (``python -m gateway.cli``; the full command is ``evals.command``)."""
    p = argparse.ArgumentParser(prog="tandem", description="the gateway's subcommands: serve and keys")
    sub = p.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help=SERVE_HELP))
    add_keys_arguments(sub.add_parser("keys", help=KEYS_HELP))
    return p


def main(argv: list[str] | None = None, *, prm_resolver: PrmResolver | None = None) -> int:
    """Run ``serve`` or ``keys``; a config error prints ``tandem: …`` and returns 2."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return cmd_serve(args, prm_resolver) if args.command == "serve" else cmd_keys(args)
    except ConfigError as e:
        print(f"tandem: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

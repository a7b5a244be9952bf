"""The ``tandem`` console command: serve, keys, eval, report, zoo and train.

It sits in the top layer because it reaches every package: ``serve`` and ``keys`` are the gateway's
(``gateway.cli``; ``serve`` gets :func:`evals.collab_tasks.parse_prm` to resolve a collab route's
``prm: "suite:NAME"``), the others run evals, the zoo and training. Each subcommand word hands the words after it to
the function that owns its flags (``tandem eval replay --help`` is ``evals.replay``'s help). Those modules are
imported only when their subcommand runs, so ``tandem --help`` is fast.

What it leaves out: the work itself, and any flag of a subcommand (each owner parses its own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway import cli as gateway_cli
from gateway.errors import ConfigError

Run = Callable[[list[str]], int]
HELP = ("-h", "--help")


def _serve(args: argparse.Namespace) -> int:
    from evals.collab_tasks import parse_prm  # the suites: only when serving

    return gateway_cli.cmd_serve(args, prm_resolver=parse_prm)


# The owners of the delegated subcommands, imported when called.
def _eval_replay(argv: list[str]) -> int:
    from evals.replay import main

    return main(argv)


def _eval_live(argv: list[str]) -> int:  # live | demo: evals.cli parses the word itself
    from evals.cli import main

    return main(argv)


def _eval_collab(argv: list[str]) -> int:
    from evals.collab_eval import main

    return main(argv)


def _eval_oracle(argv: list[str]) -> int:
    from evals.collab_oracle import main

    return main(argv)


def _report(argv: list[str]) -> int:
    from evals.cli import report_main

    return report_main(argv)


def _zoo(argv: list[str]) -> int:
    from evals.zoo.cli import main

    return main(argv)


def _train_collab(argv: list[str]) -> int:  # r2r | fusionroute | arbitrage: the word is its strategy argument
    from evals.collab_train import main

    return main(argv)


def _train_router(argv: list[str]) -> int:  # any other word: the router argument
    from evals.router_training import main

    return main(argv)


@dataclass(frozen=True)
class Word:
    """A word after a group's command: who runs it, whether it sees the word itself, and a line of help."""

    run: Run
    help: str
    keeps_word: bool = False


@dataclass(frozen=True)
class Group:
    """A delegated subcommand (``eval``, ``train``, …): its words, and ``other`` that runs any other first word (or
    every word, for a group without words: ``report``, ``zoo``)."""

    name: str
    help: str
    words: dict[str, Word] = field(default_factory=dict)
    other: Run | None = None
    other_help: str = ""

    def usage(self) -> str:
        """The group's help: its words, one line each."""
        lines = [f"usage: tandem {self.name} {{{','.join(self.words)}}} ...", "", self.help, ""]
        lines += [f"  {w:<12} {word.help}" for w, word in self.words.items()]
        if self.other_help:
            lines.append(f"  {'other':<12} {self.other_help}")
        lines += ["", f"tandem {self.name} WORD --help shows that word's flags."]
        return "\n".join(lines)

    def run(self, rest: Sequence[str]) -> int:
        """Hand ``rest`` (the words after the group's name) to its owner; ``-h`` first: the group's help."""
        rest = list(rest)
        first = rest[0] if rest else None
        if first in self.words:
            word = self.words[first]
            return word.run(rest if word.keeps_word else rest[1:])
        if self.words and first in HELP:
            print(self.usage())
            return 0
        if self.other is not None:
            return self.other(rest)
        print(f"tandem {self.name}: expected one of {', '.join(sorted(self.words))}", file=sys.stderr)
        return 2


def groups() -> dict[str, Group]:
    """The delegated subcommands and their words."""
    collab = "train a token-level collaboration router from the models themselves"
    return {g.name: g for g in (
        Group("eval", "evaluations: replay | live | demo | collab | oracle", {
            "replay": Word(_eval_replay, "replay-evaluate query-level routers on score files (no model runs)"),
            "live": Word(_eval_live, "run routes on a suite through a running gateway", keeps_word=True),
            "demo": Word(_eval_live, "start a gateway, run a small eval of its routes, write the report",
                         keeps_word=True),
            "collab": Word(_eval_collab, "measure a collaboration against its single models through the gateway"),
            "oracle": Word(_eval_oracle, "the best any R2R / Arbitrage router could do with a pair (accuracy, "
                                         "large-model share)"),
        }),
        Group("report", "HTML report of an eval run", other=_report),
        Group("zoo", "build or evaluate the model zoo", other=_zoo),
        Group("train", "train a router: r2r | fusionroute | arbitrage | any query-level router", {
            "r2r": Word(_train_collab, collab, keeps_word=True),
            "fusionroute": Word(_train_collab, collab, keeps_word=True),
            "arbitrage": Word(_train_collab, collab, keeps_word=True),
        }, other=_train_router, other_help="any other word is a query-level router (knn, coe, glider, …): "
                                            "tandem train knn --help"),
    )}


def build_parser(delegated: dict[str, Group]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem", description="OpenAI-compatible multi-model router and "
                                "token-level collaboration gateway")
    sub = p.add_subparsers(dest="command", required=True)
    gateway_cli.add_serve_arguments(sub.add_parser("serve", help=gateway_cli.SERVE_HELP))
    gateway_cli.add_keys_arguments(sub.add_parser("keys", help=gateway_cli.KEYS_HELP))
    for g in delegated.values():
        sub.add_parser(g.name, help=g.help, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """``tandem SUBCOMMAND …``; a config error prints ``tandem: …`` and returns 2."""
    argv = sys.argv[1:] if argv is None else argv
    delegated = groups()
    parser = build_parser(delegated)
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command in delegated:
            return delegated[args.command].run(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return _serve(args) if args.command == "serve" else gateway_cli.cmd_keys(args)
    except ConfigError as e:
        print(f"tandem: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

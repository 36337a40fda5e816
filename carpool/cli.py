"""The `carpool` command: serve, train, bench and operator.

Each subcommand is its package's `command.main(argv)`, handed the rest of the command line: the pod
(`serving`), the tools (`carpool_train`, `carpool_bench`) and the operator (`carpool_operator`). The
imports sit inside the functions below, so only the package asked for is loaded (`carpool operator`
never imports torch), and a missing extra gives one clear line naming the extra to install instead of
a traceback. They are ordinary imports all the same, and .importlinter keeps this package on top.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "main"]

Main = Callable[[list[str]], int]


def _serve() -> Main:
    from serving import command

    return command.main


def _train() -> Main:
    from carpool_train import command

    return command.main


def _bench() -> Main:
    from carpool_bench import command

    return command.main


def _operator() -> Main:
    from carpool_operator import command

    return command.main


@dataclass(frozen=True, slots=True)
class Command:
    load: Callable[[], Main]
    help: str
    extra: str  # the distribution's extra whose dependencies the package imports


COMMANDS = {
    "serve": Command(_serve, "serve models over HTTP with dynamic batching", "serving"),
    "train": Command(_train, "fine-tune a base model into <name>_trained", "tools"),
    "bench": Command(_bench, "load-test a Carpool URL across strategies and concurrency", "tools"),
    "operator": Command(_operator, "run the Kubernetes operator (Kopf)", "operator"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carpool",
        description="Carpool: dynamic batching for transformer text classifiers, on Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def _run(name: str, argv: list[str]) -> int:
    command = COMMANDS[name]
    try:
        run = command.load()
    except ModuleNotFoundError as exc:
        print(
            f"carpool {name}: cannot import {exc.name!r} ({exc}). "
            f"Install the '{command.extra}' extra: pip install 'carpool[{command.extra}]'",
            file=sys.stderr,
        )
        return 2
    return run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return _run(argv[0], argv[1:])
    parser = _parser()
    parser.parse_args(argv)
    parser.print_help()
    return 2

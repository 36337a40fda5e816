"""The `carpool` command: serve, train, bench and operator.

`serve` is handled here. The other subcommands hand the rest of the command line to their own
module's `main(argv)`, imported only when asked for: `carpool operator` never imports torch, and a
missing extra (`pip install 'carpool[serving]'`) gives a clear error instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

SUBCOMMANDS = {
    "train": ("carpool_train.command", "fine-tune a base model into <name>_trained", "serving"),
    "bench": (
        "carpool_bench.command",
        "load-test a Carpool URL across strategies and concurrency",
        "serving",
    ),
    "operator": ("carpool_operator.command", "run the Kubernetes operator (Kopf)", "operator"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carpool",
        description="Carpool: dynamic batching for transformer text classifiers, on Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{serve,train,bench,operator}")
    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP with dynamic batching",
        description="Serve models over HTTP. Batching knobs come from the environment "
        "(BATCHING_STRATEGY, MAX_BATCH_SIZE, ...; see docs/serving.md) and POST /batching/configure.",
    )
    serve.add_argument("--host", default=None, help="address to bind (default 0.0.0.0, env CARPOOL_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000, env CARPOOL_PORT)")
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model directory to serve under NAME (repeatable; env CARPOOL_MODELS=name=path,...). "
        "Without any, the embedded default 'minilm' is served.",
    )
    serve.add_argument(
        "--workers",
        default=None,
        metavar="N",
        help="HTTP worker processes in front of the model process (env CARPOOL_WORKERS; default auto: "
        "one per CPU the pod may use, less one; 0 serves HTTP from the model process itself)",
    )
    serve.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="serve every sub-directory of DIR holding a config.json "
        "(env CARPOOL_MODELS_DIR; default ./models)",
    )
    for name, (_, help_text, _) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _forward(name: str, argv: list[str]) -> int:
    module_name, _, extra = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"carpool {name}: cannot import {exc.name!r} ({exc}). "
            f"Install the '{extra}' extra: pip install 'carpool[{extra}]'",
            file=sys.stderr,
        )
        return 2
    code: int = module.main(argv)
    return code


def _serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from serving.settings import ServerSettings, parse_model_specs

    try:
        models = parse_model_specs(args.model) if args.model else None
        settings = ServerSettings.from_env(
            host=args.host, port=args.port, models=models, models_dir=args.models_dir, workers=args.workers
        )
        from serving.models import hf, registry

        registry.discover(settings.models, settings.models_dir)
        hf.require_device(settings.device)
    except ValueError as exc:
        print(f"carpool serve: {exc}", file=sys.stderr)
        return 2
    from serving import server

    server.serve(settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _forward(argv[0], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    parser.print_help()
    return 2

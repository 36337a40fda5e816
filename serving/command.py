"""`carpool serve` (and `python -m serving`): the pod's own command line.

The models named and the environment are checked before anything heavy is imported, so a bad value
stops the command with one line naming it; then `server.serve` runs the pod. The `carpool` command
(package `carpool`) dispatches here, as it does to the tools and the operator; the pod imports none
of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    serve = argparse.ArgumentParser(
        prog="carpool serve",
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
    return serve


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
        for device in settings.devices or [settings.device]:
            hf.require_device(device)
    except ValueError as exc:
        print(f"carpool serve: {exc}", file=sys.stderr)
        return 2
    from serving import server

    server.serve(settings)
    return 0

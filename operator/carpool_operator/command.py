"""`carpool operator`: run the operator under Kopf, in-cluster or with a kubeconfig.

`build()` assembles what `main()` runs (the registry with every handler, Kopf's settings), so
tests run exactly the same operator, only with shorter intervals. This module, like the whole
package, imports nothing from the serving pod but `serving.settings` (no torch in the image).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import kopf

from carpool_operator import handlers, settings

__all__ = ["build", "main", "parser"]

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="carpool operator",
        description="Reconcile BatchingPolicy resources into serving Deployments; push batching "
        "changes to running pods live.",
    )
    result.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig file (default: in-cluster credentials, then $KUBECONFIG or ~/.kube/config)",
    )
    result.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="serve only this namespace, an exact name (repeatable); default: all namespaces",
    )
    result.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve Kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    result.add_argument(
        "--resync-seconds",
        type=float,
        default=None,
        help="period of the pass that restores children and corrects pods (default 30, "
        "or $CARPOOL_OPERATOR_RESYNC_SECONDS)",
    )
    result.add_argument("--verbose", "-v", action="store_true", help="log every step (debug level)")
    return result


def build(config: settings.OperatorConfig) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings]:
    """The registry holding every handler of the operator, and Kopf's settings for it."""
    registry = kopf.OperatorRegistry()
    kopf_settings = kopf.OperatorSettings()
    settings.tune_kopf(kopf_settings)
    handlers.register(registry, config)
    return registry, kopf_settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    globs = [namespace for namespace in args.namespace if set(namespace) & set("*?[]!")]
    if globs:
        # Kopf resolves patterns by watching namespaces, which the operator does not (it needs
        # no cluster-wide access to them): a pattern would silently serve nothing.
        parser().error(f"--namespace takes exact names, not patterns: {', '.join(globs)}")
    try:
        config = settings.OperatorConfig.from_env(
            kubeconfig=args.kubeconfig, resync_interval_s=args.resync_seconds
        )
    except ValueError as exc:
        parser().error(str(exc))
    kopf.configure(verbose=args.verbose)
    registry, kopf_settings = build(config)
    logger.info("serving image by default: %s", config.serving_image)
    try:
        kopf.run(
            registry=registry,
            settings=kopf_settings,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            standalone=True,
        )
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 0
    return 0

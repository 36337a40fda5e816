"""`carpool bench --overload` and `carpool bench --soak MINUTES`: set up, run, write the results."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from carpool_bench import overload, server

__all__ = ["run"]


@contextlib.contextmanager
def _pod(args: argparse.Namespace, model: str) -> Iterator[tuple[str, int | None]]:
    if not args.spawn:
        yield args.url, args.pid
        return
    given = args.model.partition("=")[2]
    served = {model: Path(given)} if given else {}
    with server.spawned_server(served, args.output / "server.log", token=args.token) as spawned:
        yield spawned.url, spawned.pid


def run(args: argparse.Namespace, model: str, corpus: list[str], say: Callable[[str], None]) -> int:
    with _pod(args, model) as (url, pid):
        admin = server.Admin(url, args.token)
        try:
            if not admin.healthy():
                raise server.BenchError(f"{url}/health is not 200: start carpool serve, or use --spawn")
            original = admin.stats()["config"]
            admin.predict(corpus[0], model)
            results: dict[str, Any] = {"url": url, "model": model}
            try:
                if args.overload:
                    results["overload"] = overload.run_overload(
                        url,
                        admin,
                        corpus,
                        model,
                        clients=args.clients or 128,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        say=say,
                    )
                if args.soak:
                    slices = overload.soak_slices(
                        url,
                        corpus,
                        model,
                        minutes=args.soak,
                        clients=args.clients or 16,
                        slice_s=min(60.0, args.soak * 60.0 / 6),
                        memory=(lambda: overload.process_tree_rss_mb(pid)) if pid else (lambda: None),
                        progress=say,
                    )
                    results["soak"] = overload.soak_summary(slices)
                    summary = {k: v for k, v in results["soak"].items() if k != "slices"}
                    say(f"soak: {json.dumps(summary)}")
            finally:
                admin.configure({k: original[k] for k in ("max_queue_size",)})
        finally:
            admin.close()
    path = args.output / ("overload.json" if args.overload else "soak.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {path}")
    return 0

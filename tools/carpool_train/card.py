"""Model cards: `carpool_card.json` (machine-readable) and `README.md` (for people) beside the weights.

The JSON card is a contract: the serving registry reads it to show each trained model's figures in
/models/status. Its keys are pinned in tests; add keys freely, never rename or drop one:

    name, base, base_path, data {train, test, sha256, examples {train, test}}, labels,
    metrics {accuracy, macro_f1, per_class {label: {precision, recall, f1, support}},
             confusion_matrix {labels, matrix}},
    metrics_by_source {source: {examples, accuracy, macro_f1}} (empty unless the held-out
             examples carry more than one `source`; "composed:alert" counts as "composed"),
    epochs, seed, learning_rate, max_length, batch_size, freeze_embeddings, device,
    trained_at (ISO 8601, UTC), train_seconds, train_loss (mean per epoch), carpool_version,
    runtimes {torch|onnx|onnx-int8: {accuracy, macro_f1, metrics_by_source, load_seconds,
             check {runtime, probes, max_logit_diff, label_agreement, near_tie_flips, labels_judged,
                    tolerance, passed},
             export_seconds} or {refused}} (absent when trained with --no-evaluate-runtimes;
             `carpool serve`'s auto runtime reads macro_f1 from it)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "CARD_FILE",
    "README_FILE",
    "carpool_version",
    "read_card",
    "render_readme",
    "utc_now",
    "write_card",
]

CARD_FILE = "carpool_card.json"
README_FILE = "README.md"


def carpool_version() -> str:
    try:
        return metadata.version("carpool")
    except metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_card(directory: Path, card: Mapping[str, Any]) -> None:
    """Write both cards into `directory`."""
    (directory / CARD_FILE).write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (directory / README_FILE).write_text(render_readme(card), encoding="utf-8")


def read_card(directory: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((directory / CARD_FILE).read_text(encoding="utf-8"))
    return card


def render_readme(card: Mapping[str, Any]) -> str:
    """The human-readable card: what the model is, what it was trained on, how well it did."""
    metrics = card["metrics"]
    data = card["data"]
    labels: list[str] = card["labels"]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [carpool, security, text-classification]",
        "---",
        "",
        f"# {card['name']}",
        "",
        f"A text classifier for {', '.join(labels)}, fine-tuned by `carpool train` from the base model "
        f"`{card['base']}` (`{card['base_path']}`).",
        "",
        "## Held-out evaluation",
        "",
        f"Accuracy **{metrics['accuracy']:.3f}**, macro-F1 **{metrics['macro_f1']:.3f}** "
        f"on {sum(data['examples']['test'].values())} held-out examples never seen in training.",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, figures in metrics["per_class"].items():
        lines.append(
            f"| {label} | {figures['precision']:.3f} | {figures['recall']:.3f} | {figures['f1']:.3f} "
            f"| {figures['support']} |"
        )
    for origin, figures in card.get("metrics_by_source", {}).items():
        lines.append(
            f"\n{origin} examples only ({figures['examples']}): accuracy {figures['accuracy']:.3f}, "
            f"macro-F1 {figures['macro_f1']:.3f}"
        )
    lines += _runtime_lines(card.get("runtimes"))
    confusion = metrics["confusion_matrix"]
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(confusion["labels"]) + " |")
    lines.append("|---|" + "---:|" * len(confusion["labels"]))
    for label, row in zip(confusion["labels"], confusion["matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(count) for count in row) + " |")
    lines += [
        "",
        "## Training data",
        "",
        f"- training file: `{data['train']}` ({_counts(data['examples']['train'])})",
        f"- held-out file: `{data['test'] or 'a stratified split of the training file'}` "
        f"({_counts(data['examples']['test'])})",
    ]
    lines += [f"- sha256 of {name}: `{digest}`" for name, digest in data["sha256"].items()]
    lines += [
        "",
        "## Training run",
        "",
        f"- trained at {card['trained_at']} on {card['device']} in {card['train_seconds']:.0f} s",
        f"- {card['epochs']} epochs, batch size {card['batch_size']}, learning rate {card['learning_rate']}, "
        f"max length {card['max_length']} tokens, seed {card['seed']}, "
        f"word embeddings {'frozen' if card['freeze_embeddings'] else 'trained'}",
        f"- mean training loss per epoch: {', '.join(f'{loss:.3f}' for loss in card['train_loss'])}",
        f"- carpool {card['carpool_version']}",
        "",
        "## Limits",
        "",
        "The figures hold for text like the training data; read the dataset's datasheet for what it does "
        f"not cover. Texts longer than {card['max_length']} tokens are truncated, so anything past that "
        "point is invisible to the model.",
        "",
    ]
    return "\n".join(lines)


def _runtime_lines(figures: Any) -> list[str]:
    """The held-out figures under each serving runtime, as a table."""
    if not isinstance(figures, Mapping) or not figures:
        return []
    groups = sorted({g for entry in figures.values() for g in entry.get("metrics_by_source", {})})
    lines = [
        "",
        "## Held-out evaluation under each serving runtime",
        "",
        "The same held-out examples through `carpool serve`'s own path in each runtime; `auto` serves the "
        "fastest whose macro-F1 is within 0.5 point of torch's.",
        "",
        "| runtime | accuracy | macro-F1 | "
        + "".join(f"macro-F1 ({g}) | " for g in groups)
        + "probe check: max logit difference |",
        "|---|---:|---:|" + "---:|" * len(groups) + "---:|",
    ]
    for name, entry in figures.items():
        if "refused" in entry:
            lines.append(f"| {name} | refused: {entry['refused']} |" + " |" * (len(groups) + 2))
            continue
        by_source = entry.get("metrics_by_source", {})
        check = entry.get("check")
        lines.append(
            f"| {name} | {entry['accuracy']:.4f} | {entry['macro_f1']:.4f} | "
            + "".join(f"{by_source[g]['macro_f1']:.4f} | " if g in by_source else "- | " for g in groups)
            + (f"{check['max_logit_diff']:.2g} |" if check else "reference |")
        )
    return lines


def _counts(counts: Mapping[str, int]) -> str:
    return f"{sum(counts.values())} examples: " + ", ".join(f"{label} {n}" for label, n in counts.items())

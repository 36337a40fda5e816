"""Held-out classification figures: accuracy, per-class precision/recall/F1, macro-F1, confusion matrix.

Pure functions over label-id sequences, written out rather than borrowed from scikit-learn so the
serving image needs no extra dependency. Conventions follow scikit-learn's: rows of the confusion
matrix are true labels and columns predicted ones; a precision, recall or F1 whose denominator is
zero (a class never predicted, or absent from the held-out split) counts as 0.0; macro-F1 is the
unweighted mean of the per-class F1 over every label the model knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ClassFigures", "Report", "by_group", "confusion_matrix", "evaluate", "format_report"]


@dataclass(frozen=True, slots=True)
class ClassFigures:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Report:
    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassFigures]
    confusion: list[list[int]]  # confusion[true][predicted]

    def as_dict(self) -> dict[str, object]:
        """The shape the model card stores under "metrics"."""
        return {
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "per_class": {
                label: {
                    "precision": round(figures.precision, 4),
                    "recall": round(figures.recall, 4),
                    "f1": round(figures.f1, 4),
                    "support": figures.support,
                }
                for label, figures in self.per_class.items()
            },
            "confusion_matrix": {
                "labels": list(self.labels),
                "matrix": [list(row) for row in self.confusion],
            },
        }


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int) -> list[list[int]]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    matrix = [[0] * n_labels for _ in range(n_labels)]
    for truth, guess in zip(y_true, y_pred, strict=True):
        if not (0 <= truth < n_labels and 0 <= guess < n_labels):
            raise ValueError(f"label id out of range 0..{n_labels - 1}: true {truth}, predicted {guess}")
        matrix[truth][guess] += 1
    return matrix


def evaluate(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> Report:
    """Every figure the model card records, from true and predicted label ids."""
    if not y_true:
        raise ValueError("cannot evaluate on an empty held-out set")
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    per_class = {}
    for i, label in enumerate(labels):
        hits = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        precision = _ratio(hits, predicted)
        recall = _ratio(hits, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[label] = ClassFigures(precision=precision, recall=recall, f1=f1, support=support)
    accuracy = sum(matrix[i][i] for i in range(len(labels))) / len(y_true)
    macro_f1 = sum(figures.f1 for figures in per_class.values()) / len(labels)
    return Report(
        labels=list(labels), accuracy=accuracy, macro_f1=macro_f1, per_class=per_class, confusion=matrix
    )


def by_group(
    groups: Sequence[str], y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Accuracy and macro-F1 per group (e.g. per data source), when there is more than one group."""
    names = sorted(set(groups))
    if len(names) < 2:
        return {}
    figures: dict[str, dict[str, float | int]] = {}
    for name in names:
        members = [i for i, group in enumerate(groups) if group == name]
        report = evaluate([y_true[i] for i in members], [y_pred[i] for i in members], labels)
        figures[name] = {
            "examples": len(members),
            "accuracy": round(report.accuracy, 4),
            "macro_f1": round(report.macro_f1, 4),
        }
    return figures


def format_report(report: Report) -> str:
    """A plain-text table of the per-class figures and the confusion matrix, for the terminal."""
    corner = "true \\ predicted"
    width = max(len(corner), *(len(label) for label in report.labels))
    lines = [f"{'label':<{width}}  precision  recall     f1  support"]
    for label, f in report.per_class.items():
        lines.append(f"{label:<{width}}  {f.precision:9.3f}  {f.recall:6.3f}  {f.f1:5.3f}  {f.support:7d}")
    total = sum(figures.support for figures in report.per_class.values())
    lines.append(f"{'accuracy':<{width}}  {'':9}  {'':6}  {report.accuracy:5.3f}  {total:7d}")
    lines.append(f"{'macro avg':<{width}}  {'':9}  {'':6}  {report.macro_f1:5.3f}  {total:7d}")
    lines.append("")
    cell = max(6, *(len(label) for label in report.labels))
    lines.append(f"{corner:<{width}}  " + " ".join(f"{label:>{cell}}" for label in report.labels))
    for label, row in zip(report.labels, report.confusion, strict=True):
        lines.append(f"{label:<{width}}  " + " ".join(f"{count:>{cell}d}" for count in row))
    return "\n".join(lines)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0

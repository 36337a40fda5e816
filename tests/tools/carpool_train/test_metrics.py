"""Held-out figures against cases computed by hand."""

from __future__ import annotations

import pytest

from carpool_train import metrics

pytestmark = pytest.mark.unit

LABELS = ["a", "b", "c"]
# true:      a a a b b c
# predicted: a a b b c c
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_true_labels() -> None:
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_figures_match_the_hand_computed_ones() -> None:
    report = metrics.evaluate(Y_TRUE, Y_PRED, LABELS)
    # a: precision 2/2, recall 2/3, F1 = 2 * 1 * 2/3 / (5/3) = 0.8
    # b: precision 1/2, recall 1/2, F1 = 0.5
    # c: precision 1/2, recall 1/1, F1 = 2 * 0.5 / 1.5 = 2/3
    a = report.per_class["a"]
    assert (a.precision, a.recall, a.f1, a.support) == (1.0, pytest.approx(2 / 3), pytest.approx(0.8), 3)
    assert report.per_class["b"] == metrics.ClassFigures(precision=0.5, recall=0.5, f1=0.5, support=2)
    assert report.per_class["c"].precision == 0.5
    assert report.per_class["c"].recall == 1.0
    assert report.per_class["c"].f1 == pytest.approx(2 / 3)
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_perfect_predictions_score_one() -> None:
    report = metrics.evaluate([0, 1, 2, 1], [0, 1, 2, 1], LABELS)
    assert report.accuracy == 1.0
    assert report.macro_f1 == 1.0
    assert report.confusion == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_a_class_never_predicted_or_present_counts_zero_and_pulls_macro_f1_down() -> None:
    # "c" never occurs and is never predicted: its figures are 0 (no division by zero), and
    # macro-F1 averages over every label the model knows, so a perfect a/b score gives 2/3.
    report = metrics.evaluate([0, 1], [0, 1], LABELS)
    assert report.per_class["c"] == metrics.ClassFigures(precision=0.0, recall=0.0, f1=0.0, support=0)
    assert report.macro_f1 == pytest.approx(2 / 3)


def test_a_class_always_missed_has_zero_recall_and_f1() -> None:
    report = metrics.evaluate([0, 0, 1, 1], [0, 0, 0, 0], ["a", "b"])
    assert report.per_class["b"] == metrics.ClassFigures(precision=0.0, recall=0.0, f1=0.0, support=2)
    assert report.per_class["a"].precision == 0.5
    assert report.per_class["a"].f1 == pytest.approx(2 / 3)
    assert report.accuracy == 0.5


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        pytest.param([0, 1], [0], "2 true labels but 1 predictions", id="length-mismatch"),
        pytest.param([0, 3], [0, 1], "out of range", id="unknown-id"),
        pytest.param([], [], "empty", id="empty"),
    ],
)
def test_bad_input_is_refused_with_the_reason(y_true: list[int], y_pred: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.evaluate(y_true, y_pred, LABELS)


def test_card_form_is_rounded_and_complete() -> None:
    figures = metrics.evaluate(Y_TRUE, Y_PRED, LABELS).as_dict()
    assert figures["accuracy"] == 0.6667
    assert figures["macro_f1"] == 0.6556
    assert figures["per_class"] == {
        "a": {"precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3},
        "b": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "c": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1},
    }
    assert figures["confusion_matrix"] == {"labels": LABELS, "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}


def test_table_shows_every_class_the_averages_and_the_matrix() -> None:
    table = metrics.format_report(
        metrics.evaluate(Y_TRUE, Y_PRED, ["benign", "phishing", "prompt_injection"])
    )
    lines = table.splitlines()
    assert lines[0].split() == ["label", "precision", "recall", "f1", "support"]
    assert lines[1].split() == ["benign", "1.000", "0.667", "0.800", "3"]
    assert lines[3].split() == ["prompt_injection", "0.500", "1.000", "0.667", "1"]
    assert lines[4].split() == ["accuracy", "0.667", "6"]
    assert lines[5].split() == ["macro", "avg", "0.656", "6"]
    assert lines[-1].split() == ["prompt_injection", "0", "0", "1"]


def test_figures_per_group_are_computed_within_each_group() -> None:
    groups = ["x", "x", "y", "y", "y", "y"]
    # x: a->a, a->a: accuracy 1; F1 a=1, b=0, c=0 (absent), macro 1/3.
    # y: a->b, b->b, b->c, c->c: accuracy 1/2; F1 a=0, b=1/2, c=2/3, macro 7/18.
    assert metrics.by_group(groups, Y_TRUE, Y_PRED, LABELS) == {
        "x": {"examples": 2, "accuracy": 1.0, "macro_f1": 0.3333},
        "y": {"examples": 4, "accuracy": 0.5, "macro_f1": 0.3889},
    }
    assert metrics.by_group(["x"] * 6, Y_TRUE, Y_PRED, LABELS) == {}  # one group: nothing to compare

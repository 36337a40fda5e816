"""Which runtime a model gets: the candidate order for each request, and the probe check's verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serving.models import runtime

pytestmark = pytest.mark.unit


def card(torch_f1: float, onnx_f1: float | None, int8_f1: float | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"torch": {"macro_f1": torch_f1}}
    for name, f1 in (("onnx", onnx_f1), ("onnx-int8", int8_f1)):
        figures[name] = {"macro_f1": f1} if f1 is not None else {"refused": "probe check failed"}
    return {"runtimes": figures}


@pytest.mark.parametrize(
    ("requested", "options", "expected"),
    [
        pytest.param("torch", {}, ["torch"], id="torch-asked"),
        pytest.param("onnx", {}, ["onnx", "torch"], id="onnx-asked-falls-back-to-torch"),
        pytest.param("onnx-int8", {}, ["onnx-int8", "torch"], id="int8-asked"),
        pytest.param("auto", {}, ["onnx-int8", "onnx", "torch"], id="auto-no-card-fastest-first"),
        pytest.param(
            "auto", {"card": {"name": "old card"}}, ["onnx-int8", "onnx", "torch"], id="card-no-figures"
        ),
        pytest.param(
            "auto", {"card": card(0.90, 0.90, 0.896)}, ["onnx-int8", "onnx", "torch"], id="int8-close"
        ),
        pytest.param("auto", {"card": card(0.90, 0.90, 0.894)}, ["onnx", "torch"], id="int8-too-far"),
        pytest.param("auto", {"card": card(0.90, 0.91, None)}, ["onnx", "torch"], id="int8-refused-at-train"),
        pytest.param("auto", {"card": card(0.90, 0.80, 0.80)}, ["torch"], id="both-too-far"),
        pytest.param("auto", {"untrained_head": True}, ["onnx", "torch"], id="untrained-head-float32-only"),
        pytest.param("auto", {"device": "cuda"}, ["torch"], id="auto-on-gpu-torch-float16"),
        pytest.param("onnx", {"device": "cuda", "cuda_provider": True}, ["onnx", "torch"], id="gpu-provider"),
        pytest.param("onnx", {"device": "cuda:1"}, ["torch"], id="gpu-without-provider"),
        pytest.param("onnx-int8", {"device": "cuda", "cuda_provider": True}, ["torch"], id="gpu-int8"),
    ],
)
def test_candidates(requested: str, options: dict[str, Any], expected: list[str]) -> None:
    arguments: dict[str, Any] = {
        "device": "cpu",
        "card": None,
        "untrained_head": False,
        "cuda_provider": False,
    }
    chosen = runtime.candidates(requested, **{**arguments, **options})
    assert [c.runtime for c in chosen] == expected
    assert all(c.reason for c in chosen)


def test_an_unknown_runtime_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'tensorrt'"):
        runtime.candidates("tensorrt", device="cpu", card=None, untrained_head=False, cuda_provider=False)


def test_the_card_says_why_auto_skips_a_runtime() -> None:
    refused = runtime.refused_by_card(card(0.9, 0.9, 0.85))
    assert list(refused) == ["onnx-int8"]
    assert "0.8500" in refused["onnx-int8"] and "0.9000" in refused["onnx-int8"]
    assert runtime.refused_by_card(None) == {}


REFERENCE = [[2.0, -1.0], [-0.5, 0.5]]


@pytest.mark.parametrize(
    ("tables", "worst", "agreement", "passed"),
    [
        pytest.param([REFERENCE, REFERENCE], 0.0, 1.0, True, id="identical"),
        pytest.param([[[2.1, -1.0], [-0.5, 0.45]]], 0.1, 1.0, True, id="within-tolerance"),
        pytest.param([[[2.0, -1.0], [-0.5, 0.7]]], 0.2, 1.0, False, id="beyond-tolerance"),
        pytest.param([REFERENCE, [[2.0, -1.0], [0.05, 0.0]]], 0.55, 0.75, False, id="label-flip"),
    ],
)
def test_judge(tables: list[list[list[float]]], worst: float, agreement: float, passed: bool) -> None:
    check = runtime.judge("onnx-int8", REFERENCE, tables, tolerance=0.075)  # x scale 2.0: 0.15 absolute
    assert check.max_logit_diff == pytest.approx(worst)
    assert check.label_agreement == agreement
    assert check.passed is passed
    assert check.verdict().startswith("passed" if passed else "failed")
    assert check.as_dict()["passed"] is passed


def test_the_tolerance_scales_with_the_logits_but_never_below_one() -> None:
    big = runtime.judge("onnx-int8", [[8.0, -8.0]], [[[7.0, -8.0]]], tolerance=0.15)
    assert big.passed and big.tolerance == pytest.approx(1.2)
    small = runtime.judge("onnx-int8", [[0.1, -0.1]], [[[0.1, -0.3]]], tolerance=0.15)
    assert not small.passed and small.tolerance == pytest.approx(0.15)


def test_a_label_flip_alone_fails_even_within_tolerance() -> None:
    check = runtime.judge("onnx", [[0.1, 0.0]], [[[0.0, 0.1]]], tolerance=1.0)
    assert not check.passed and "labels agree on 0/1" in check.verdict()


def test_the_cache_key_follows_the_files_and_the_extra(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    config = tmp_path / "config.json"
    config.write_text("{}")
    key = runtime.cache_key([weights, config], ["onnx"])
    assert key == runtime.cache_key([config, weights], ["onnx"])  # order of discovery does not matter
    assert key != runtime.cache_key([weights, config], ["torch 2.14"])
    weights.write_bytes(b"retrained")
    assert key != runtime.cache_key([weights, config], ["onnx"])


def test_a_flip_on_a_near_tie_is_reported_but_not_refused() -> None:
    # torch's two logits 0.02 apart (below NEAR_TIE x scale 1): which one wins means nothing.
    check = runtime.judge(
        "onnx-int8", [[0.02, 0.0], [2.0, -1.0]], [[[0.0, 0.02], [2.0, -1.0]]], tolerance=0.25
    )
    assert check.passed and check.near_tie_flips == 1 and check.label_agreement == 0.5
    assert "1 other label(s) on near-ties only" in check.verdict()
    assert check.as_dict()["near_tie_flips"] == 1
    clear = runtime.judge("onnx-int8", [[0.2, 0.0]], [[[0.0, 0.2]]], tolerance=0.25)
    assert not clear.passed and clear.near_tie_flips == 0


def test_an_untrained_head_is_judged_by_its_logits_not_its_labels() -> None:
    """An untrained head's winner is whichever random weight came out largest: a label it changes
    says nothing about the runtime, so only the logits are held to the tolerance."""
    flipped = [[[0.0, 0.2]]]
    check = runtime.judge("onnx-int8", [[0.2, 0.0]], flipped, tolerance=0.25, labels_judged=False)
    assert check.passed and "labels not judged (untrained head" in check.verdict()
    assert check.as_dict()["labels_judged"] is False
    far = runtime.judge("onnx-int8", [[0.2, 0.0]], [[[0.2, 1.9]]], tolerance=0.25, labels_judged=False)
    assert not far.passed  # logits beyond the tolerance still refuse

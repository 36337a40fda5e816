"""The default trained model for real: MiniLM fine-tuned on the shipped dataset, then served.

Trains `minilm_trained` exactly as `make run` does (fixed seed, default settings), asserts the
held-out floor, then starts a real `carpool serve` over the models directory and checks that
/predict/trained answers with the trained model's own predictions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from carpool_train import card as cards
from carpool_train import command, metrics, trainer
from serving.models import onnx
from tests.support.pods import ServingPod

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "data" / "security_messages"
MACRO_F1_FLOOR = 0.90


@pytest.fixture(scope="session")
def minilm_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`carpool train --base minilm` with the defaults (seed 13, 3 epochs) into a fresh models dir."""
    output = tmp_path_factory.mktemp("models") / "minilm_trained"
    assert (
        command.main(["--base", "minilm", "--data", str(DATA), "--output", str(output), "--device", "cpu"])
        == 0
    )
    return output


@pytest.fixture(scope="module")
def held_out() -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def own_predictions(minilm_trained: Path, held_out: list[dict[str, str]]) -> list[list[float]]:
    """The saved model's probabilities for every held-out text, computed here from the files on disk."""
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_trained))
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_trained))
    ids = trainer.encode(tokenizer, [r["text"] for r in held_out], 128)
    return trainer.predict_proba(model, ids, tokenizer.pad_token_id, torch.device("cpu"))


def test_macro_f1_on_the_held_out_split_clears_the_floor(
    minilm_trained: Path, held_out: list[dict[str, str]], own_predictions: list[list[float]]
) -> None:
    card = cards.read_card(minilm_trained)
    assert card["metrics"]["macro_f1"] >= MACRO_F1_FLOOR, card["metrics"]
    assert card["labels"] == ["benign", "phishing", "prompt_injection", "spam"]
    assert sum(card["data"]["examples"]["test"].values()) == len(held_out)
    by_source = card["metrics_by_source"]
    assert by_source["handwritten"]["examples"] + by_source["composed"]["examples"] == len(held_out)
    assert by_source["handwritten"]["macro_f1"] >= 0.85  # the harder, hand-written part alone
    # The card's figures are those of the weights on disk.
    predicted = [max(range(4), key=row.__getitem__) for row in own_predictions]
    truth = [card["labels"].index(r["label"]) for r in held_out]
    assert card["metrics"] == metrics.evaluate(truth, predicted, card["labels"]).as_dict()


def test_int8_keeps_the_held_out_figures_so_auto_serves_it_from_the_export_made_in_training(
    minilm_trained: Path,
) -> None:
    card = cards.read_card(minilm_trained)
    figures = card["runtimes"]
    assert all("macro_f1" in figures[name] for name in ("torch", "onnx", "onnx-int8")), figures
    torch_f1 = figures["torch"]["macro_f1"]
    assert torch_f1 == pytest.approx(card["metrics"]["macro_f1"], abs=0.002)  # serving path vs training's
    assert figures["onnx"]["macro_f1"] == torch_f1
    assert figures["onnx-int8"]["macro_f1"] >= torch_f1 - 0.005, figures
    handwritten = {name: figures[name]["metrics_by_source"]["handwritten"]["macro_f1"] for name in figures}
    assert handwritten["onnx-int8"] >= handwritten["torch"] - 0.01, handwritten
    assert figures["onnx-int8"]["check"]["passed"] is True

    model = onnx.RuntimeClassifier("minilm_trained", minilm_trained, runtime="auto", card=card, device="cpu")
    model.load()
    assert model.runtime == "onnx-int8" and "held-out macro-F1" in model.reason
    assert model.export is not None and model.export["cached"] is True  # exported once, by carpool train


@pytest.fixture(scope="module")
def pod(minilm_trained: Path) -> Iterator[ServingPod]:
    env = {
        "CARPOOL_DEVICE": "cpu",
        "BATCHING_STRATEGY": "batch_optimized",
        "MAX_WAIT_TIME_MS": "20",
        "CARPOOL_MODEL_RUNTIMES": "minilm_trained=torch",  # the exact comparison below needs torch
        "CARPOOL_RUNTIME": "auto",  # every other model: what a user gets
    }
    with ServingPod(models_dir=minilm_trained.parent, env=env) as running:
        yield running


def test_models_status_marks_the_trained_model_with_its_card(pod: ServingPod, minilm_trained: Path) -> None:
    answer = httpx.get(f"{pod.url}/models/status", timeout=10).json()
    status = {entry["name"]: entry for entry in answer["models"]}
    assert status["minilm"]["kind"] == "base"
    trained = status["minilm_trained"]
    assert trained["kind"] == "trained"
    assert trained["labels"] == ["benign", "phishing", "prompt_injection", "spam"]
    assert trained["card"]["metrics"] == cards.read_card(minilm_trained)["metrics"]
    assert (trained["runtime"], trained["runtime_reason"]) == ("torch", "asked for")


def test_the_embedded_minilm_runs_its_float32_export_under_auto(pod: ServingPod) -> None:
    """Its head is untrained: auto takes the lossless ONNX export and nothing lossier."""
    answer = httpx.get(f"{pod.url}/models/status", timeout=10).json()
    base = {entry["name"]: entry for entry in answer["models"]}["minilm"]
    assert base["runtime"] == "onnx" and base["runtime_requested"] == "auto"
    assert "untrained head" in base["runtime_reason"]
    [check] = base["runtime_checks"]
    assert check["passed"] and check["max_logit_diff"] < 1e-4 and check["label_agreement"] == 1.0


def test_predict_trained_returns_the_models_own_predictions(
    pod: ServingPod, held_out: list[dict[str, str]], own_predictions: list[list[float]]
) -> None:
    labels = ["benign", "phishing", "prompt_injection", "spam"]
    sample = list(range(0, len(held_out), 5))  # 42 texts of every class and length, sent at once

    def ask(i: int) -> dict[str, object]:
        body = {"text": held_out[i]["text"], "models": ["minilm_trained"]}
        response = httpx.post(f"{pod.url}/predict/trained", json=body, timeout=60)
        assert response.status_code == 200, response.text
        prediction: dict[str, object] = response.json()["predictions"]["minilm_trained"]
        return prediction

    with ThreadPoolExecutor(max_workers=16) as pool:  # concurrent, so the engine batches and pads them
        answers = list(pool.map(ask, sample))
    for i, answer in zip(sample, answers, strict=True):
        expected = dict(zip(labels, own_predictions[i], strict=True))
        assert answer["label"] == max(expected, key=expected.__getitem__), held_out[i]["text"]
        assert answer["probabilities"] == pytest.approx(expected, abs=1e-4)


def test_predict_trained_refuses_a_base_model_naming_the_trained_ones(pod: ServingPod) -> None:
    response = httpx.post(
        f"{pod.url}/predict/trained", json={"text": "Test message", "models": ["minilm"]}, timeout=10
    )
    assert 400 <= response.status_code < 500
    assert "minilm_trained" in response.text
    default = httpx.post(f"{pod.url}/predict/trained", json={"text": "Test message"}, timeout=10)
    assert default.status_code == 200, default.text
    assert list(default.json()["predictions"]) == ["minilm_trained"]

"""`carpool train` end to end on a tiny BERT: a complete output directory, a truthful card, clear errors."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from carpool import cli
from carpool_train import card as cards
from carpool_train import command, metrics, trainer
from serving.models import onnx
from tests.support import tinybert

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

CARD_KEYS = {
    "name",
    "base",
    "base_path",
    "data",
    "labels",
    "metrics",
    "epochs",
    "seed",
    "learning_rate",
    "max_length",
    "batch_size",
    "freeze_embeddings",
    "device",
    "trained_at",
    "train_seconds",
    "train_loss",
    "carpool_version",
}
WORDS = {
    "benign": ["lunch", "meeting", "slides", "thanks", "dinner", "weekend", "report", "coffee"],
    "phishing": ["verify", "account", "suspended", "password", "login", "urgent", "bank", "confirm"],
    "spam": ["sale", "discount", "offer", "free", "casino", "bonus", "cheap", "deal"],
}


def write_dataset(directory: Path, seed: int = 0) -> Path:
    """A small three-class dataset whose classes differ by vocabulary, with a disjoint held-out file."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train.jsonl", 24), ("test.jsonl", 6)):
        lines = []
        for label, words in WORDS.items():
            for i in range(per_class):
                text = " ".join(rng.choices(words, k=rng.randrange(3, 9))) + f" {name[:-6]} {i}"
                source = "handwritten" if i % 3 == 0 else f"composed:{label}"
                lines.append(json.dumps({"text": text, "label": label, "source": source}))
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    tinybert.build_tiny_bert(root / "models" / "tiny", labels=("x", "y"), seed=3)  # a head for other labels
    write_dataset(root / "data")
    return root


def train(workspace: Path, *extra: str) -> int:
    return command.main(
        [
            "--base",
            "tiny",
            "--models-dir",
            str(workspace / "models"),
            "--data",
            str(workspace / "data"),
            "--epochs",
            "10",
            "--batch-size",
            "8",
            "--learning-rate",
            "3e-3",
            "--no-freeze-embeddings",  # a tiny random BERT needs its embeddings trained to learn at all
            "--max-length",
            "32",
            "--device",
            "cpu",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(workspace: Path) -> Path:
    assert train(workspace) == 0
    return workspace / "models" / "tiny_trained"


def test_output_is_a_loadable_model_with_the_dataset_labels(trained: Path) -> None:
    names = {path.name for path in trained.iterdir()}
    assert {"config.json", "model.safetensors", "carpool_card.json", "README.md", "tokenizer.json"} <= names
    model = AutoModelForSequenceClassification.from_pretrained(str(trained))
    assert model.config.id2label == {0: "benign", 1: "phishing", 2: "spam"}
    assert model.config.label2id == {"benign": 0, "phishing": 1, "spam": 2}
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    encoded = tokenizer(["a short one", "a somewhat longer text to check padding stays off"])
    assert len(encoded["input_ids"][0]) < len(encoded["input_ids"][1])  # saved without padding switched on


def test_card_holds_every_contract_key_and_truthful_figures(trained: Path, workspace: Path) -> None:
    card = cards.read_card(trained)
    assert set(card) >= CARD_KEYS
    assert card["name"] == "tiny_trained"
    assert card["base"] == "tiny"
    assert card["labels"] == ["benign", "phishing", "spam"]
    assert card["data"]["examples"] == {
        "train": {"benign": 24, "phishing": 24, "spam": 24},
        "test": {"benign": 6, "phishing": 6, "spam": 6},
    }
    assert card["data"]["test"] == str(workspace / "data" / "test.jsonl")
    assert len(card["data"]["sha256"]["train"]) == 64
    assert card["epochs"] == 10
    assert card["freeze_embeddings"] is False
    assert card["device"] == "cpu"
    assert card["trained_at"].endswith("Z")
    assert len(card["train_loss"]) == 10
    assert card["train_loss"][-1] < card["train_loss"][0]  # it learned something

    # The figures are those of the saved weights on the held-out file, recomputed here.
    model = AutoModelForSequenceClassification.from_pretrained(str(trained))
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    held_out = [json.loads(line) for line in (workspace / "data" / "test.jsonl").read_text().splitlines()]
    ids = trainer.encode(tokenizer, [r["text"] for r in held_out], 32)
    probabilities = trainer.predict_proba(model, ids, tokenizer.pad_token_id, torch.device("cpu"))
    predicted = [max(range(3), key=row.__getitem__) for row in probabilities]
    truth = [card["labels"].index(r["label"]) for r in held_out]
    assert card["metrics"] == metrics.evaluate(truth, predicted, card["labels"]).as_dict()
    assert card["metrics"]["macro_f1"] > 0.8  # three word lists are easy to tell apart

    by_source = card["metrics_by_source"]
    assert sorted(by_source) == ["composed", "handwritten"]  # "composed:<family>" counts as "composed"
    assert by_source["handwritten"]["examples"] == 6
    assert by_source["composed"]["examples"] == 12

    readme = (trained / "README.md").read_text()
    assert f"macro-F1 **{card['metrics']['macro_f1']:.3f}**" in readme
    assert "| spam |" in readme
    assert "handwritten examples only (6): accuracy" in readme


def test_the_card_holds_the_held_out_figures_under_each_serving_runtime(trained: Path) -> None:
    card = cards.read_card(trained)
    figures = card["runtimes"]
    assert list(figures) == ["torch", "onnx", "onnx-int8"]
    assert figures["torch"]["macro_f1"] == card["metrics"]["macro_f1"]  # the serving path agrees
    assert figures["onnx"]["macro_f1"] == card["metrics"]["macro_f1"]
    assert figures["onnx"]["check"]["passed"] is True
    assert sorted(figures["onnx"]["metrics_by_source"]) == ["composed", "handwritten"]
    int8 = figures["onnx-int8"]
    assert "refused" in int8 or (int8["check"]["passed"] and 0 <= int8["macro_f1"] <= 1)
    exports = {path.name for path in (trained / onnx.CACHE_SUBDIR).glob("*/*.onnx")}
    assert {"onnx.onnx", "onnx-int8.onnx"} <= exports  # the first `carpool serve` reuses them
    readme = (trained / "README.md").read_text()
    assert "## Held-out evaluation under each serving runtime" in readme
    assert f"| onnx | {figures['onnx']['accuracy']:.4f} | {figures['onnx']['macro_f1']:.4f} |" in readme


def test_runtime_evaluation_can_be_skipped(workspace: Path) -> None:
    output = workspace / "models" / "plain_trained"
    assert (
        train(workspace, "--output", str(output), "--epochs", "1", "--no-evaluate-runtimes", "--quiet") == 0
    )
    assert "runtimes" not in cards.read_card(output)
    assert not (output / onnx.CACHE_SUBDIR).exists()


def test_progress_and_the_held_out_table_are_shown(
    trained: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(workspace, "--output", str(workspace / "models" / "again_trained"), "--epochs", "1") == 0
    out, err = capsys.readouterr()
    assert "train again_trained" in err and "step" in err and "loss=" in err  # tqdm bar on stderr
    assert "Held-out evaluation (18 examples)" in out
    assert "macro avg" in out
    assert f"Wrote {workspace / 'models' / 'again_trained'}" in out


def test_the_same_seed_gives_the_same_model(workspace: Path) -> None:
    states = []
    for name, seed in (("one_trained", "5"), ("two_trained", "5"), ("other_trained", "6")):
        assert (
            train(workspace, "--output", str(workspace / name), "--epochs", "2", "--seed", seed, "--quiet")
            == 0
        )
        states.append(AutoModelForSequenceClassification.from_pretrained(str(workspace / name)).state_dict())
    same, other = states[1], states[2]
    assert all(torch.equal(states[0][name], same[name]) for name in same)
    assert not all(torch.equal(states[0][name], other[name]) for name in other)


def test_retraining_replaces_the_model_and_leaves_no_staging_behind(trained: Path, workspace: Path) -> None:
    target = workspace / "models" / "redo_trained"
    assert train(workspace, "--output", str(target), "--quiet", "--epochs", "1") == 0
    assert cards.read_card(target)["epochs"] == 1
    assert train(workspace, "--output", str(target), "--quiet", "--epochs", "2") == 0
    assert cards.read_card(target)["epochs"] == 2
    assert sorted(p.name for p in (workspace / "models").iterdir() if p.name.startswith(".")) == []


def test_carpool_train_forwards_to_the_command(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = workspace / "models" / "cli_trained"
    base, data = str(workspace / "models" / "tiny"), str(workspace / "data")
    options = ["--epochs", "1", "--max-length", "16", "--quiet", "--device", "cpu"]
    code = cli.main(["train", "--base", base, "--data", data, "--output", str(target), *options])
    assert code == 0
    assert cards.read_card(target)["base"] == "tiny"  # a path as --base: named after its directory


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--base", "nope"], "--base 'nope' is neither a model directory nor a model in", id="unknown-base"
        ),
        pytest.param(["--data", "missing.jsonl"], "dataset not found: missing.jsonl", id="missing-data"),
        pytest.param(["--device", "quantum"], "unknown device 'quantum'", id="bad-device"),
    ],
)
def test_unusable_arguments_fail_with_exit_2_naming_them(
    workspace: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults = {"--base": "tiny", "--data": str(workspace / "data"), "--device": "cpu"}
    defaults.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [part for pair in defaults.items() for part in pair] + ["--models-dir", str(workspace / "models")]
    assert command.main([*argv, "--output", str(workspace / "never_trained"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("carpool train: error: ")
    assert message in err
    assert not (workspace / "never_trained").exists()


def test_unknown_base_lists_the_available_ones(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["--base", "nope", "--models-dir", str(workspace / "models")]) == 2
    assert "(available: minilm, " in capsys.readouterr().err


def test_an_output_that_is_not_a_carpool_model_is_never_overwritten(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = workspace / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert train(workspace, "--output", str(precious), "--quiet") == 2
    assert "is not a model made by carpool train" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--epochs", "0"], "--epochs: must be >= 1, got 0", id="epochs"),
        pytest.param(["--learning-rate", "-1"], "--learning-rate: must be > 0, got -1", id="lr"),
        pytest.param(
            ["--test-fraction", "1.5"], "--test-fraction: must be between 0 and 1, got 1.5", id="fraction"
        ),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_and_argument_errors_answer_without_loading_torch() -> None:
    script = (
        "import sys\n"
        "from carpool_train import command\n"
        "code = command.main(['--base', 'no-such-model'])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.split() == ["2", "False"]
    assert "no-such-model" in done.stderr


def test_training_in_a_process_that_already_runs_torch_leaves_its_environment_alone(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OMP_WAIT_POLICY only matters before torch loads; set later it would leak into child processes.
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert train(workspace, "--output", str(workspace / "env_trained"), "--epochs", "1", "--quiet") == 0
    assert "OMP_WAIT_POLICY" not in os.environ

"""Which models a pod serves: flags, CARPOOL_MODELS, the models directory and the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.models import registry

pytestmark = pytest.mark.unit


def model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def names(specs: list[registry.ModelSpec]) -> list[str]:
    return [spec.name for spec in specs]


def test_without_models_the_embedded_minilm_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    specs = registry.discover({}, None)
    assert names(specs) == ["minilm"]
    assert specs[0].embedded and specs[0].kind == "base"
    assert (specs[0].path / "config.json").is_file()


def test_the_default_models_dir_adds_trained_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model_dir(tmp_path / "models" / "minilm_trained")
    (tmp_path / "models" / "notes").mkdir()  # no config.json: not a model
    specs = registry.discover({}, None)
    assert names(specs) == ["minilm", "minilm_trained"]
    assert specs[1].kind == "trained"
    assert specs[1].path == (tmp_path / "models" / "minilm_trained").resolve()


def test_explicit_models_replace_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model_dir(tmp_path / "models" / "minilm_trained")
    bert = model_dir(tmp_path / "elsewhere" / "bert")
    assert names(registry.discover({"bert-base": bert}, None)) == ["bert-base"]


def test_an_explicit_models_dir_is_added_to_explicit_models(tmp_path: Path) -> None:
    bert = model_dir(tmp_path / "bert")
    model_dir(tmp_path / "dir" / "b_trained")
    model_dir(tmp_path / "dir" / "a")
    assert names(registry.discover({"bert": bert}, tmp_path / "dir")) == ["bert", "a", "b_trained"]


def test_the_embedded_path_can_be_named(tmp_path: Path) -> None:
    specs = registry.discover({"detector": Path(registry.EMBEDDED_PATH)}, None)
    assert specs[0].embedded and specs[0].name == "detector"


@pytest.mark.parametrize(
    ("models", "models_dir", "message"),
    [
        pytest.param({"bad name": Path("/tmp")}, None, "model name 'bad name'", id="bad-name"),
        pytest.param(
            {}, Path("/no/such/dir"), "models directory '/no/such/dir' does not exist", id="bad-dir"
        ),
    ],
)
def test_bad_models_are_refused_with_the_reason(
    models: dict[str, Path], models_dir: Path | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        registry.discover(models, models_dir)


def test_load_card(tmp_path: Path) -> None:
    assert registry.load_card(tmp_path) is None
    (tmp_path / registry.CARD_FILE).write_text(
        json.dumps({"name": "m_trained", "metrics": {"accuracy": 0.9}})
    )
    assert registry.load_card(tmp_path) == {"name": "m_trained", "metrics": {"accuracy": 0.9}}
    (tmp_path / registry.CARD_FILE).write_text("{oops")
    card = registry.load_card(tmp_path)
    assert card is not None and "unreadable carpool_card.json" in card["error"]


def test_build_model_gives_the_embedded_model_a_four_label_head(tmp_path: Path) -> None:
    spec = registry.discover({"minilm": Path(registry.EMBEDDED_PATH)}, None)[0]
    model = registry.build_model(spec, device="cpu", dtype="auto", max_length=64)
    assert model.untrained_head
    assert model.labels == ("benign", "phishing", "spam", "prompt_injection")
    plain = registry.build_model(registry.ModelSpec("m", tmp_path), device="cpu", dtype="auto", max_length=64)
    assert not plain.untrained_head


def test_a_path_without_a_model_is_served_and_fails_at_load_with_the_reason(tmp_path: Path) -> None:
    specs = registry.discover({"x": tmp_path / "empty"}, None)
    assert [spec.name for spec in specs] == ["x"]
    model = registry.build_model(specs[0], device="cpu", dtype="auto", max_length=32)
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        model.load()

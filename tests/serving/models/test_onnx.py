"""ONNX runtimes on tiny BERTs: export once into the cache, reuse it, check it against torch at every
load, refuse a runtime that disagrees (falling back to torch), and `auto`'s choice."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from serving.models import hf, onnx, runtime
from serving.models.base import Model
from serving.settings import ServerSettings
from tests.serving.conftest import serve_app, tiny_settings
from tests.support import tinybert

pytestmark = pytest.mark.unit

TEXTS = ["hi", "Your parcel is held: pay the customs fee at http://example.test/pay today", "a b c d e f"]


def classifier(path: Path, cache: Path, runtime_name: str, **options: object) -> onnx.RuntimeClassifier:
    return onnx.RuntimeClassifier(
        "tiny", path, runtime=runtime_name, cache_dir=cache, device="cpu", max_length=32, **options
    )


def probabilities(model: hf.HFClassifier) -> list[list[float]]:
    return [list(p.probabilities.values()) for p in model.predict_batch([model.encode(t) for t in TEXTS])]


@pytest.fixture(scope="module")
def torch_answers(tiny_bert: Path) -> list[list[float]]:
    model = hf.HFClassifier("tiny", tiny_bert, device="cpu", max_length=32)
    model.load()
    return probabilities(model)


def test_first_load_exports_with_a_progress_line_and_later_loads_reuse_it(
    tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, torch_answers: list[list[float]]
) -> None:
    caplog.set_level(logging.INFO, logger="carpool.runtime")
    first = classifier(tiny_bert, tmp_path, "onnx")
    first.load()
    assert isinstance(first, Model)
    assert first.runtime == "onnx" and first.session is not None
    assert "exporting to ONNX" in caplog.text and "first start only" in caplog.text
    assert first.export is not None and first.export["cached"] is False
    exported = Path(first.export["path"])
    assert exported.is_file() and exported.parent.parent == tmp_path
    written = exported.stat().st_mtime_ns

    caplog.clear()
    second = classifier(tiny_bert, tmp_path, "onnx")
    second.load()
    assert second.export is not None and second.export["cached"] is True
    assert second.export["path"] == str(exported) and exported.stat().st_mtime_ns == written
    assert "exporting" not in caplog.text
    assert "runtime onnx" in caplog.text and "probe check passed" in caplog.text
    for ours, theirs in zip(probabilities(second), torch_answers, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-5)


def test_the_same_files_under_another_name_and_path_reuse_the_export(tiny_bert: Path, tmp_path: Path) -> None:
    """What `carpool train` relies on: it exports in a staging directory, then renames it into place."""
    first = classifier(tiny_bert, tmp_path / "cache", "onnx")
    first.load()
    copy = shutil.copytree(tiny_bert, tmp_path / "renamed", ignore=shutil.ignore_patterns(onnx.CACHE_SUBDIR))
    second = onnx.RuntimeClassifier(
        "other", copy, runtime="onnx", cache_dir=tmp_path / "cache", device="cpu", max_length=32
    )
    second.load()
    assert second.export is not None and second.export["cached"] is True


def test_int8_is_quantised_from_the_float_export_and_checked(
    tiny_bert: Path, tmp_path: Path, torch_answers: list[list[float]]
) -> None:
    model = classifier(tiny_bert, tmp_path, "onnx-int8")
    model.load()
    model.verify()
    assert model.runtime == "onnx-int8"
    assert model.export is not None
    assert sorted(p.name for p in Path(model.export["path"]).parent.iterdir()) == [
        "onnx-int8.onnx",
        "onnx.onnx",
    ]
    [check] = model.checks
    assert check.passed and check.probes == len(runtime.PROBE_TEXTS)
    assert 0 < check.max_logit_diff <= runtime.TOLERANCE["onnx-int8"]
    # The tiny BERT's labels are near-ties (its probabilities differ in the fourth decimal), so
    # which of them int8 keeps depends on the CPU's int8 kernels: any label it changes must be a
    # near-tie, and the status must count it as one.
    assert check.clear_flips == 0
    changed = round((1 - check.label_agreement) * check.probes * 2)  # batched and one by one
    assert check.near_tie_flips == changed
    status = model.describe()
    assert status["runtime"] == "onnx-int8" and status["runtime_fallback"] == []
    assert status["runtime_checks"] == [check.as_dict()]
    for ours, theirs in zip(probabilities(model), torch_answers, strict=True):
        assert ours == pytest.approx(theirs, abs=0.02)
    samples = model.warmup()  # the engine fits this runtime's own cost model from these
    assert [(s.batch_size, s.padded_len) for s in samples] == [(1, 16), (1, 32), (8, 32), (16, 32)]


def test_a_runtime_that_disagrees_with_torch_is_refused_and_torch_serves(
    tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, torch_answers: list[list[float]]
) -> None:
    """A stale export (here another model's, put where this model's belongs) fails the probe check."""
    other = tinybert.build_tiny_bert(tmp_path / "other", seed=7)
    stranger = classifier(other, tmp_path / "cache-other", "onnx")
    stranger.load()
    model = classifier(tiny_bert, tmp_path / "cache", "onnx")
    target = model.cache_path("onnx")
    target.parent.mkdir(parents=True)
    assert stranger.export is not None
    shutil.copy(stranger.export["path"], target)

    caplog.set_level(logging.INFO, logger="carpool.runtime")
    model.load()
    model.verify()
    assert model.runtime == "torch" and model.session is None
    [check] = model.checks
    assert not check.passed and check.max_logit_diff > runtime.TOLERANCE["onnx"]
    refusal = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "runtime onnx refused: probe check failed" in refusal.getMessage()
    status = model.describe()
    assert status["runtime"] == "torch" and status["runtime_requested"] == "onnx"
    assert status["runtime_fallback"][0].startswith("onnx: probe check failed")
    assert status["runtime_checks"][0]["passed"] is False
    for ours, theirs in zip(probabilities(model), torch_answers, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-6)


def test_auto_takes_the_fastest_runtime_the_card_vouches_for(
    tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    card = {
        "runtimes": {"torch": {"macro_f1": 0.9}, "onnx": {"macro_f1": 0.9}, "onnx-int8": {"macro_f1": 0.8}}
    }
    caplog.set_level(logging.INFO, logger="carpool.runtime")
    model = classifier(tiny_bert, tmp_path, "auto", card=card)
    model.load()
    assert model.runtime == "onnx"
    assert "held-out macro-F1 0.9000 vs torch 0.9000" in model.reason
    assert "auto does not take onnx-int8: held-out macro-F1 0.8000" in caplog.text
    assert model.describe()["runtime_fallback"] == [
        "onnx-int8: held-out macro-F1 0.8000 is more than 0.5 point below torch's 0.9000"
    ]


def test_auto_without_a_card_takes_the_fastest_that_passes_its_check(tiny_bert: Path, tmp_path: Path) -> None:
    model = classifier(tiny_bert, tmp_path, "auto")
    model.load()
    assert model.runtime == "onnx-int8" and "probe check decides" in model.reason


def test_auto_keeps_an_untrained_head_to_the_lossless_runtime(tiny_bert: Path, tmp_path: Path) -> None:
    model = classifier(tiny_bert, tmp_path, "auto", head_labels=("a", "b", "c"))
    model.load()
    assert model.runtime == "onnx" and "untrained head" in model.reason
    assert model.labels == ("a", "b", "c")
    assert model.cache_path("onnx") != classifier(tiny_bert, tmp_path, "onnx").cache_path("onnx")


def test_the_default_cache_is_beside_the_model_or_in_the_user_cache(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert onnx.default_cache_root(tiny_bert, embedded=False) == tiny_bert / onnx.CACHE_SUBDIR
    assert onnx.default_cache_root(tiny_bert, embedded=True) == tmp_path / "carpool"


async def test_models_status_shows_each_models_runtime_and_check(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = tiny_settings(
        tiny_models_dir, runtime="onnx", model_runtimes={"tiny_trained": "torch"}, cache_dir=tmp_path
    )
    assert isinstance(settings, ServerSettings)
    async with serve_app(settings) as served:
        response = await served.client.get("/models/status")
        assert response.status_code == 200
        status = {entry["name"]: entry for entry in response.json()["models"]}
        assert status["tiny"]["runtime"] == "onnx"
        assert status["tiny"]["runtime_checks"][0]["passed"] is True
        assert status["tiny_trained"]["runtime"] == "torch"
        assert status["tiny_trained"]["runtime_reason"] == "asked for"
        answer = await served.client.post("/predict", json={"text": "hello", "models": ["tiny"]})
        assert answer.status_code == 200
    assert json.loads(json.dumps(status))  # plain JSON throughout

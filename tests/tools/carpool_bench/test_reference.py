"""The bench's raw references: an ONNX reference runs on the server's own export."""

from __future__ import annotations

from pathlib import Path

import pytest

from carpool_bench import reference
from serving.models import onnx

pytestmark = pytest.mark.integration

LABELS = ("benign", "phishing", "spam", "prompt_injection")


def test_the_onnx_reference_runs_the_servers_export_of_a_seeded_head(tiny_bert: Path, tmp_path: Path) -> None:
    """An untrained model (the embedded minilm) gets a seeded head in the server; the bench's ONNX
    reference loads the same head, so it finds the server's export in the cache and checks that one,
    not a new export of a head drawn at random in the bench's process."""
    served = onnx.RuntimeClassifier(
        "tiny", tiny_bert, runtime="onnx", cache_dir=tmp_path, device="cpu", max_length=32, head_labels=LABELS
    )
    served.load()
    assert served.runtime == "onnx"
    exports = sorted(tmp_path.rglob("*.onnx"))
    assert exports
    raw = reference.RawModel(
        tiny_bert,
        ["a text to classify", "another, longer text to classify here"],
        device="cpu",
        dtype="float32",
        max_batch_size=2,
        max_length=32,
        runtime="onnx",
        cache_dir=tmp_path,
        head_labels=LABELS,
    )
    assert raw.runtime == "onnx"
    assert sorted(tmp_path.rglob("*.onnx")) == exports  # no second export: the server's was reused

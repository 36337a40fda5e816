"""The bench's raw references: an ONNX reference runs on the server's own export."""

from __future__ import annotations

from collections.abc import Sequence
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


def test_the_model_fed_from_a_full_queue_batches_only_what_the_queue_holds(tiny_bert: Path) -> None:
    """The overload's bound: every pick sees a queue topped up to its size, the texts in order,
    and the rate and batch size are those of the riders the pick chose."""
    texts = [f"text number {i} " + "word " * (i % 5) for i in range(10)]
    raw = reference.RawModel(tiny_bert, texts, device="cpu", dtype="float32", max_batch_size=4, max_length=32)
    seen: list[list[int]] = []

    def oldest_alone(waiting: Sequence[reference.Queued], now: float) -> Sequence[int]:
        seen.append([w.index for w in waiting])
        return (0,)

    rate, size = raw.fed_from_queue(3, 0.05, oldest_alone)
    assert size == 1.0 and rate > 0
    assert all(len(queue) == 3 for queue in seen)
    assert seen[:3] == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]  # arrival order, topped up after each batch
    assert any(queue[0] == 0 for queue in seen[10:])  # round and round the texts

    def everyone(waiting: Sequence[reference.Queued], now: float) -> Sequence[int]:
        return range(len(waiting))

    assert raw.fed_from_queue(8, 0.05, everyone)[1] == 8.0  # never more than the queue holds

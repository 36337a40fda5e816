"""Several devices behind one engine: one queue per model, a free device takes the next batch.

Two real tiny BERT replicas on the CPU ("cpu,cpu", the path `CARPOOL_DEVICES=cuda:0,cuda:1` takes),
each on its own model thread: both take batches under load, every answer is the text's own, and
drain and hurry still answer everything.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from serving.batching.engine import BatchEngine, EngineState
from serving.batching.replica import Replica
from serving.metrics import Metrics
from serving.models import hf
from serving.models.base import Encoded, Prediction
from serving.settings import BatchingConfig
from tests.support import tinybert

pytestmark = pytest.mark.unit


class Recording(hf.HFClassifier):
    """A real tiny BERT that records which thread ran each batch and how large it was."""

    def __init__(self, path: Path) -> None:
        super().__init__("tiny", path, device="cpu", max_length=32)
        self.batches: list[tuple[int, int]] = []

    def predict_batch(self, items: Sequence[Encoded]) -> list[Prediction]:
        self.batches.append((threading.get_ident(), len(items)))
        return super().predict_batch(items)


@pytest.fixture(scope="module")
def distinct_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinybert.build_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny", weight_std=0.2)


@pytest.fixture(scope="module")
def expected(distinct_bert: Path) -> dict[str, Prediction]:
    model = hf.HFClassifier("tiny", distinct_bert, device="cpu", max_length=32)
    model.load()
    return {text: model.predict_batch([model.encode(text)])[0] for text in tinybert.word_texts(300)}


@pytest.fixture
async def two_devices(distinct_bert: Path) -> AsyncIterator[tuple[BatchEngine, list[Recording], Metrics]]:
    models = [Recording(distinct_bert), Recording(distinct_bert)]
    metrics = Metrics()
    metrics.per_device()
    config = BatchingConfig.model_validate({"strategy": "adaptive", "max_batch_size": 16})
    engine = BatchEngine(
        models[0],
        config,
        observer=metrics,
        replicas=[Replica(models[0], None, "cpu#0"), Replica(models[1], None, "cpu#1")],
    )
    await engine.start()
    yield engine, models, metrics
    await engine.drain()


def assert_own_answers(got: Sequence[Any], batch: Sequence[str], expected: dict[str, Prediction]) -> None:
    for text, answer in zip(batch, got, strict=True):
        assert isinstance(answer, Prediction), answer
        assert answer.label == expected[text].label
        assert answer.probabilities == pytest.approx(expected[text].probabilities, abs=1e-5)


async def test_both_devices_take_batches_and_every_answer_is_the_texts_own(
    two_devices: tuple[BatchEngine, list[Recording], Metrics], expected: dict[str, Prediction]
) -> None:
    engine, models, metrics = two_devices
    batch = tinybert.word_texts(240)
    answers = await asyncio.gather(*(engine.submit(text) for text in batch))
    assert_own_answers(answers, batch, expected)
    threads = [{name for name, _ in model.batches} for model in models]
    assert all(len(names) == 1 for names in threads) and threads[0] != threads[1], threads
    assert all(model.batches for model in models), "both devices must take batches"
    assert sum(size for model in models for _, size in model.batches) == 240
    devices = engine.describe()["devices"]
    assert set(devices) == {"cpu#0", "cpu#1"}
    assert devices["cpu#0"]["requests"] + devices["cpu#1"]["requests"] == 240
    assert all(d["batches"] > 0 and d["token_cap"]["source"] == "configured" for d in devices.values())
    scraped = metrics.render().decode()
    for label, model in zip(("cpu#0", "cpu#1"), models, strict=True):
        count = f'carpool_batch_size_count{{device="{label}",model="tiny"}} {float(len(model.batches))}'
        assert count in scraped


async def test_a_free_device_takes_the_next_batch_while_the_other_computes(
    two_devices: tuple[BatchEngine, list[Recording], Metrics], expected: dict[str, Prediction]
) -> None:
    engine, models, _ = two_devices
    gate = threading.Event()
    slow, fast = models
    original = slow.predict_batch

    def held(items: Sequence[Encoded]) -> list[Prediction]:
        gate.wait(10)
        return original(items)

    slow.predict_batch = held  # type: ignore[method-assign]
    batch = tinybert.word_texts(40)
    first = engine.submit(batch[0])  # to the first free device: the slow one, which now holds it
    await asyncio.sleep(0.05)
    rest = await asyncio.gather(*(engine.submit(text) for text in batch[1:]))  # the other answers all
    assert not first.done()
    assert_own_answers(rest, batch[1:], expected)
    gate.set()
    assert_own_answers([await first], batch[:1], expected)
    assert sum(size for _, size in fast.batches) == 39


async def test_drain_and_hurry_answer_everything_on_every_device(
    two_devices: tuple[BatchEngine, list[Recording], Metrics], expected: dict[str, Prediction]
) -> None:
    engine, models, _ = two_devices
    engine.reconfigure(
        BatchingConfig.model_validate(
            {"strategy": "batch_optimized", "max_batch_size": 16, "max_wait_time_ms": 60_000}
        )
    )
    batch = tinybert.word_texts(200)
    futures = [engine.submit(text) for text in batch[:100]]
    await asyncio.sleep(0.05)
    assert any(not f.done() for f in futures)  # held: batch_optimized waits for full batches
    engine.hurry()
    futures += [engine.submit(text) for text in batch[100:]]
    await engine.drain()
    assert engine.state is EngineState.STOPPED
    assert all(f.done() for f in futures)
    assert_own_answers([f.result() for f in futures], batch, expected)
    assert all(model.batches for model in models)

"""GPU-aware batching: the token cap learned from memory, and out-of-memory batches split, not failed.

The pure parts are table-tested. The engine's part runs a real tiny BERT on the CPU through the same
code path a GPU takes: a model whose forward passes raise torch's own `torch.cuda.OutOfMemoryError`
above a token budget (the class exists in CPU builds), and one that reports warm-up peaks and free
memory as CUDA's allocator would (what cannot be measured without a device: the figures themselves).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.batching import memory
from serving.batching.engine import BatchEngine
from serving.metrics import Metrics
from serving.models import hf
from serving.models.base import Encoded, Prediction, WarmupSample
from serving.pool import ModelPool
from serving.settings import BatchingConfig
from tests.support import tinybert

pytestmark = pytest.mark.unit

# -- pure --------------------------------------------------------------------------------------


def test_fit_recovers_base_and_bytes_per_token() -> None:
    samples = [(b, n, 4_000_000 + 3_000 * b * n) for b, n in ((1, 16), (1, 48), (8, 32), (16, 48))]
    fitted = memory.fit(samples)
    assert fitted is not None
    assert fitted.base_bytes == pytest.approx(4_000_000, rel=1e-6)
    assert fitted.per_token_bytes == pytest.approx(3_000, rel=1e-6)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        pytest.param([(1, 16, 1000)], None, id="one-shape"),
        pytest.param([(1, 16, 1000), (2, 8, 1000)], None, id="same-tokens"),
        pytest.param([(1, 16, 2000), (4, 16, 1000)], None, id="shrinking"),
    ],
)
def test_fit_refuses_samples_that_cannot_pin_the_slope(samples: list[Any], expected: None) -> None:
    assert memory.fit(samples) is expected


def test_tokens_within_keeps_the_margin_and_the_base_aside() -> None:
    fitted = memory.MemoryFit(base_bytes=1_000_000, per_token_bytes=1_000)
    assert fitted.tokens_within(11_000_000, margin=0.0) == 10_000
    assert fitted.tokens_within(11_000_000, margin=0.1) == 8_900
    assert fitted.tokens_within(500_000) == 1  # not even the base fits: one request at a time


def test_a_cap_learns_then_only_comes_down() -> None:
    cap = memory.TokenCap()
    assert (cap.limit, cap.source) == (None, "configured")
    cap.learn([], None)
    assert cap.limit is None
    peaks = [(1, 16, 1_016_000), (16, 48, 1_768_000)]  # 1 MB + 1 kB per token
    cap.learn(peaks, 11_000_000)
    assert (cap.limit, cap.source) == (8_900, "device_memory")
    assert "8900 tokens" in cap.reason
    assert cap.lowered_after(4_096) == 2_048
    assert (cap.source, cap.out_of_memory, cap.lowered) == ("out_of_memory", 1, 1)
    assert cap.lowered_after(8_192) == 2_048  # a larger failure never raises it
    assert (cap.out_of_memory, cap.lowered) == (2, 1)
    cap.learn(peaks, 11_000_000)  # learning again keeps what an out-of-memory error proved
    assert cap.limit == 2_048
    described = cap.describe(32)
    assert described["max_batch_tokens"] == 2_048 and described["out_of_memory_batches"] == 2
    assert described["memory"]["per_token_bytes"] == pytest.approx(1_000, rel=1e-3)


# -- the engine, with a real tiny BERT ----------------------------------------------------------


class TightDevice(hf.HFClassifier):
    """A real tiny BERT on a 'device' that runs out of memory above `budget` tokens per batch."""

    def __init__(self, path: Path, budget: int) -> None:
        super().__init__("tiny", path, device="cpu", max_length=32)
        self.budget = budget
        self.ran: list[tuple[int, int]] = []  # (batch size, tokens) of each pass that ran
        self.refused: list[int] = []

    def predict_batch(self, items: Sequence[Encoded]) -> list[Prediction]:
        tokens = len(items) * max(item.tokens for item in items)
        if tokens > self.budget:
            self.refused.append(tokens)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: a batch of {tokens} tokens")
        self.ran.append((len(items), tokens))
        return super().predict_batch(items)


class MeasuredDevice(TightDevice):
    """Also reports warm-up peaks and free memory as CUDA's allocator would: 100 kB + 64 kB per token,
    4 MB free after loading; the engine must cap batches at the tokens that fit (less the margin)."""

    def warmup(self) -> list[WarmupSample]:
        return [
            WarmupSample(
                s.batch_size, s.padded_len, s.seconds, 100_000 + 64_000 * s.batch_size * s.padded_len
            )
            for s in super().warmup()
        ]

    def memory_free(self) -> int:
        return 4_000_000


@pytest.fixture(scope="module")
def distinct_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinybert.build_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny", weight_std=0.2)


@pytest.fixture
async def engines() -> AsyncIterator[list[ModelPool]]:
    made: list[ModelPool] = []
    yield made
    for pool in made:
        await pool.drain()


async def start(
    engines: list[ModelPool], model: hf.HFClassifier, metrics: Metrics | None = None
) -> BatchEngine:
    """The model's engine in a pool (which reports the caps to /metrics), loaded and warm."""
    config = BatchingConfig.model_validate(
        {"strategy": "batch_optimized", "max_batch_size": 32, "max_wait_time_ms": 20}
    )
    pool = ModelPool.from_models([model], config, metrics=metrics or Metrics(enabled=False))
    engines.append(pool)
    await pool.start_loading()
    return pool.served[model.name].engine


def reference(path: Path, batch: list[str]) -> list[Prediction]:
    model = hf.HFClassifier("tiny", path, device="cpu", max_length=32)
    model.load()
    return [model.predict_batch([model.encode(text)])[0] for text in batch]


def assert_same(got: Sequence[Prediction], expected: Sequence[Prediction]) -> None:
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.label == theirs.label
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-5)


async def test_out_of_memory_splits_the_batch_answers_everyone_and_lowers_the_cap(
    engines: list[ModelPool], distinct_bert: Path
) -> None:
    model = TightDevice(distinct_bert, budget=160)
    metrics = Metrics()
    engine = await start(engines, model, metrics)
    assert engine.describe()["token_cap"]["source"] == "configured"  # a CPU: no memory cap

    first = tinybert.word_texts(32, seed=1)
    answers = await asyncio.gather(*(engine.submit(text) for text in first))
    assert_same(answers, reference(distinct_bert, first))  # all 32 answered, each with its own
    assert model.refused, "the first batch must have run out of memory"
    report = engine.describe()["token_cap"]
    assert report["source"] == "out_of_memory" and report["out_of_memory_batches"] >= 1
    cap = report["max_batch_tokens"]
    assert cap == min(model.refused) // 2 and cap <= 160
    assert engine.stats.failed == 0

    model.ran.clear()
    refused_before = len(model.refused)
    second = tinybert.word_texts(64, seed=2)
    answers = await asyncio.gather(*(engine.submit(text) for text in second))
    assert_same(answers, reference(distinct_bert, second))
    assert len(model.refused) == refused_before, "batches after the cap was lowered must fit it"
    assert all(size == 1 or tokens <= cap for size, tokens in model.ran)
    assert max(size for size, _ in model.ran) > 1  # still batching, under the cap

    scraped = metrics.render().decode()
    assert (
        f'carpool_out_of_memory_total{{device="cpu",model="tiny"}} {float(report["out_of_memory_batches"])}'
        in scraped
    )
    assert f'carpool_batch_token_cap{{device="cpu",model="tiny"}} {float(cap)}' in scraped


async def test_a_text_too_large_alone_fails_alone(engines: list[ModelPool], distinct_bert: Path) -> None:
    model = TightDevice(distinct_bert, budget=12)
    engine = await start(engines, model)
    batch = ["hi", "one two three four five six seven eight nine ten eleven twelve thirteen", "yo"]
    outcomes = await asyncio.gather(*(engine.submit(text) for text in batch), return_exceptions=True)
    assert isinstance(outcomes[1], Exception) and "ran out of device memory on this text alone" in str(
        outcomes[1]
    )
    assert_same([outcomes[0], outcomes[2]], reference(distinct_bert, [batch[0], batch[2]]))  # type: ignore[list-item]


async def test_the_cap_learned_at_warm_up_keeps_batches_within_free_memory(
    engines: list[ModelPool], distinct_bert: Path
) -> None:
    model = MeasuredDevice(distinct_bert, budget=10_000)
    engine = await start(engines, model)
    report = engine.describe()["token_cap"]
    expected = int((4_000_000 * 0.9 - 100_000) // 64_000)  # 54 tokens
    assert (report["source"], report["max_batch_tokens"]) == ("device_memory", expected)
    assert report["memory"]["free_bytes_at_warmup"] == 4_000_000
    batch = tinybert.word_texts(40, seed=3)
    answers = await asyncio.gather(*(engine.submit(text) for text in batch))
    assert_same(answers, reference(distinct_bert, batch))
    assert all(size == 1 or tokens <= expected for size, tokens in model.ran)
    assert not model.refused
    assert max(size for size, _ in model.ran) > 1

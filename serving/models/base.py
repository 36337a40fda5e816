"""The contract between the batching engine and a model.

A model turns text into an `Encoded` item on the request path (cheap, no padding, so the engine
knows each item's token count when it picks a batch) and turns a list of encoded items into one
`Prediction` each on its own model thread. Everything torch does happens inside
`load`, `warmup` and `predict_batch`, which the engine only ever calls from that thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Encoded", "Model", "Prediction", "WarmupSample"]


@dataclass(frozen=True, slots=True)
class Encoded:
    """One text as the model will see it: token ids without padding."""

    text: str
    ids: Sequence[int]

    @property
    def tokens(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model's answer for one text."""

    label: str
    score: float
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WarmupSample:
    """A forward pass timed during warm-up: it seeds the engine's cost model.

    `peak_bytes`: device memory the pass needed above what was held before it (a GPU measures it;
    None elsewhere); it seeds the engine's token cap (`batching.memory`).
    """

    batch_size: int
    padded_len: int
    seconds: float
    peak_bytes: int | None = None


@runtime_checkable
class Model(Protocol):
    """What the engine needs from a model."""

    name: str
    labels: tuple[str, ...]
    device: str
    dtype: str

    def load(self) -> None:
        """Load weights and tokenizer; called once, on the model thread."""

    def warmup(self) -> list[WarmupSample]:
        """Run representative forward passes (model thread); return their timings."""

    def encode(self, text: str) -> Encoded:
        """Tokenize one text without padding; raises errors.InvalidInput for text it cannot take."""

    def predict_batch(self, items: Sequence[Encoded]) -> list[Prediction]:
        """One prediction per item, in order (model thread)."""

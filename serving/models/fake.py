"""`EchoModel`: a model that answers each text with itself, for engine tests without torch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from serving import errors
from serving.models.base import Encoded, Prediction, WarmupSample

__all__ = ["EchoModel"]


class EchoModel:
    """Labels each text with the text itself and records every batch it ran.

    A text containing `fail_on` makes `predict_batch` raise for the whole batch (as a crashing
    model would); an empty text is refused by `encode`. `delay_s` sleeps on the model thread.
    """

    def __init__(self, name: str = "echo", *, fail_on: str = "boom", delay_s: float = 0.0) -> None:
        self.name = name
        self.labels: tuple[str, ...] = ("echo",)
        self.device = "cpu"
        self.dtype = "none"
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def load(self) -> None:
        self.threads.add(threading.current_thread().name)

    def warmup(self) -> list[WarmupSample]:
        return []

    def encode(self, text: str) -> Encoded:
        if not text.strip():
            raise errors.EmptyText("text must not be empty")
        return Encoded(text=text, ids=range(len(text.split()) + 2))

    def predict_batch(self, items: Sequence[Encoded]) -> list[Prediction]:
        self.threads.add(threading.current_thread().name)
        texts = [item.text for item in items]
        self.batches.append(texts)
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(self.fail_on in text for text in texts):
            raise RuntimeError(f"cannot process {self.fail_on!r}")
        return [Prediction(label=text, score=1.0, probabilities={text: 1.0}) for text in texts]

"""Models for engine and pool tests: EchoModel variants that wait, fail to load, or drop an answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from serving.models.base import Encoded, Prediction
from serving.models.fake import EchoModel

__all__ = ["BrokenModel", "GatedModel", "ShortModel", "until_running"]


class GatedModel(EchoModel):
    """EchoModel whose forward passes wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict_batch(self, items: Sequence[Encoded]) -> list[Prediction]:
        self.entered.set()
        self.gate.wait(10)
        return super().predict_batch(items)


class ShortModel(EchoModel):
    def predict_batch(self, items: Sequence[Encoded]) -> list[Prediction]:
        return super().predict_batch(items)[:-1]


class BrokenModel(EchoModel):
    def load(self) -> None:
        raise OSError("no weights in /nowhere")


async def until_running(model: GatedModel) -> None:
    await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 5)

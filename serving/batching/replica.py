"""One device's copy of a model inside a batching engine, and what that device did.

A pod with several devices replicates each model on each of them (`ModelPool.from_settings`); the
model's one engine keeps one queue and hands each batch to whichever replica is free, so batching
stays global per model. Each replica has its own model thread (shared by every model on that
device), its own token cap (`memory.TokenCap`: devices may differ in free memory) and its own
figures, which /batching/stats and /metrics report per device.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from serving.batching import memory
from serving.models.base import Model

__all__ = ["Replica"]


@dataclass(slots=True, eq=False)
class Replica:
    """`label` names the device in reports (None: the model's own device string, one device)."""

    model: Model
    executor: ThreadPoolExecutor | None = None  # the device's model thread (shared), else the engine's own
    label: str | None = None
    cap: memory.TokenCap = field(default_factory=memory.TokenCap)
    running: tuple[float, int] | None = None  # (started, size) of the batch on its thread
    batches: int = 0
    requests: int = 0
    busy_s: float = 0.0

    @property
    def device(self) -> str:
        return self.label or self.model.device

    def on_batch(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.requests += size
        self.busy_s += seconds

    def describe(self, max_batch_size: int, uptime_s: float) -> dict[str, Any]:
        """This device's part of an engine's /batching/stats."""
        return {
            "device": self.model.device,
            "batches": self.batches,
            "requests": self.requests,
            "avg_batch_size": round(self.requests / self.batches, 3) if self.batches else None,
            "busy_fraction": round(self.busy_s / uptime_s, 4) if uptime_s > 0 else None,
            "running": self.running is not None,
            "token_cap": self.cap.describe(max_batch_size),
        }

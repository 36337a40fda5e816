"""How many tokens a batch may hold on one device: the cap that follows device memory.

A forward pass needs memory for its activations, which grow with batch size x padded length
(the tokens of the batch) on top of a fixed part. On a GPU the model measures, at warm-up, the peak
memory of a few batch shapes above what it held before (`WarmupSample.peak_bytes`); `fit` draws
``bytes ≈ base + per_token · tokens`` through them, and `TokenCap.learn` caps batches at the tokens
that fit in the memory free after loading, less a safety margin (`SAFETY_MARGIN`: the fit is
extrapolated from small shapes, and attention grows faster than linearly with length).

If a batch still runs out of memory, the engine splits it in halves (every request is answered)
and `TokenCap.lowered` halves the cap below the batch that failed: the cap only ever comes down.
Where nothing measures memory (a CPU, a runtime that reports no peaks) there is no token cap:
batches are capped by max_batch_size alone, the configured cap.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.batching import cost

__all__ = ["SAFETY_MARGIN", "MemoryFit", "TokenCap", "fit"]

SAFETY_MARGIN = 0.10  # of the free memory, never planned for


@dataclass(frozen=True, slots=True)
class MemoryFit:
    """Peak activation memory of a forward pass: base + per_token · batch · padded_len bytes."""

    base_bytes: float
    per_token_bytes: float

    def tokens_within(self, free_bytes: int, margin: float = SAFETY_MARGIN) -> int:
        """The most tokens one batch may hold in `free_bytes`, keeping `margin` of it spare."""
        usable = free_bytes * (1.0 - margin) - self.base_bytes
        return max(1, int(usable // self.per_token_bytes)) if usable > 0 else 1


def fit(samples: Sequence[tuple[int, int, int]]) -> MemoryFit | None:
    """Least squares over (batch, padded_len, peak bytes); None when they cannot pin the slope."""
    fitted = cost.fit([(b, n, float(peak)) for b, n, peak in samples])
    if fitted is None:
        return None
    return MemoryFit(fitted.fixed_s, fitted.per_token_s)


@dataclass(slots=True)
class TokenCap:
    """One device's token cap, where it came from, and what out-of-memory errors did to it."""

    limit: int | None = None
    source: str = "configured"  # configured | device_memory | out_of_memory
    reason: str = "no memory cap on this device: batches are capped by max_batch_size"
    memory: MemoryFit | None = None
    free_bytes: int | None = None
    out_of_memory: int = 0  # batches that ran out of memory (each split, none failed for it)
    lowered: int = 0  # times an out-of-memory error lowered the cap
    last_failed_tokens: int | None = None

    def learn(self, samples: Sequence[tuple[int, int, int]], free_bytes: int | None) -> None:
        """Cap from warm-up peaks and the free memory; unchanged if either is missing or unusable."""
        fitted = fit(samples) if samples else None
        if fitted is None or free_bytes is None:
            return
        learned = fitted.tokens_within(free_bytes)
        self.memory, self.free_bytes = fitted, free_bytes
        if self.limit is not None and self.source == "out_of_memory" and self.limit < learned:
            return  # a cap an out-of-memory error set stays: the device proved it too large
        self.limit, self.source = learned, "device_memory"
        self.reason = (
            f"warm-up peaks fit {fitted.base_bytes / 2**20:.1f} MiB + "
            f"{fitted.per_token_bytes / 1024:.1f} KiB per token; {free_bytes / 2**20:.0f} MiB free "
            f"less {SAFETY_MARGIN:.0%} holds {learned} tokens (batch size x padded length)"
        )

    def lowered_after(self, failed_tokens: int) -> int:
        """A batch of `failed_tokens` ran out of memory: the cap becomes at most half of it."""
        self.out_of_memory += 1
        self.last_failed_tokens = failed_tokens
        new = max(1, failed_tokens // 2)
        if self.limit is None or new < self.limit:
            self.limit = new
            self.lowered += 1
            self.source = "out_of_memory"
            self.reason = (
                f"a batch of {failed_tokens} tokens ran out of device memory: split in halves, "
                f"cap lowered to {new} tokens"
            )
        return self.limit

    def describe(self, max_batch_size: int) -> dict[str, Any]:
        """The `token_cap` part of /batching/stats."""
        report: dict[str, Any] = {
            "max_batch_tokens": self.limit,
            "source": self.source,
            "reason": self.reason,
            "max_batch_size": max_batch_size,
            "out_of_memory_batches": self.out_of_memory,
            "cap_lowered": self.lowered,
        }
        if self.memory is not None:
            report["memory"] = {
                "base_bytes": round(self.memory.base_bytes),
                "per_token_bytes": round(self.memory.per_token_bytes, 1),
                "free_bytes_at_warmup": self.free_bytes,
                "safety_margin": SAFETY_MARGIN,
            }
        if self.last_failed_tokens is not None:
            report["last_failed_tokens"] = self.last_failed_tokens
        return report

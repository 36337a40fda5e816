"""A request waiting in a model's queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from serving.models.base import Encoded, Prediction

__all__ = ["BULK", "INTERACTIVE", "Pending"]

INTERACTIVE = 0  # /predict and /predict/trained: a caller waits for this one answer
BULK = 1  # /predict/batch: one of many items


@dataclass(slots=True, eq=False)
class Pending:
    """One encoded text, the future its caller awaits, and when it joined the queue.

    `enqueued_at` is on the loop clock (policies compare it with deadlines); `measured_at` is
    `time.perf_counter()` at the same moment, for the figures (uvloop's clock ticks in milliseconds).
    `deadline` (loop clock) is when it is dropped unanswered by the model if still queued; `lane`
    is INTERACTIVE or BULK; `expiry` is the timer that drops it.
    """

    item: Encoded
    future: asyncio.Future[Prediction]
    enqueued_at: float
    tokens: int
    measured_at: float = 0.0
    deadline: float | None = None
    lane: int = INTERACTIVE
    expiry: asyncio.TimerHandle | None = None

"""A request waiting in a model's queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from serving.models.base import Encoded, Prediction

__all__ = ["Pending"]


@dataclass(slots=True, eq=False)
class Pending:
    """One encoded text, the future its caller awaits, and when it joined the queue (loop clock)."""

    item: Encoded
    future: asyncio.Future[Prediction]
    enqueued_at: float
    tokens: int

"""The one definition of a percentile in Carpool: /batching/stats, the adaptive controller and the bench.

Nearest rank: the q-th percentile of n figures is the smallest one that at least q % of them do not
exceed, the ``ceil(q/100 · n)``-th in ascending order. Why this one rather than interpolation
between ranks (numpy's default):

- it is always a figure that was measured: "p95 = 41 ms" means a request really took 41 ms and
  95 % took no longer, so it can be read against a latency goal or `latency_threshold_ms` as is;
  interpolation reports latencies no request had, between a fast one and a stalled one;
- it is monotone in q and stable in n: one more sample moves it to a neighbouring measured value;
- it needs one index into the sorted figures, cheap enough for the adaptive controller's p95.

With few figures the tail percentiles are the largest figure (p99 of 10 requests is the slowest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0..100) of `ordered`, sorted ascending; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile lies in [0, 100], got {q}")
    if not ordered:
        return None
    rank = min(len(ordered), max(1, math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]

"""Measured figures of one model's engine: what /batching/stats reports and adaptive reads.

Every record call is O(1) amortised (bounded deques); percentiles are computed when asked, and the
p95 the adaptive controller reads is cached for `P95_REFRESH_S`. Times are `time.perf_counter()`
seconds, the engine's measuring clock (not the loop clock it schedules on, which uvloop ticks in
whole milliseconds).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from serving.percentiles import percentile

__all__ = ["WAIT_EWMA", "EngineStats"]

WINDOW = 4096  # recent requests kept for percentiles
RATE_WINDOW_S = 1.0  # arrivals counted over this span for the arrival rate
BUSY_WINDOW_S = 1.0  # model-thread busy fraction over this span
THROUGHPUT_WINDOW_S = 10.0
OVERFLOW_WINDOW_S = 10.0  # refusals (queue full) counted over this span for the overflow rate
P95_REFRESH_S = 0.1
P95_WINDOW = 512  # the adaptive controller's p95: over the most recent requests (of the last 60 s)
P95_MAX_AGE_S = 60.0
WAIT_EWMA = 0.02
DRAIN_EWMA = 0.2
BACK_TO_BACK_S = 0.005  # a batch starting this soon after the previous one ended: the model is busy


@dataclass(slots=True)
class _Batch:
    done_at: float
    size: int
    padded_len: int
    tokens: int
    seconds: float


class EngineStats:
    def __init__(self, now: float) -> None:
        self.started_at = now
        self.completed = 0
        self.failed = 0
        self.overflow = 0
        self._overflows: deque[float] = deque(maxlen=WINDOW)  # when recent refusals happened
        self.cancelled = 0
        self.expired = 0
        self.drain_rate = 0.0  # requests per second the model clears while busy (EWMA over batches)
        self._last_done: float | None = None
        self.peak_queue = 0
        self.typical_wait_s = 0.0
        self._latencies: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (done_at, seconds)
        self._waits: deque[float] = deque(maxlen=WINDOW)
        self._batches: deque[_Batch] = deque(maxlen=WINDOW)
        self._arrivals: deque[float] = deque(maxlen=WINDOW)
        # (start, end) of the batches that ended within BUSY_WINDOW_S of the newest, and their sum
        self._busy: deque[tuple[float, float]] = deque()
        self._busy_s = 0.0
        self._p95: float | None = None
        self._p95_at = float("-inf")

    def on_arrival(self, now: float, queue_size: int) -> None:
        self._arrivals.append(now)
        if queue_size > self.peak_queue:
            self.peak_queue = queue_size

    def on_batch(self, started: float, done: float, waits: list[float], padded_len: int, tokens: int) -> None:
        size = len(waits)
        last = self._last_done
        # Busy back to back, a batch's share of time runs from the previous batch's end (hand-offs
        # included); after an idle spell, from its own start.
        begin = last if last is not None and started - last < BACK_TO_BACK_S else started
        sample = size / max(done - begin, 1e-6)
        self.drain_rate = (
            sample if self.drain_rate == 0.0 else self.drain_rate + DRAIN_EWMA * (sample - self.drain_rate)
        )
        self._last_done = done
        self._batches.append(_Batch(done, size, padded_len, tokens, done - started))
        self._busy.append((started, done))
        self._busy_s += done - started
        self._forget_busy(done - BUSY_WINDOW_S)
        self._waits.extend(waits)
        for wait in waits:
            self.typical_wait_s += WAIT_EWMA * (wait - self.typical_wait_s)

    def on_result(self, done: float, latency_s: float, ok: bool) -> None:
        if ok:
            self.completed += 1
            self._latencies.append((done, latency_s))
        else:
            self.failed += 1

    def on_overflow(self, now: float) -> None:
        self.overflow += 1
        self._overflows.append(now)

    def overflow_rate(self, now: float) -> float:
        """Refusals (queue full) in the last OVERFLOW_WINDOW_S, per second (a fixed window: a young
        engine's burst is not read as a huge rate)."""
        return sum(1 for t in self._overflows if t >= now - OVERFLOW_WINDOW_S) / OVERFLOW_WINDOW_S

    def arrival_rate(self, now: float) -> float:
        arrivals = self._arrivals
        while arrivals and arrivals[0] < now - RATE_WINDOW_S:
            arrivals.popleft()
        span = min(RATE_WINDOW_S, max(now - self.started_at, 1e-3))
        return len(arrivals) / span

    def _forget_busy(self, before: float) -> None:
        busy = self._busy
        while busy and busy[0][1] <= before:
            start, end = busy.popleft()
            self._busy_s -= end - start
        if not busy:
            self._busy_s = 0.0  # no float residue left behind

    def busy_fraction(self, now: float) -> float:
        """Share of the last second the model thread spent computing (a running batch counts).
        O(1) amortised: a running sum over the batches of the window, whatever the batch rate."""
        start_window = now - BUSY_WINDOW_S
        self._forget_busy(start_window)
        busy = self._busy_s
        if self._busy:
            busy -= max(0.0, start_window - self._busy[0][0])  # the first batch began before the window
        span = min(BUSY_WINDOW_S, max(now - self.started_at, 1e-3))
        return min(1.0, max(0.0, busy) / span)

    def latency_p95(self, now: float) -> float | None:
        """p95 of the last P95_WINDOW requests completed within P95_MAX_AGE_S: sorting 512 figures
        every P95_REFRESH_S costs the loop tens of microseconds, not the whole window's milliseconds."""
        if now - self._p95_at >= P95_REFRESH_S:
            newest = itertools.islice(reversed(self._latencies), P95_WINDOW)
            recent = sorted(s for t, s in newest if t >= now - P95_MAX_AGE_S)
            self._p95 = percentile(recent, 95)
            self._p95_at = now
        return self._p95

    def snapshot(self, now: float, max_batch_size: int) -> dict[str, Any]:
        latencies = sorted(s for _, s in self._latencies)
        waits = sorted(self._waits)
        batches = list(self._batches)
        recent = [t for t, _ in self._latencies if t >= now - THROUGHPUT_WINDOW_S]
        span = min(THROUGHPUT_WINDOW_S, max(now - self.started_at, 1e-3))
        sizes = sum(b.size for b in batches)
        padded = sum(b.size * b.padded_len for b in batches)
        return {
            "requests": {
                "completed": self.completed,
                "failed": self.failed,
                "rejected_queue_full": self.overflow,
                "cancelled": self.cancelled,
                "expired": self.expired,
            },
            "throughput_rps": round(len(recent) / span, 2),
            "arrival_rate_rps": round(self.arrival_rate(now), 2),
            "latency_ms": _summary(latencies),
            "queue_wait_ms": _summary(waits),
            "inference_ms": _summary(sorted(b.seconds for b in batches)),
            "batches": len(batches),
            "avg_batch_size": round(sizes / len(batches), 3) if batches else None,
            "batch_utilization": round(sizes / len(batches) / max_batch_size, 4) if batches else None,
            "padding_efficiency": round(sum(b.tokens for b in batches) / padded, 4) if padded else None,
            "device_busy": round(self.busy_fraction(now), 4),
            "window": f"last {WINDOW} requests and batches",
        }


def _summary(sorted_seconds: list[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 3)

    mean = sum(sorted_seconds) / len(sorted_seconds) if sorted_seconds else None
    return {
        "p50": ms(percentile(sorted_seconds, 50)),
        "p95": ms(percentile(sorted_seconds, 95)),
        "p99": ms(percentile(sorted_seconds, 99)),
        "mean": ms(mean),
    }

"""When a batch leaves and which waiting requests ride in it: pure functions of the queue.

The engine calls `policy.pick(waiting, signals)` each time the model is free and something waits.
`waiting` is in arrival order (index 0 is the oldest); a `Pick` either takes some indices now or
says when to look again. Nothing here awaits, sleeps or reads a clock, so every rule is table-tested.

- `SingleRequest` (also `enable=false`): the oldest request alone, at once.
- `BatchOptimized`: a batch leaves when max_batch_size requests wait, or when the oldest has waited
  max_wait_time_ms and min_batch_size are there. A partial batch below min_batch_size is held at
  most one more max_wait_time_ms: no request waits for a batch longer than 2 x max_wait_time_ms
  (plus the forward pass in progress when it arrived).
- `Adaptive`: `AdaptiveController` chooses between dispatching at once and holding partial batches
  (like batch_optimized), from queue depth, arrival rate, device load and measured latency, and
  says why. A lone request with nothing else queued always goes at once.

Whichever rule releases a batch, `select()` chooses its riders by estimated cost: see its docstring.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from serving.batching.cost import CPU_SEED, CostModel
from serving.settings import BatchingConfig, Strategy

__all__ = [
    "Adaptive",
    "AdaptiveController",
    "BatchOptimized",
    "BatchPolicy",
    "Mode",
    "Pick",
    "Signals",
    "SingleRequest",
    "Waiting",
    "for_config",
    "select",
]

OVERDUE_FACTOR = 1.3  # a request older than this x the typical queue wait is pulled forward
OVERDUE_FLOOR_S = 0.002


class Waiting(Protocol):
    @property
    def tokens(self) -> int: ...

    @property
    def enqueued_at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Signals:
    """What the engine measured, as of `now` (seconds on the loop clock)."""

    now: float
    arrival_rate: float = 0.0  # requests per second, EWMA
    busy: float = 0.0  # fraction of recent time the model thread computed (or GPU utilisation, if higher)
    latency_p95_s: float | None = None
    typical_wait_s: float = 0.0  # EWMA of queue waits
    last_arrival: float | None = None


@dataclass(frozen=True, slots=True)
class Pick:
    """Indices of `waiting` to run now (arrival order); empty means look again at `wait_until`."""

    take: tuple[int, ...] = ()
    wait_until: float | None = None


class Mode(enum.Enum):
    AT_ONCE = "dispatch_at_once"
    HOLD = "hold_for_batch"


class BatchPolicy(Protocol):
    def pick(self, waiting: Sequence[Waiting], signals: Signals) -> Pick: ...


def select(
    waiting: Sequence[Waiting], *, cap: int, cost: CostModel, now: float, overdue_s: float | None = None
) -> tuple[int, ...]:
    """Choose which waiting requests share the next forward pass.

    Always the oldest, plus every request older than `overdue_s` (up to `cap`): nothing starves and
    old requests are pulled forward. The rest are chosen to minimise the overhead per request of
    the batch, ``(fixed cost + cost of the padding) / batch size``: for each padded length L that the
    batch could have, the extra riders are the waiting requests just shorter than L (least padding),
    added while each lowers that average. So similar lengths travel together, a batch grows while
    the fixed cost is worth sharing, and max_batch_size is only a cap.
    """
    n = len(waiting)
    if n <= 1 or cap <= 1:
        return (0,) if n else ()
    forced = 1
    if overdue_s is not None:
        while forced < min(n, cap) and now - waiting[forced].enqueued_at >= overdue_s:
            forced += 1
    tokens = [w.tokens for w in waiting]
    forced_len = max(tokens[:forced])
    forced_sum = sum(tokens[:forced])
    # Ascending length; among equal lengths the oldest sits last, so it is taken first below.
    rest = sorted(range(forced, n), key=lambda i: (tokens[i], -i))
    if not rest or forced >= cap:
        return tuple(range(forced))

    fixed, per_token = cost.fixed_s, cost.per_token_s
    best: tuple[float, int, int] | None = None  # (overhead per request, top position, count)
    # Candidate padded lengths: forced_len, then each longer distinct length among the rest.
    candidates: list[tuple[int, int]] = []  # (padded_len, last position in `rest` with tokens <= it)
    pos = -1
    while pos + 1 < len(rest) and tokens[rest[pos + 1]] <= forced_len:
        pos += 1
    candidates.append((forced_len, pos))
    for p in range(pos + 1, len(rest)):
        if p + 1 == len(rest) or tokens[rest[p + 1]] != tokens[rest[p]]:
            candidates.append((tokens[rest[p]], p))
    for padded_len, top in candidates:
        waste = padded_len * forced - forced_sum
        count = forced
        floor = (fixed + per_token * waste) / cap
        if best is not None and floor >= best[0]:
            break  # longer padding only adds waste to the forced riders
        taken = 0
        p = top
        while p >= 0 and count < cap:
            extra = padded_len - tokens[rest[p]]
            if per_token * extra * count > fixed + per_token * waste:
                break  # this rider would raise the average overhead; the next ones more so
            waste += extra
            count += 1
            taken += 1
            p -= 1
        overhead = (fixed + per_token * waste) / count
        if best is None or overhead < best[0] - 1e-12:
            best = (overhead, top, taken)
    assert best is not None
    _, top, taken = best
    chosen = list(range(forced)) + [rest[p] for p in range(top, top - taken, -1)]
    return tuple(sorted(chosen))


def _overdue_s(signals: Signals) -> float:
    return max(OVERDUE_FLOOR_S, OVERDUE_FACTOR * signals.typical_wait_s)


@dataclass(frozen=True, slots=True)
class SingleRequest:
    """Every request runs its own forward pass, in arrival order, without waiting."""

    def pick(self, waiting: Sequence[Waiting], signals: Signals) -> Pick:
        return Pick((0,)) if waiting else Pick()


@dataclass(slots=True)
class BatchOptimized:
    """Fill batches up to max_batch_size, waiting at most max_wait_s for the oldest request."""

    max_batch_size: int
    max_wait_s: float
    min_batch_size: int = 1
    cost: CostModel = CPU_SEED

    def pick(self, waiting: Sequence[Waiting], signals: Signals) -> Pick:
        if not waiting:
            return Pick()
        n = len(waiting)
        oldest = waiting[0].enqueued_at
        age = signals.now - oldest
        full = n >= self.max_batch_size
        timed_out = age >= self.max_wait_s and n >= self.min_batch_size
        bound_reached = age >= 2 * self.max_wait_s
        if full or timed_out or bound_reached:
            return Pick(self._take(waiting, signals))
        deadline = self.max_wait_s if n >= self.min_batch_size else 2 * self.max_wait_s
        return Pick(wait_until=oldest + deadline)

    def _take(self, waiting: Sequence[Waiting], signals: Signals) -> tuple[int, ...]:
        return select(
            waiting, cap=self.max_batch_size, cost=self.cost, now=signals.now, overdue_s=_overdue_s(signals)
        )


@dataclass(frozen=True, slots=True)
class AdaptiveController:
    """Chooses between dispatching at once and holding partial batches, and says why."""

    load_threshold: float
    latency_threshold_s: float
    max_wait_s: float

    def decide(self, signals: Signals) -> tuple[Mode, str]:
        p95 = signals.latency_p95_s
        if p95 is not None and p95 > self.latency_threshold_s:
            return Mode.AT_ONCE, (
                f"p95 latency {p95 * 1000:.1f} ms above latency_threshold_ms "
                f"{self.latency_threshold_s * 1000:g}: no waiting for batches to fill"
            )
        if signals.busy < self.load_threshold:
            return Mode.AT_ONCE, (
                f"device load {signals.busy:.2f} below load_threshold {self.load_threshold:g}: "
                "dispatching at once, batches form from what queues during a forward pass"
            )
        expected = signals.arrival_rate * self.max_wait_s
        if expected < 1.0:
            return Mode.AT_ONCE, (
                f"device load {signals.busy:.2f} but only {signals.arrival_rate:.0f} arrivals/s: "
                f"waiting max_wait_time_ms would gather {expected:.2f} more requests"
            )
        return Mode.HOLD, (
            f"device load {signals.busy:.2f} >= load_threshold {self.load_threshold:g}, "
            f"{signals.arrival_rate:.0f} arrivals/s and latency within threshold: holding partial "
            f"batches up to max_wait_time_ms {self.max_wait_s * 1000:g} while requests keep arriving"
        )


@dataclass(slots=True)
class Adaptive:
    """The controller's choice, applied: at once like single_request (but batched), or holding."""

    controller: AdaptiveController
    max_batch_size: int
    min_batch_size: int = 1
    cost: CostModel = CPU_SEED
    mode: Mode = Mode.AT_ONCE
    reason: str = "no traffic yet: dispatching at once"

    def pick(self, waiting: Sequence[Waiting], signals: Signals) -> Pick:
        if not waiting:
            return Pick()
        self.mode, self.reason = self.controller.decide(signals)
        n = len(waiting)
        take = select(
            waiting, cap=self.max_batch_size, cost=self.cost, now=signals.now, overdue_s=_overdue_s(signals)
        )
        if n == 1 or self.mode is Mode.AT_ONCE or n >= self.max_batch_size:
            return Pick(take)
        oldest = waiting[0].enqueued_at
        max_wait = self.controller.max_wait_s
        if signals.now - oldest >= max_wait:
            return Pick(take)
        # Hold while requests keep coming: stop after two silent inter-arrival gaps.
        deadline = oldest + max_wait
        if signals.last_arrival is not None and signals.arrival_rate > 0:
            deadline = min(deadline, signals.last_arrival + 2.0 / signals.arrival_rate)
        if deadline <= signals.now:
            return Pick(take)
        return Pick(wait_until=deadline)


def for_config(config: BatchingConfig, cost: CostModel) -> SingleRequest | BatchOptimized | Adaptive:
    """The policy a config asks for."""
    strategy = config.effective_strategy
    wait_s = config.max_wait_time_ms / 1000.0
    if strategy is Strategy.SINGLE_REQUEST:
        return SingleRequest()
    if strategy is Strategy.BATCH_OPTIMIZED:
        return BatchOptimized(config.max_batch_size, wait_s, config.min_batch_size, cost)
    controller = AdaptiveController(config.load_threshold, config.latency_threshold_ms / 1000.0, wait_s)
    return Adaptive(controller, config.max_batch_size, config.min_batch_size, cost)

"""The bench's figures and how they are read: percentiles, the table, the ratios against the raw model.

Why ratios: absolute numbers drift by 5-8 % within minutes on a shared CPU, but a served figure and a
raw figure measured in the same run drift together. Each served cell is therefore set beside two
in-process references on the same texts: the raw model at batch size 1, and the raw model at the
max batch size on batches of similar-length texts (the texts sorted by token length, then cut),
which is the ceiling a server can reach on this traffic. The goals printed next to the ratios are
the ones Carpool is held to on a 2-core CPU with this traffic.

Pure: dataclasses in, strings and dicts out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Cell",
    "Check",
    "Reference",
    "References",
    "checks",
    "format_checks",
    "format_references",
    "format_table",
    "percentile",
    "results_json",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks, as numpy's default."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile lies in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Reference:
    """The raw model measured in-process: `texts_per_s` over whole passes, `p50_ms` per call."""

    label: str
    batch_size: int
    order: str  # "one by one", "sorted by length" or "arrival order"
    texts_per_s: float
    p50_ms: float
    other_load: float | None = None  # share of the machine other processes used meanwhile


@dataclass(frozen=True)
class References:
    single: Reference
    ceiling: Reference
    arrival: Reference
    device: str
    dtype: str
    threads: int
    tokens_min: int
    tokens_mean: float
    tokens_max: int


@dataclass(frozen=True)
class Cell:
    """One strategy at one concurrency, as served over HTTP."""

    strategy: str
    concurrency: int
    window_s: float
    completed: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    avg_batch_size: float | None = None
    other_load: float | None = None  # share of the machine other processes used meanwhile

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms > 0 else math.nan


@dataclass(frozen=True)
class Check:
    """A ratio read from the run, the goal it is held to (if any) and whether it met it."""

    name: str
    value: float
    unit: str
    goal: str = ""
    ok: bool | None = None


def _find(cells: Sequence[Cell], strategy: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if c.strategy == strategy and c.concurrency == concurrency), None)


def checks(cells: Sequence[Cell], refs: References) -> list[Check]:
    """The ratio lines: each strategy against the references, then the goals between cells."""
    if not cells:
        return []
    top = max(c.concurrency for c in cells)
    low = min(c.concurrency for c in cells)
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    found: list[Check] = []
    for strategy in strategies:
        cell = _find(cells, strategy, top)
        if cell is None:
            continue
        ceiling = cell.throughput / refs.ceiling.texts_per_s
        goal = strategy == "batch_optimized"
        found.append(
            Check(
                f"{strategy} c={top} / sorted ceiling",
                ceiling,
                "x",
                ">= 0.85" if goal else "",
                ceiling >= 0.85 if goal else None,
            )
        )
        single = cell.throughput / refs.single.texts_per_s
        found.append(Check(f"{strategy} c={top} / raw batch 1", single, "x"))
    for strategy in strategies:
        cell = _find(cells, strategy, top)
        if cell is not None:
            found.append(
                Check(f"{strategy} c={top} p99 / p50", cell.tail_ratio, "x", "<= 1.6", cell.tail_ratio <= 1.6)
            )
    adaptive_low = _find(cells, "adaptive", low)
    if adaptive_low is not None:
        gap = adaptive_low.p50_ms - refs.single.p50_ms
        found.append(Check(f"adaptive c={low} p50 - raw batch 1 p50", gap, "ms", "<= 2", gap <= 2.0))
    pairs = (("adaptive", "batch_optimized", 0.95), ("batch_optimized", "single_request", 2.0))
    for numerator, denominator, minimum in pairs:
        over, under = _find(cells, numerator, top), _find(cells, denominator, top)
        if over is not None and under is not None and under.throughput > 0:
            ratio = over.throughput / under.throughput
            found.append(
                Check(f"{numerator} / {denominator} c={top}", ratio, "x", f">= {minimum:g}", ratio >= minimum)
            )
    failed = sum(c.non_2xx + c.errors for c in cells)
    found.append(Check("non-2xx responses and errors, all cells", failed, "", "== 0", failed == 0))
    return found


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def format_references(refs: References) -> str:
    lines = [
        f"Raw model in-process on {refs.device} ({refs.dtype}), {refs.threads} torch threads "
        f"(texts of {refs.tokens_min}/{refs.tokens_mean:.1f}/{refs.tokens_max} tokens min/mean/max):"
    ]
    for ref in (refs.single, refs.ceiling, refs.arrival):
        per_call = "per text " if ref.batch_size == 1 else "per batch"
        other = "" if ref.other_load is None else f"   other {_percent(ref.other_load)}"
        rate = f"{ref.texts_per_s:8.1f} texts/s"
        lines.append(f"  {ref.label:<32} {rate}   p50 {ref.p50_ms:7.2f} ms {per_call}{other}")
    return "\n".join(lines)


def format_table(cells: Sequence[Cell], refs: References) -> str:
    header = (
        f"{'strategy':<16} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'non2xx':>6} {'errors':>6} {'batch':>6} {'x ceil':>7} {'x b1':>6} {'other':>6}"
    )
    rows = [header, "-" * len(header)]
    for c in cells:
        rows.append(
            f"{c.strategy:<16} {c.concurrency:>5} {c.throughput:>8.1f} {_num(c.p50_ms):>8} "
            f"{_num(c.p95_ms):>8} {_num(c.p99_ms):>8} {c.non_2xx:>6} {c.errors:>6} "
            f"{_num(c.avg_batch_size):>6} {c.throughput / refs.ceiling.texts_per_s:>7.2f} "
            f"{c.throughput / refs.single.texts_per_s:>6.2f} {_percent(c.other_load):>6}"
        )
    return "\n".join(rows)


def format_checks(found: Sequence[Check]) -> str:
    lines = []
    for check in found:
        verdict = "" if check.ok is None else ("  ok" if check.ok else "  MISSED")
        goal = f"  (goal {check.goal})" if check.goal else ""
        lines.append(f"  {check.name:<46} {check.value:8.2f} {check.unit:<2}{goal}{verdict}")
    return "\n".join(lines)


def results_json(
    meta: dict[str, Any], refs: References, cells: Sequence[Cell], found: Sequence[Check]
) -> dict[str, Any]:
    """Everything the run measured, for the results file (strict JSON: a missing figure is null)."""
    strict: dict[str, Any] = _strict(
        {
            "meta": meta,
            "references": asdict(refs),
            "cells": [{**asdict(c), "p99_over_p50": c.tail_ratio} for c in cells],
            "checks": [asdict(check) for check in found],
        }
    )
    return strict


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value

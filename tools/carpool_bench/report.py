"""The bench's figures and how they are read: percentiles, the table, the ratios against the raw model.

Why ratios: absolute numbers drift on a shared CPU (by up to 25 % within a minute), but a served
figure and a raw figure measured seconds apart drift together. Each served cell is therefore set
beside two in-process references on the same texts, as they stood when the cell ran (`refs_at`):
the raw model at batch size 1, and the raw model at the max batch size on batches of similar-length
texts (the texts sorted by token length, then cut), which is the ceiling a server can reach on this
traffic. The grid runs in rounds; a row of the table is the median of its cell over the rounds,
with the spread (lowest to highest) beside it, and each ratio line is the median of that ratio
computed round by round. The goals printed next to the ratios are the ones Carpool is held to on a
2-core CPU with this traffic.

Pure: dataclasses in, strings and dicts out.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from serving import percentiles

__all__ = [
    "Cell",
    "Check",
    "Goal",
    "Reference",
    "References",
    "RefsAt",
    "Row",
    "Spread",
    "checks",
    "format_checks",
    "format_references",
    "format_spread",
    "format_table",
    "percentile",
    "results_json",
    "rows",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The pod's percentile (`serving.percentiles`: nearest rank) of unsorted figures; nan if none."""
    found = percentiles.percentile(sorted(values), q)
    return math.nan if found is None else found


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
    """One measurement of the three references; `at_s`: its middle, in seconds since the bench began."""

    single: Reference
    ceiling: Reference
    arrival: Reference
    device: str
    dtype: str
    threads: int
    tokens_min: int
    tokens_mean: float
    tokens_max: int
    at_s: float = 0.0


RefsAt = Callable[["Cell"], References]
"""The references as they stood when a cell ran (see `rounds.references_at`)."""


@dataclass(frozen=True)
class Cell:
    """One strategy at one concurrency in one round, as served over HTTP; `at_s`: the middle of its
    measured window, in seconds since the bench began."""

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
    round: int = 1
    at_s: float = 0.0
    # concurrency 1 only: blocks of served requests alternated with blocks of the raw batch-1 call
    # on the same texts (see runner): the p50 of each side, measured within the same seconds
    paired_p50_ms: float | None = None
    paired_raw_p50_ms: float | None = None
    # the top concurrency only: the raw model fed, just after the cell, from a queue that always
    # holds `concurrency` texts (the most a closed loop of that many clients keeps waiting), its
    # riders chosen by the pod's rule: texts/s and texts per forward pass (see runner)
    fed_texts_per_s: float | None = None
    fed_batch_size: float | None = None

    @property
    def paired_gap_ms(self) -> float | None:
        """Served p50 minus raw batch-1 p50, from the alternated blocks."""
        if self.paired_p50_ms is None or self.paired_raw_p50_ms is None:
            return None
        return self.paired_p50_ms - self.paired_raw_p50_ms

    @property
    def fed_ratio(self) -> float | None:
        """Throughput over the raw model fed from a full queue of the cell's concurrency."""
        return None if self.fed_texts_per_s is None else _ratio(self.throughput, self.fed_texts_per_s)

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms > 0 else math.nan


@dataclass(frozen=True)
class Spread:
    """A figure over the rounds: the median, and the lowest and highest round."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Over the measured values (NaN, a figure a round could not measure, is left out)."""
        known = [value for value in values if not math.isnan(value)]
        if not known:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(known), min(known), max(known))


@dataclass(frozen=True)
class Row:
    """One strategy at one concurrency over every round: a line of the table."""

    strategy: str
    concurrency: int
    rounds: int
    throughput: Spread
    p50_ms: Spread
    p95_ms: Spread
    p99_ms: Spread
    tail_ratio: Spread
    ceiling_ratio: Spread  # throughput / the sorted ceiling as it stood when each round's cell ran
    single_ratio: Spread  # throughput / raw batch 1, likewise
    completed: int  # summed over the rounds, like non_2xx and errors
    non_2xx: int
    errors: int
    avg_batch_size: float | None  # median over the rounds that measured it
    other_load: float | None  # the highest over the rounds


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _over(cell: Cell, ref: Reference) -> float:
    """The cell's throughput over a reference's."""
    return _ratio(cell.throughput, ref.texts_per_s)


def _optional_median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def rows(cells: Sequence[Cell], refs_at: RefsAt) -> list[Row]:
    """The table's rows: the cells grouped by strategy and concurrency, in the order first measured."""
    groups: dict[tuple[str, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.strategy, cell.concurrency), []).append(cell)
    found = []
    for (strategy, concurrency), group in groups.items():
        others = [c.other_load for c in group if c.other_load is not None]
        found.append(
            Row(
                strategy=strategy,
                concurrency=concurrency,
                rounds=len(group),
                throughput=Spread.of([c.throughput for c in group]),
                p50_ms=Spread.of([c.p50_ms for c in group]),
                p95_ms=Spread.of([c.p95_ms for c in group]),
                p99_ms=Spread.of([c.p99_ms for c in group]),
                tail_ratio=Spread.of([c.tail_ratio for c in group]),
                ceiling_ratio=Spread.of([_over(c, refs_at(c).ceiling) for c in group]),
                single_ratio=Spread.of([_over(c, refs_at(c).single) for c in group]),
                completed=sum(c.completed for c in group),
                non_2xx=sum(c.non_2xx for c in group),
                errors=sum(c.errors for c in group),
                avg_batch_size=_optional_median([c.avg_batch_size for c in group]),
                other_load=max(others) if others else None,
            )
        )
    return found


@dataclass(frozen=True)
class Goal:
    """What a ratio is held to: `op` one of >=, <=, ==, and the bound."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        compare = {">=": operator.ge, "<=": operator.le, "==": operator.eq}[self.op]
        return bool(compare(value, self.bound))

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True)
class Check:
    """A ratio read from the run (the median over the rounds, with the lowest and highest round),
    the goal it is held to (if any) and whether the median met it."""

    name: str
    value: float
    unit: str
    goal: str = ""
    ok: bool | None = None
    low: float | None = None
    high: float | None = None


def _find(cells: Sequence[Cell], strategy: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if c.strategy == strategy and c.concurrency == concurrency), None)


_Reading = tuple[str, float, str, Goal | None]


def _round_readings(cells: Sequence[Cell], refs_at: RefsAt, top: int) -> list[_Reading]:
    """The ratios of one round's cells, each against the references as they stood when it ran."""
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    found: list[_Reading] = []
    for strategy in strategies:
        cell = _find(cells, strategy, top)
        if cell is None:
            continue
        goal = Goal(">=", 0.85) if strategy == "batch_optimized" else None
        refs = refs_at(cell)
        found.append((f"{strategy} c={top} / sorted ceiling", _over(cell, refs.ceiling), "x", goal))
        found.append((f"{strategy} c={top} / raw batch 1", _over(cell, refs.single), "x", None))
        if cell.fed_texts_per_s is not None:
            # The bound a queue of `top` sets: the riders come from at most `top` waiting texts,
            # not from all of them sorted. Measured seconds after the cell.
            fed, bound = f"raw fed from a queue of {top}", cell.fed_texts_per_s
            found.append((f"{fed} / sorted ceiling", _ratio(bound, refs.ceiling.texts_per_s), "x", None))
            found.append((f"{strategy} c={top} / {fed}", _ratio(cell.throughput, bound), "x", None))
    for strategy in strategies:
        cell = _find(cells, strategy, top)
        if cell is not None:
            found.append((f"{strategy} c={top} p99 / p50", cell.tail_ratio, "x", Goal("<=", 1.6)))
    one_client = _find(cells, "adaptive", 1)
    if one_client is not None:
        # One client's overhead over the raw call, read only at concurrency 1: with more clients the
        # p50 holds queueing, not overhead. The goal reads the alternated blocks when the cell has
        # them: the bracketing references lie seconds away, and the drift between them is as large
        # as the gap.
        gap = one_client.p50_ms - refs_at(one_client).single.p50_ms
        paired = one_client.paired_gap_ms
        name = "adaptive c=1 p50 - raw batch 1 p50"
        found.append((name, gap, "ms", Goal("<=", 2.0) if paired is None else None))
        if paired is not None:
            found.append((f"{name}, paired", paired, "ms", Goal("<=", 2.0)))
    pairs = (("adaptive", "batch_optimized", 0.95), ("batch_optimized", "single_request", 2.0))
    for numerator, denominator, minimum in pairs:
        over, under = _find(cells, numerator, top), _find(cells, denominator, top)
        if over is not None and under is not None and under.throughput > 0:
            # each over the ceiling of its own moment, so drift between the two cells cancels
            ratio = _ratio(_over(over, refs_at(over).ceiling), _over(under, refs_at(under).ceiling))
            found.append((f"{numerator} / {denominator} c={top}", ratio, "x", Goal(">=", minimum)))
    return found


def checks(cells: Sequence[Cell], refs_at: RefsAt) -> list[Check]:
    """The ratio lines: each strategy against the references, then the goals between cells; each
    computed round by round and reported as the median over the rounds, with its spread."""
    if not cells:
        return []
    top = max(c.concurrency for c in cells)
    readings: dict[str, list[float]] = {}
    kinds: dict[str, tuple[str, Goal | None]] = {}
    for number in sorted({c.round for c in cells}):
        in_round = [c for c in cells if c.round == number]
        for name, value, unit, goal in _round_readings(in_round, refs_at, top):
            readings.setdefault(name, []).append(value)
            kinds[name] = (unit, goal)
    found = []
    for name, values in readings.items():
        unit, goal = kinds[name]
        spread = Spread.of(values)
        ok = None if goal is None or math.isnan(spread.median) else goal.met(spread.median)
        found.append(Check(name, spread.median, unit, str(goal or ""), ok, spread.low, spread.high))
    failed = sum(c.non_2xx + c.errors for c in cells)
    found.append(Check("non-2xx responses and errors, all cells", failed, "", "== 0", failed == 0))
    return found


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def format_references(refs: References, measured: int = 1) -> str:
    """`refs` (the median of `measured` measurements when there were several)."""
    times = "" if measured == 1 else f", median of {measured} measurements between cells"
    lines = [
        f"Raw model in-process on {refs.device} ({refs.dtype}), {refs.threads} torch threads "
        f"(texts of {refs.tokens_min}/{refs.tokens_mean:.1f}/{refs.tokens_max} tokens min/mean/max){times}:"
    ]
    width = max(32, *(len(ref.label) for ref in (refs.single, refs.ceiling, refs.arrival)))
    for ref in (refs.single, refs.ceiling, refs.arrival):
        per_call = "per text " if ref.batch_size == 1 else "per batch"
        other = "" if ref.other_load is None else f"   other {_percent(ref.other_load)}"
        rate = f"{ref.texts_per_s:8.1f} texts/s"
        lines.append(f"  {ref.label:<{width}} {rate}   p50 {ref.p50_ms:7.2f} ms {per_call}{other}")
    return "\n".join(lines)


def format_table(table: Sequence[Row]) -> str:
    """One line per row, with the median over the rounds of each figure."""
    header = (
        f"{'strategy':<16} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'p99/50':>6} {'non2xx':>6} {'errors':>6} {'batch':>6} {'x ceil':>7} {'x b1':>6} {'other':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(
            f"{r.strategy:<16} {r.concurrency:>5} {_num(r.throughput.median):>8} {_num(r.p50_ms.median):>8} "
            f"{_num(r.p95_ms.median):>8} {_num(r.p99_ms.median):>8} {_num(r.tail_ratio.median, 2):>6} "
            f"{r.non_2xx:>6} {r.errors:>6} {_num(r.avg_batch_size):>6} {_num(r.ceiling_ratio.median, 2):>7} "
            f"{_num(r.single_ratio.median, 2):>6} {_percent(r.other_load):>6}"
        )
    return "\n".join(lines)


def _range(spread: Spread, digits: int) -> str:
    return f"{_num(spread.low, digits)}-{_num(spread.high, digits)}"


def format_spread(table: Sequence[Row]) -> str:
    """One line per row: the lowest and highest round of the figures that drift."""
    header = (
        f"{'strategy':<16} {'conc':>5} {'req/s':>15} {'p50 ms':>15} {'p99 ms':>15} "
        f"{'p99/50':>11} {'x ceil':>11} {'x b1':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(
            f"{r.strategy:<16} {r.concurrency:>5} {_range(r.throughput, 1):>15} {_range(r.p50_ms, 1):>15} "
            f"{_range(r.p99_ms, 1):>15} {_range(r.tail_ratio, 2):>11} {_range(r.ceiling_ratio, 2):>11} "
            f"{_range(r.single_ratio, 2):>11}"
        )
    return "\n".join(lines)


def format_checks(found: Sequence[Check]) -> str:
    width = max((len(check.name) for check in found), default=0)
    lines = []
    for check in found:
        verdict = "" if check.ok is None else ("  ok" if check.ok else "  MISSED")
        goal = f"  (goal {check.goal})" if check.goal else ""
        spread = ""
        if check.low is not None and check.high is not None and check.low < check.high:
            spread = f"  [{_num(check.low, 2)}-{_num(check.high, 2)}]"
        value = f"{_num(check.value, 2):>8} {check.unit:<2}"
        lines.append(f"  {check.name:<{width}} {value}{spread}{goal}{verdict}")
    return "\n".join(lines)


def _spread_json(spread: Spread) -> list[float]:
    return [spread.low, spread.high]


def results_json(
    meta: dict[str, Any],
    refs: References,
    measured: Sequence[References],
    table: Sequence[Row],
    cells: Sequence[Cell],
    refs_at: RefsAt,
    found: Sequence[Check],
) -> dict[str, Any]:
    """Everything the run measured, for the results file (strict JSON: a missing figure is null).

    `references` and `cells` hold the medians (the table); `reference_runs` and `cell_runs` every
    single measurement, each cell with the reference figures it was set against."""
    summary = [
        {
            "strategy": r.strategy,
            "concurrency": r.concurrency,
            "rounds": r.rounds,
            "completed": r.completed,
            "throughput": r.throughput.median,
            "p50_ms": r.p50_ms.median,
            "p95_ms": r.p95_ms.median,
            "p99_ms": r.p99_ms.median,
            "p99_over_p50": r.tail_ratio.median,
            "ceiling_ratio": r.ceiling_ratio.median,
            "single_ratio": r.single_ratio.median,
            "non_2xx": r.non_2xx,
            "errors": r.errors,
            "avg_batch_size": r.avg_batch_size,
            "other_load": r.other_load,
            "spread": {
                "throughput": _spread_json(r.throughput),
                "p50_ms": _spread_json(r.p50_ms),
                "p95_ms": _spread_json(r.p95_ms),
                "p99_ms": _spread_json(r.p99_ms),
                "p99_over_p50": _spread_json(r.tail_ratio),
                "ceiling_ratio": _spread_json(r.ceiling_ratio),
                "single_ratio": _spread_json(r.single_ratio),
            },
        }
        for r in table
    ]
    runs = []
    for cell in cells:
        at = refs_at(cell)
        runs.append(
            asdict(cell)
            | {
                "p99_over_p50": cell.tail_ratio,
                "ceiling_texts_per_s": at.ceiling.texts_per_s,
                "single_texts_per_s": at.single.texts_per_s,
                "ceiling_ratio": _ratio(cell.throughput, at.ceiling.texts_per_s),
                "single_ratio": _ratio(cell.throughput, at.single.texts_per_s),
                "fed_ratio": cell.fed_ratio,
            }
        )
    strict: dict[str, Any] = _strict(
        {
            "meta": meta,
            "references": asdict(refs),
            "cells": summary,
            "checks": [asdict(check) for check in found],
            "reference_runs": [asdict(one) for one in measured],
            "cell_runs": runs,
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

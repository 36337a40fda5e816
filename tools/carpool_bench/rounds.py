"""Rounds of cells with the raw references measured between them: figures that survive drift.

Why: this machine's speed moves by up to 25 % within a minute, so a reference measured minutes
before a cell gives a ratio that swings by as much. The bench therefore runs the whole grid of
cells several times (rounds) and measures the references again every few cells, so that each cell
lies between two references measured seconds before and after it. A cell is set against the
references as they stood at its middle: the straight line between the two that bracket it (the
nearest one alone before the first or after the last). Odd rounds run the grid forwards, even
rounds backwards, so no strategy is always measured at the same point of a round.

Pure: the schedule is a list of steps, the references a list of timed measurements.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from carpool_bench import report

__all__ = ["Step", "median_references", "references_at", "schedule"]


@dataclass(frozen=True)
class Step:
    """A measurement of the references (`cell` False), or one cell of one round."""

    cell: bool
    round: int = 0
    strategy: str = ""
    concurrency: int = 0


REFERENCE = Step(cell=False)


def schedule(
    strategies: Sequence[str], levels: Sequence[int], rounds: int, reference_every: int
) -> list[Step]:
    """The run in order: the references first, again after every `reference_every` cells, and last."""
    if rounds < 1 or reference_every < 1:
        raise ValueError(f"need rounds >= 1 and reference_every >= 1, got {rounds} and {reference_every}")
    grid = [(strategy, level) for strategy in strategies for level in levels]
    steps = [REFERENCE]
    since = 0
    for number in range(1, rounds + 1):
        for strategy, level in grid if number % 2 else reversed(grid):
            steps.append(Step(True, number, strategy, level))
            since += 1
            if since == reference_every:
                steps.append(REFERENCE)
                since = 0
    if steps[-1] != REFERENCE:
        steps.append(REFERENCE)
    return steps


def _between(before: report.Reference, after: report.Reference, weight: float) -> report.Reference:
    return dataclasses.replace(
        before,
        texts_per_s=before.texts_per_s + (after.texts_per_s - before.texts_per_s) * weight,
        p50_ms=before.p50_ms + (after.p50_ms - before.p50_ms) * weight,
    )


def references_at(measured: Sequence[report.References], at_s: float) -> report.References:
    """The references as they stood at `at_s`: interpolated between the measurements either side of
    it, or the nearest measurement when `at_s` lies outside them."""
    if not measured:
        raise ValueError("no reference was measured")
    ordered = sorted(measured, key=lambda refs: refs.at_s)
    if at_s <= ordered[0].at_s:
        return ordered[0]
    for before, after in itertools.pairwise(ordered):
        if before.at_s <= at_s <= after.at_s:
            span = after.at_s - before.at_s
            weight = (at_s - before.at_s) / span if span > 0 else 0.0
            return dataclasses.replace(
                before,
                single=_between(before.single, after.single, weight),
                ceiling=_between(before.ceiling, after.ceiling, weight),
                arrival=_between(before.arrival, after.arrival, weight),
                at_s=at_s,
            )
    return ordered[-1]


def _median_reference(found: Sequence[report.Reference]) -> report.Reference:
    others = [ref.other_load for ref in found if ref.other_load is not None]
    return dataclasses.replace(
        found[0],
        texts_per_s=statistics.median(ref.texts_per_s for ref in found),
        p50_ms=statistics.median(ref.p50_ms for ref in found),
        other_load=max(others) if others else None,
    )


def median_references(measured: Sequence[report.References]) -> report.References:
    """Each reference's median over the measurements (other load: the highest), for the summary."""
    if not measured:
        raise ValueError("no reference was measured")
    return dataclasses.replace(
        measured[0],
        single=_median_reference([refs.single for refs in measured]),
        ceiling=_median_reference([refs.ceiling for refs in measured]),
        arrival=_median_reference([refs.arrival for refs in measured]),
        at_s=statistics.median(refs.at_s for refs in measured),
    )

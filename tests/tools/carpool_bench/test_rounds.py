"""How the bench schedules rounds of cells between measurements of the references, and reads each
cell against the references of its own moment."""

from __future__ import annotations

import dataclasses

import pytest

from carpool_bench import report, rounds

pytestmark = pytest.mark.unit


def _refs(
    at_s: float, ceiling: float, single: float, p50: float = 8.0, other: float | None = None
) -> report.References:
    return report.References(
        single=report.Reference("raw batch 1", 1, "one by one", single, p50, other),
        ceiling=report.Reference(
            "raw batch 32, sorted (ceiling)", 32, "sorted by length", ceiling, 150.0, other
        ),
        arrival=report.Reference("raw batch 32, arrival order", 32, "arrival order", ceiling * 0.7, 200.0),
        device="cpu",
        dtype="float32",
        threads=2,
        tokens_min=11,
        tokens_mean=35.6,
        tokens_max=59,
        at_s=at_s,
    )


def _plan(steps: list[rounds.Step]) -> list[str]:
    return ["R" if not step.cell else f"{step.round}{step.strategy}{step.concurrency}" for step in steps]


def test_references_bracket_every_few_cells_and_even_rounds_run_backwards() -> None:
    steps = rounds.schedule(["a", "b"], [1, 64], rounds=2, reference_every=3)
    assert _plan(steps) == ["R", "1a1", "1a64", "1b1", "R", "1b64", "2b64", "2b1", "R", "2a64", "2a1", "R"]


def test_one_round_with_a_reference_after_every_cell() -> None:
    steps = rounds.schedule(["adaptive"], [1, 8], rounds=1, reference_every=1)
    assert _plan(steps) == ["R", "1adaptive1", "R", "1adaptive8", "R"]


def test_every_cell_of_the_grid_runs_once_per_round() -> None:
    steps = rounds.schedule(["a", "b", "c"], [1, 8, 64], rounds=3, reference_every=3)
    cells = [(s.round, s.strategy, s.concurrency) for s in steps if s.cell]
    assert len(cells) == len(set(cells)) == 27
    assert sum(not s.cell for s in steps) == 10  # before, after every 3 cells: 9 groups + 1


@pytest.mark.parametrize(("count", "every"), [(0, 3), (3, 0)])
def test_a_schedule_needs_a_round_and_a_reference_interval(count: int, every: int) -> None:
    with pytest.raises(ValueError, match=f"got {count} and {every}"):
        rounds.schedule(["a"], [1], rounds=count, reference_every=every)


MEASURED = [_refs(10.0, 200.0, 100.0, p50=8.0), _refs(30.0, 100.0, 50.0, p50=16.0), _refs(50.0, 150.0, 80.0)]


@pytest.mark.parametrize(
    ("at_s", "ceiling", "single", "p50"),
    [
        pytest.param(10.0, 200.0, 100.0, 8.0, id="at-a-measurement"),
        pytest.param(15.0, 175.0, 87.5, 10.0, id="a-quarter-on"),
        pytest.param(20.0, 150.0, 75.0, 12.0, id="half-way"),
        pytest.param(40.0, 125.0, 65.0, 12.0, id="second-gap"),
        pytest.param(2.0, 200.0, 100.0, 8.0, id="before-the-first"),
        pytest.param(70.0, 150.0, 80.0, 8.0, id="after-the-last"),
    ],
)
def test_a_cell_is_read_against_the_references_either_side_of_it(
    at_s: float, ceiling: float, single: float, p50: float
) -> None:
    found = rounds.references_at(list(reversed(MEASURED)), at_s)  # the order they come in does not matter
    assert found.ceiling.texts_per_s == pytest.approx(ceiling)
    assert found.single.texts_per_s == pytest.approx(single)
    assert found.single.p50_ms == pytest.approx(p50)
    assert found.ceiling.label == "raw batch 32, sorted (ceiling)" and found.device == "cpu"


def test_references_measured_at_one_moment_are_not_divided_by_zero() -> None:
    twice = [_refs(10.0, 200.0, 100.0), _refs(10.0, 100.0, 50.0)]
    assert rounds.references_at(twice, 10.0).ceiling.texts_per_s in (200.0, 100.0)
    with pytest.raises(ValueError, match="no reference"):
        rounds.references_at([], 1.0)


def test_the_summary_holds_each_reference_s_median_and_the_worst_other_load() -> None:
    measured = [
        dataclasses.replace(MEASURED[0], single=dataclasses.replace(MEASURED[0].single, other_load=0.3))
    ]
    measured += MEASURED[1:]
    summary = rounds.median_references(measured)
    assert summary.ceiling.texts_per_s == 150.0 and summary.single.texts_per_s == 80.0
    assert summary.single.p50_ms == 8.0 and summary.arrival.texts_per_s == pytest.approx(105.0)
    assert summary.single.other_load == 0.3 and summary.ceiling.other_load is None
    assert summary.tokens_mean == 35.6 and summary.at_s == 30.0

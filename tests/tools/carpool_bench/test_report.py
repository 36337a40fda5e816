"""How the bench reads its figures: percentiles, medians and spreads over rounds, ratios and goals
against the references of each cell's moment, the tables, the results file, and the server
readings it relies on (batch counters from /metrics, /models/status entries)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from carpool_bench import command, reference, report, server
from serving import percentiles

pytestmark = pytest.mark.unit


def _ref(label: str, batch: int, rate: float, p50: float) -> report.Reference:
    return report.Reference(label, batch, "order", rate, p50)


REFS = report.References(
    single=_ref("raw batch 1", 1, 100.0, 8.0),
    ceiling=_ref("raw batch 32, sorted (ceiling)", 32, 200.0, 150.0),
    arrival=_ref("raw batch 32, arrival order", 32, 140.0, 220.0),
    device="cpu",
    dtype="float32",
    threads=2,
    tokens_min=11,
    tokens_mean=35.6,
    tokens_max=59,
)


def _cell(
    strategy: str, concurrency: int, throughput: float, p50: float, p99: float, **kw: float
) -> report.Cell:
    return report.Cell(
        strategy=strategy,
        concurrency=concurrency,
        window_s=10.0,
        completed=int(throughput * 10),
        throughput=throughput,
        p50_ms=p50,
        p95_ms=(p50 + p99) / 2,
        p99_ms=p99,
        non_2xx=int(kw.get("non_2xx", 0)),
        errors=int(kw.get("errors", 0)),
        avg_batch_size=kw.get("batch"),
        round=int(kw.get("round", 1)),
        at_s=kw.get("at_s", 0.0),
        paired_p50_ms=kw.get("paired"),
        paired_raw_p50_ms=kw.get("paired_raw"),
        fed_texts_per_s=kw.get("fed"),
        fed_batch_size=kw.get("fed_batch"),
    )


def _same(_: report.Cell) -> report.References:
    return REFS


GRID = [
    _cell("single_request", 1, 110.0, 9.0, 11.0),
    _cell("single_request", 64, 100.0, 600.0, 700.0),
    _cell("batch_optimized", 1, 105.0, 9.5, 12.0),
    _cell("batch_optimized", 64, 180.0, 330.0, 500.0),
    _cell("adaptive", 1, 110.0, 9.5, 11.0),
    _cell("adaptive", 64, 176.0, 340.0, 520.0, non_2xx=1),
]


@pytest.mark.parametrize(
    ("q", "expected"), [(0, 0.1), (1, 0.1), (25, 0.2), (50, 0.4), (95, 1.5), (99, 1.5), (100, 1.5)]
)
def test_percentile_is_the_pods_nearest_rank_of_unsorted_figures(q: float, expected: float) -> None:
    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 1.5]
    assert report.percentile(values, q) == expected
    assert report.percentile(values, q) == percentiles.percentile(sorted(values), q)


def test_percentile_of_nothing_is_nan_and_out_of_range_is_refused() -> None:
    assert math.isnan(report.percentile([], 50))
    with pytest.raises(ValueError, match="got 101"):
        report.percentile([1.0], 101)


def test_checks_read_the_ratios_and_goals_at_the_top_and_lowest_concurrency() -> None:
    found = {check.name: check for check in report.checks(GRID, _same)}
    ceiling = found["batch_optimized c=64 / sorted ceiling"]
    assert ceiling.value == pytest.approx(0.9) and ceiling.ok is True
    assert found["single_request c=64 / sorted ceiling"].ok is None  # informative, no goal
    assert found["adaptive c=64 / raw batch 1"].value == pytest.approx(1.76)
    assert found["batch_optimized c=64 p99 / p50"].value == pytest.approx(500 / 330)
    assert found["batch_optimized c=64 p99 / p50"].ok is True
    assert found["adaptive c=64 p99 / p50"].ok is True
    assert found["adaptive c=1 p50 - raw batch 1 p50"].value == pytest.approx(1.5)
    assert found["adaptive c=1 p50 - raw batch 1 p50"].ok is True
    assert found["adaptive / batch_optimized c=64"].value == pytest.approx(176 / 180)
    assert found["adaptive / batch_optimized c=64"].ok is True
    assert found["batch_optimized / single_request c=64"].value == pytest.approx(1.8)
    assert found["batch_optimized / single_request c=64"].ok is False
    failures = found["non-2xx responses and errors, all cells"]
    assert failures.value == 1 and failures.ok is False


def test_the_concurrency_1_goal_reads_the_alternated_pairs_when_there_are_some() -> None:
    """Against references seconds away the gap is 4.5 ms (drift); alternated with the raw call on
    the same texts, 1.2 ms: the goal reads the pairs, and the bracketed figure stays informative."""
    grid = [_cell("adaptive", 1, 90.0, 12.5, 16.0, paired=11.2, paired_raw=10.0)]
    found = {check.name: check for check in report.checks(grid, _same)}
    assert found["adaptive c=1 p50 - raw batch 1 p50"].value == pytest.approx(4.5)
    assert found["adaptive c=1 p50 - raw batch 1 p50"].ok is None
    paired = found["adaptive c=1 p50 - raw batch 1 p50, paired"]
    assert paired.value == pytest.approx(1.2) and paired.goal == "<= 2" and paired.ok is True


def test_without_concurrency_1_there_is_no_one_client_gap_to_hold_to_2_ms() -> None:
    """A grid of 8 and 64 clients: the p50 at 8 holds queueing, so no gap line and no goal."""
    grid = [_cell("adaptive", 8, 150.0, 50.0, 70.0), _cell("adaptive", 64, 176.0, 340.0, 520.0)]
    found = {check.name: check for check in report.checks(grid, _same)}
    assert not [name for name in found if "raw batch 1 p50" in name]
    assert found["adaptive c=64 p99 / p50"].ok is True


def test_a_top_cell_fed_bound_reads_against_the_ceiling_and_the_cell_over_it() -> None:
    """The raw model fed from a full queue of 64 ran at 180 texts/s (0.9x the 200 of the sorted
    ceiling); the cell served 153, so 0.85x of the ceiling is 0.85 / 0.9 of what its queue allowed.
    Over two strategies the bound line is the median of both feeds; a cell without one adds none."""
    grid = [
        _cell("batch_optimized", 64, 153.0, 330.0, 500.0, fed=180.0, fed_batch=8.4),
        _cell("adaptive", 64, 150.0, 330.0, 500.0, fed=170.0, fed_batch=8.1),
        _cell("single_request", 64, 100.0, 600.0, 700.0),
    ]
    found = {check.name: check for check in report.checks(grid, _same)}
    assert found["raw fed from a queue of 64 / sorted ceiling"].value == pytest.approx(0.875)
    assert found["raw fed from a queue of 64 / sorted ceiling"].low == pytest.approx(0.85)
    assert found["batch_optimized c=64 / raw fed from a queue of 64"].value == pytest.approx(0.85)
    assert found["adaptive c=64 / raw fed from a queue of 64"].value == pytest.approx(150 / 170)
    assert "single_request c=64 / raw fed from a queue of 64" not in found
    assert grid[0].fed_ratio == pytest.approx(0.85) and grid[2].fed_ratio is None
    assert all("raw fed" not in check.name for check in report.checks(GRID, _same))
    lines = report.format_checks(list(found.values())).splitlines()
    assert len({line.index(" x ") for line in lines if " x " in line}) == 1  # the longest name fits


def test_checks_skip_what_the_grid_did_not_measure() -> None:
    only = [_cell("batch_optimized", 8, 150.0, 50.0, 90.0)]
    names = [check.name for check in report.checks(only, _same)]
    assert names == [
        "batch_optimized c=8 / sorted ceiling",
        "batch_optimized c=8 / raw batch 1",
        "batch_optimized c=8 p99 / p50",
        "non-2xx responses and errors, all cells",
    ]
    assert report.checks([], _same) == []


def _drifting(cell: report.Cell) -> report.References:
    """References whose speed halves from round 1 to round 2, as on a machine that got busy."""
    scale = 0.5 if cell.round == 2 else 1.0
    return dataclasses.replace(
        REFS,
        single=dataclasses.replace(REFS.single, texts_per_s=100.0 * scale, p50_ms=8.0 / scale),
        ceiling=dataclasses.replace(REFS.ceiling, texts_per_s=200.0 * scale),
    )


ROUNDS = [
    _cell("batch_optimized", 64, 180.0, 330.0, 500.0, round=1),
    _cell("adaptive", 64, 190.0, 340.0, 520.0, round=1),
    _cell("adaptive", 1, 110.0, 9.5, 11.0, round=1, errors=1),
    _cell("adaptive", 1, 60.0, 17.0, 20.0, round=2),
    _cell("adaptive", 64, 96.0, 360.0, 540.0, round=2, non_2xx=2),
    _cell("batch_optimized", 64, 88.0, 330.0, 800.0, round=2),
    _cell("batch_optimized", 64, 175.0, 320.0, 470.0, round=3),
    _cell("adaptive", 64, 170.0, 330.0, 500.0, round=3),
    _cell("adaptive", 1, 108.0, 9.0, 10.0, round=3),
]


def test_checks_are_read_round_by_round_against_each_cell_s_references_then_the_median() -> None:
    """Round 2 ran at half speed, its references too: its ratios agree with the other rounds'."""
    found = {check.name: check for check in report.checks(ROUNDS, _drifting)}
    ceiling = found["batch_optimized c=64 / sorted ceiling"]
    assert (ceiling.low, ceiling.value, ceiling.high) == pytest.approx((0.875, 0.88, 0.9))
    assert ceiling.ok is True
    gap = found["adaptive c=1 p50 - raw batch 1 p50"]  # 1.5, 1.0 (17 - 16), 1.0
    assert (gap.low, gap.value, gap.high) == pytest.approx((1.0, 1.0, 1.5))
    pair = found["adaptive / batch_optimized c=64"]  # 190/180, 96/88, 170/175
    assert pair.value == pytest.approx(190 / 180) and pair.low == pytest.approx(170 / 175)
    tail = found["batch_optimized c=64 p99 / p50"]  # the median holds though round 2's tail missed
    assert tail.value == pytest.approx(500 / 330) and tail.high == pytest.approx(800 / 330)
    assert tail.ok is True
    failures = found["non-2xx responses and errors, all cells"]
    assert failures.value == 3 and failures.ok is False  # a sum over every round, not a median


def test_rows_hold_the_median_and_spread_of_each_cell_over_the_rounds() -> None:
    table = report.rows(ROUNDS, _drifting)
    assert [(r.strategy, r.concurrency, r.rounds) for r in table] == [
        ("batch_optimized", 64, 3),
        ("adaptive", 64, 3),
        ("adaptive", 1, 3),
    ]
    adaptive = table[1]
    assert adaptive.throughput == report.Spread(170.0, 96.0, 190.0)
    assert adaptive.p99_ms == report.Spread(520.0, 500.0, 540.0)
    assert adaptive.ceiling_ratio == report.Spread(pytest.approx(0.95), 0.85, 0.96)
    assert adaptive.single_ratio.median == pytest.approx(1.9)
    assert (adaptive.non_2xx, adaptive.errors, table[2].errors) == (2, 0, 1)
    assert adaptive.completed == 1700 + 960 + 1900
    assert adaptive.avg_batch_size is None and adaptive.other_load is None  # not measured


def test_a_spread_leaves_out_what_a_round_could_not_measure() -> None:
    assert report.Spread.of([3.0, math.nan, 1.0, 2.0]) == report.Spread(2.0, 1.0, 3.0)
    assert math.isnan(report.Spread.of([math.nan]).median)
    table = report.rows(
        [
            _cell("adaptive", 8, 10.0, 1.0, 2.0, batch=4.0, round=1),
            _cell("adaptive", 8, 20.0, 1.0, 2.0, round=2),
            dataclasses.replace(_cell("adaptive", 8, 30.0, 1.0, 2.0, round=3), other_load=0.3),
        ],
        _same,
    )
    assert table[0].avg_batch_size == 4.0 and table[0].other_load == 0.3  # the worst round


def test_table_spread_and_checks_print_one_line_per_row_and_ratio() -> None:
    grid = [*GRID[:3], dataclasses.replace(GRID[3], avg_batch_size=14.25, other_load=0.42), *GRID[4:]]
    table = report.format_table(report.rows(grid, _same)).splitlines()
    assert table[0].split()[:4] == ["strategy", "conc", "req/s", "p50"]
    assert len(table) == 2 + len(GRID)
    assert table[5].split() == [
        "batch_optimized", "64", "180.0", "330.0", "415.0", "500.0", "1.52", "0", "0", "14.2", "0.90", "1.80",
        "42%",
    ]  # fmt: skip
    assert table[6].split()[-1] == "n/a"  # not measured (a server the bench did not start)
    spread = report.format_spread(report.rows(ROUNDS, _drifting)).splitlines()
    assert spread[0].split() == [
        "strategy",
        "conc",
        "req/s",
        "p50",
        "ms",
        "p99",
        "ms",
        "p99/50",
        "x",
        "ceil",
        "x",
        "b1",
    ]
    assert spread[3].split() == [
        "adaptive", "64", "96.0-190.0", "330.0-360.0", "500.0-540.0", "1.50-1.53", "0.85-0.96", "1.70-1.92"
    ]  # fmt: skip
    lines = report.format_checks(report.checks(GRID, _same))
    assert "0.90 x   (goal >= 0.85)  ok" in lines
    assert "(goal >= 2)  MISSED" in lines
    assert "0.88 x   [0.88-0.90]  (goal >= 0.85)  ok" in report.format_checks(
        report.checks(ROUNDS, _drifting)
    )


def test_references_print_the_token_spread_and_each_reference() -> None:
    text = report.format_references(REFS)
    assert "11/35.6/59 tokens" in text
    assert "raw batch 32, sorted (ceiling)" in text and "200.0 texts/s" in text
    assert "other" not in text and "median" not in text  # not measured; measured once
    disturbed = dataclasses.replace(REFS, single=dataclasses.replace(REFS.single, other_load=0.37))
    assert report.format_references(disturbed).splitlines()[1].endswith("ms per text    other 37%")
    assert "median of 7 measurements between cells" in report.format_references(REFS, 7)
    tagged = dataclasses.replace(
        REFS, ceiling=dataclasses.replace(REFS.ceiling, label=REFS.ceiling.label + " [onnx-int8]")
    )
    assert len({line.index("texts/s") for line in report.format_references(tagged).splitlines()[1:]}) == 1


def test_results_json_is_strict_json_with_medians_and_every_measurement() -> None:
    cells = [*ROUNDS, _cell("adaptive", 8, 0.0, math.nan, math.nan)]
    table = report.rows(cells, _drifting)
    found = report.checks(cells, _drifting)
    results = report.results_json({"url": "x"}, REFS, [REFS, REFS], table, cells, _drifting, found)
    text = json.dumps(results, allow_nan=False)
    loaded = json.loads(text)
    assert loaded["cells"][-1]["p50_ms"] is None
    adaptive = loaded["cells"][1]
    assert (adaptive["strategy"], adaptive["concurrency"], adaptive["rounds"]) == ("adaptive", 64, 3)
    assert adaptive["throughput"] == 170.0 and adaptive["spread"]["throughput"] == [96.0, 190.0]
    assert adaptive["p99_over_p50"] == pytest.approx(500 / 330)  # the median of the rounds' ratios
    assert loaded["references"]["ceiling"]["texts_per_s"] == 200.0
    assert len(loaded["reference_runs"]) == 2
    runs = loaded["cell_runs"]
    assert len(runs) == len(cells) and runs[4]["round"] == 2
    assert runs[4]["ceiling_texts_per_s"] == 100.0 and runs[4]["ceiling_ratio"] == pytest.approx(0.96)


def test_sorted_batches_cut_the_texts_sorted_by_length() -> None:
    lengths = [30, 10, 50, 10, 20]
    assert reference.sorted_batches(lengths, 2) == [[1, 3], [4, 0], [2]]


METRICS = """\
# HELP carpool_batch_size Requests per forward pass.
# TYPE carpool_batch_size histogram
carpool_batch_size_bucket{le="1.0",model="tiny"} 3.0
carpool_batch_size_count{model="tiny"} 12.0
carpool_batch_size_sum{model="tiny"} 96.0
carpool_batch_size_count{model="tiny_trained"} 2.0
carpool_batch_size_sum{model="tiny_trained"} 2.0
"""


def test_batch_counters_come_from_the_model_histogram() -> None:
    assert server.batch_counters(METRICS, "tiny") == (12.0, 96.0)
    assert server.batch_counters(METRICS, "tiny_trained") == (2.0, 2.0)
    assert server.batch_counters(METRICS, "other") is None
    assert server.batch_counters("", "tiny") is None


def test_average_batch_size_is_requests_per_pass_between_two_readings() -> None:
    assert server.average_batch_size((12.0, 96.0), (20.0, 224.0)) == 16.0
    assert server.average_batch_size((12.0, 96.0), (12.0, 96.0)) is None  # no pass in between
    assert server.average_batch_size(None, (20.0, 224.0)) is None


@pytest.mark.parametrize(
    "status",
    [
        pytest.param([{"name": "a"}, {"name": "tiny", "device": "cpu"}], id="list"),
        pytest.param({"models": [{"name": "tiny", "device": "cpu"}]}, id="wrapped-list"),
        pytest.param({"tiny": {"device": "cpu"}}, id="keyed"),
    ],
)
def test_model_entry_reads_models_status(status: object) -> None:
    entry = server.model_entry(status, "tiny")
    assert entry is not None and entry["device"] == "cpu"
    assert server.model_entry(status, "missing") is None


def test_the_config_found_on_a_server_is_put_back_field_by_field() -> None:
    stats = {"config": {"strategy": "adaptive", "max_batch_size": 8, "unknown": 1}, "models": {}}
    assert command._restorable(stats) == {"strategy": "adaptive", "max_batch_size": 8}
    assert command._restorable({"models": {}}) is None


def test_the_warm_up_meets_every_batch_shape_once() -> None:
    lengths = [12, 12, 30, 30, 12, 40]
    batches = [[0], [1], [2], [3], [4], [5]]
    assert reference.warmup_batches(batches, lengths) == [[0], [2], [5]]
    pairs = [[0, 1], [2, 3], [4, 5]]
    assert reference.warmup_batches(pairs, lengths) == pairs  # (2, 12), (2, 30), (2, 40)


def test_a_ratio_no_round_could_measure_reads_n_a() -> None:
    unmeasured = [
        _cell("adaptive", 1, 0.0, math.nan, math.nan, round=1),
        _cell("adaptive", 1, 0.0, math.nan, math.nan, round=2),
    ]
    found = {check.name: check for check in report.checks(unmeasured, _same)}
    gap = found["adaptive c=1 p50 - raw batch 1 p50"]
    assert math.isnan(gap.value) and gap.ok is None
    line = next(line for line in report.format_checks([gap]).splitlines())
    assert line.split()[-5:] == ["n/a", "ms", "(goal", "<=", "2)"]

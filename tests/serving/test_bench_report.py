"""How the bench reads its figures: percentiles, ratios and goals, the table, the results file,
and the server readings it relies on (batch counters from /metrics, /models/status entries)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from serving.bench import command, reference, report, server

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
    strategy: str, concurrency: int, throughput: float, p50: float, p99: float, **kw: int
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
        non_2xx=kw.get("non_2xx", 0),
        errors=kw.get("errors", 0),
        avg_batch_size=None,
    )


GRID = [
    _cell("single_request", 1, 110.0, 9.0, 11.0),
    _cell("single_request", 64, 100.0, 600.0, 700.0),
    _cell("batch_optimized", 1, 105.0, 9.5, 12.0),
    _cell("batch_optimized", 64, 180.0, 330.0, 500.0),
    _cell("adaptive", 1, 110.0, 9.5, 11.0),
    _cell("adaptive", 64, 176.0, 340.0, 520.0, non_2xx=1),
]


@pytest.mark.parametrize("q", [0, 1, 25, 50, 95, 99, 100])
def test_percentile_interpolates_like_numpy(q: float) -> None:
    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 1.5]
    assert report.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan_and_out_of_range_is_refused() -> None:
    assert math.isnan(report.percentile([], 50))
    with pytest.raises(ValueError, match="got 101"):
        report.percentile([1.0], 101)


def test_checks_read_the_ratios_and_goals_at_the_top_and_lowest_concurrency() -> None:
    found = {check.name: check for check in report.checks(GRID, REFS)}
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


def test_checks_skip_what_the_grid_did_not_measure() -> None:
    only = [_cell("batch_optimized", 8, 150.0, 50.0, 90.0)]
    names = [check.name for check in report.checks(only, REFS)]
    assert names == [
        "batch_optimized c=8 / sorted ceiling",
        "batch_optimized c=8 / raw batch 1",
        "batch_optimized c=8 p99 / p50",
        "non-2xx responses and errors, all cells",
    ]
    assert report.checks([], REFS) == []


def test_table_and_checks_print_one_line_per_cell_and_ratio() -> None:
    grid = [*GRID[:3], dataclasses.replace(GRID[3], avg_batch_size=14.25, other_load=0.42), *GRID[4:]]
    table = report.format_table(grid, REFS).splitlines()
    assert table[0].split()[:4] == ["strategy", "conc", "req/s", "p50"]
    assert len(table) == 2 + len(GRID)
    assert table[5].split() == [
        "batch_optimized", "64", "180.0", "330.0", "415.0", "500.0", "0", "0", "14.2", "0.90", "1.80", "42%"
    ]  # fmt: skip
    assert table[6].split()[-1] == "n/a"  # not measured (a server the bench did not start)
    lines = report.format_checks(report.checks(GRID, REFS))
    assert "0.90 x   (goal >= 0.85)  ok" in lines
    assert "(goal >= 2)  MISSED" in lines


def test_references_print_the_token_spread_and_each_reference() -> None:
    text = report.format_references(REFS)
    assert "11/35.6/59 tokens" in text
    assert "raw batch 32, sorted (ceiling)" in text and "200.0 texts/s" in text
    assert "other" not in text  # not measured
    disturbed = dataclasses.replace(REFS, single=dataclasses.replace(REFS.single, other_load=0.37))
    assert report.format_references(disturbed).splitlines()[1].endswith("ms per text    other 37%")


def test_results_json_is_strict_json() -> None:
    cells = [*GRID, _cell("adaptive", 8, 0.0, math.nan, math.nan)]
    results = report.results_json({"url": "x"}, REFS, cells, report.checks(cells, REFS))
    text = json.dumps(results, allow_nan=False)
    loaded = json.loads(text)
    assert loaded["cells"][-1]["p50_ms"] is None
    assert loaded["cells"][3]["p99_over_p50"] == pytest.approx(500 / 330)
    assert loaded["references"]["ceiling"]["texts_per_s"] == 200.0


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

"""`carpool bench --overload` and `--soak` against a real `carpool serve` with a tiny BERT."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from carpool_bench import command, overload
from tests.support.pods import ServingPod

pytestmark = pytest.mark.integration

TOKEN = "modes-token"


@pytest.fixture(scope="module")
def pod(tiny_bert: Path) -> Iterator[ServingPod]:
    env = {"CARPOOL_ADMIN_TOKEN": TOKEN, "CARPOOL_WORKERS": "1", "ENABLE_LOGGING": "false"}
    with ServingPod(models={"tiny": tiny_bert}, env=env) as running:
        yield running


def test_a_storm_on_a_small_queue_counts_refusals_advice_and_probes(pod: ServingPod) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # Batches held for 4 requests (up to 2 x 150 ms) in a queue of 2: waits in line outlast the
    # pod's 250 ms, so the storm meets refusals even on a model this fast.
    held = {"max_queue_size": 2, "strategy": "batch_optimized", "min_batch_size": 4, "max_wait_time_ms": 150}
    httpx.post(f"{pod.url}/batching/configure", json=held, headers=headers)
    try:
        storm = overload.run_storm(
            overload.overload_storm(
                pod.url, ["one text", "another text"], "tiny", clients=24, duration_s=1.0, warmup_s=0.2
            )
        )
        polite = overload.run_storm(
            overload.overload_storm(
                pod.url,
                ["one text"],
                "tiny",
                clients=24,
                duration_s=1.0,
                warmup_s=0.2,
                honour_retry_after=True,
            )
        )
    finally:
        back = {"max_queue_size": 256, "strategy": "adaptive", "min_batch_size": 1, "max_wait_time_ms": 10}
        httpx.post(f"{pod.url}/batching/configure", json=back, headers=headers)
    summary = storm.summary()
    assert storm.statuses[200] > 0 and storm.statuses[429] > 0 and set(storm.statuses) == {200, 429}
    assert summary["goodput_rps"] > 0 and summary["transport_errors"] == 0
    assert summary["probe_failures"] == 0 and summary["probe_max_ms"] is not None
    assert 0 < summary["retry_after_ms_p50"] < 5000  # the queue ahead at the measured drain rate
    assert polite.retried_after_advice > 0
    assert 0 <= polite.summary()["retry_after_accuracy"] <= 1


def test_the_overload_and_soak_modes_write_their_reports(pod: ServingPod, tmp_path: Path) -> None:
    assert pod.process is not None
    common = ["--url", pod.url, "--model", "tiny", "--token", TOKEN, "--output", str(tmp_path)]
    quick = ["--duration", "0.5", "--warmup", "0", "--clients", "12", "--texts", "8"]
    assert command.main([*common, *quick, "--overload", "--rounds", "2"]) == 0
    report = json.loads((tmp_path / "overload.json").read_text())["overload"]
    ratios = ("goodput_ratio_8_vs_256", "storm_vs_calm_8", "calm_8_vs_256")
    ratios += ("raw_8_vs_256", "storm_8_vs_raw_8")
    runs = {"rounds", "storm_queue_8", "calm_queue_8", "polite_queue_8", "storm_queue_256"}
    runs |= {"raw_queue_8", "raw_queue_256"}  # the model alone, fed from full queues: the bound
    once = {"deadlines_and_lanes"}
    assert set(report) == runs | once | set(ratios) | {f"{ratio}_spread" for ratio in ratios}
    assert report["rounds"] == 2 and all(
        len(report[name]) == 2 for name in runs - {"rounds", "polite_queue_8"}
    )
    assert all(run["status_shares"] == {"200": 1.0} for run in report["storm_queue_256"])
    assert all(run["status_shares"] == {"200": 1.0} for run in report["calm_queue_8"])  # 8 fit in 8
    for ratio in ratios:
        low, high = report[f"{ratio}_spread"]
        assert low <= report[ratio] <= high
    # each storm says how full its batches were: a queue of 8 cannot fill more than 8 and those
    # the model's forward pass overlaps
    assert all(run["avg_batch_size"] >= 1 for run in report["storm_queue_8"] + report["storm_queue_256"])
    # both lanes at once: interactive requests with a deadline beside /predict/batch ones, which
    # keep moving; whatever expired was dropped unrun and counted by the pod
    lanes = report["deadlines_and_lanes"]
    assert lanes["deadline_ms"] == 500 and lanes["bulk_items"] == 32
    assert lanes["interactive"]["goodput_rps"] > 0 and lanes["bulk"]["texts_per_s"] > 0
    assert set(lanes["interactive"]["status_shares"]) <= {"200", "429", "504"}
    assert lanes["bulk"]["status_shares"] == {"200": 1.0}
    assert lanes["expired"] >= 0 and lanes["interactive"]["p99_ms"] >= lanes["interactive"]["p50_ms"]
    # the bound: the model in the bench fed from a queue of 8 and of as many as the clients keep waiting
    assert [run["queue"] for run in report["raw_queue_8"] + report["raw_queue_256"]] == [8, 8, 12, 12]
    assert all(run["texts_per_s"] > 0 and 1 <= run["avg_batch_size"] <= 8 for run in report["raw_queue_8"])
    assert httpx.get(f"{pod.url}/batching/stats").json()["config"]["max_queue_size"] == 256  # put back
    soak = ["--soak", "0.05", "--clients", "4", "--pid", str(pod.process.pid), "--texts", "8"]
    assert command.main([*common, *soak]) == 0
    summary = json.loads((tmp_path / "soak.json").read_text())["soak"]
    assert len(summary["slices"]) >= 2
    assert all(s["throughput_rps"] > 0 and s["rss_mb"] > 50 for s in summary["slices"])
    assert summary["second_half_rss_growth"] is not None and summary["throughput_drift"] is not None

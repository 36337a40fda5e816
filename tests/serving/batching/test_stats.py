"""The engine's figures: arrival rate, busy share, the stats report (percentiles: test_percentiles)."""

from __future__ import annotations

import pytest

from serving.batching.stats import EngineStats

pytestmark = pytest.mark.unit


def test_arrival_rate_counts_the_last_second() -> None:
    stats = EngineStats(0.0)
    for i in range(50):
        stats.on_arrival(10.0 + i * 0.04, 1)  # 25 per second, over 2 s
    assert stats.arrival_rate(11.96) == pytest.approx(25, abs=1)
    assert stats.arrival_rate(30.0) == 0


def test_busy_fraction_is_the_computing_share_of_the_last_second() -> None:
    stats = EngineStats(0.0)
    stats.on_batch(9.0, 9.5, [0.0], 10, 10)  # outside the window
    stats.on_batch(10.2, 10.5, [0.0], 10, 10)
    stats.on_batch(10.6, 10.8, [0.0], 10, 10)
    assert stats.busy_fraction(11.0) == pytest.approx(0.5)


def test_snapshot_reports_batches_padding_and_latency() -> None:
    stats = EngineStats(0.0)
    stats.on_batch(1.0, 1.1, [0.01, 0.02], padded_len=20, tokens=30)  # 30 real of 40 padded tokens
    for latency in (0.1, 0.2):
        stats.on_result(1.1, latency, ok=True)
    stats.on_result(1.1, 0.3, ok=False)
    report = stats.snapshot(2.0, max_batch_size=8)
    assert report["requests"] == {
        "completed": 2,
        "failed": 1,
        "rejected_queue_full": 0,
        "cancelled": 0,
        "expired": 0,
    }
    assert report["avg_batch_size"] == 2 and report["batch_utilization"] == 0.25
    assert report["padding_efficiency"] == 0.75
    assert report["latency_ms"]["p50"] == 100.0 and report["latency_ms"]["p99"] == 200.0
    assert report["queue_wait_ms"]["mean"] == 15.0
    assert report["throughput_rps"] == 1.0  # 2 completions over the 2 s since start


def test_busy_fraction_stays_exact_over_thousands_of_batches() -> None:
    stats = EngineStats(0.0)
    batches = [(i * 0.004, i * 0.004 + 0.003) for i in range(5000)]  # 3 ms of every 4, for 20 s
    for start, end in batches:
        stats.on_batch(start, end, [0.0], 10, 10)
    now = batches[-1][1]
    exact = sum(end - max(start, now - 1.0) for start, end in batches if end > now - 1.0)
    assert stats.busy_fraction(now) == pytest.approx(exact, abs=1e-9)
    assert stats.busy_fraction(now + 0.5) == pytest.approx(0.75 * 0.5, abs=0.01)  # half a window idle
    assert stats.busy_fraction(now + 2.0) == 0.0


def test_adaptive_p95_follows_the_recent_requests() -> None:
    stats = EngineStats(0.0)
    for i in range(4096):
        stats.on_result(1.0 + i * 1e-4, 0.5, ok=True)  # a slow spell
    assert stats.latency_p95(2.0) == 0.5
    for i in range(1024):
        stats.on_result(3.0 + i * 1e-4, 0.01, ok=True)  # then fast again
    assert stats.latency_p95(4.0) == 0.01
    assert stats.latency_p95(200.0) is None  # nothing completed in the last minute

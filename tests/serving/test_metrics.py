"""Prometheus collectors and the hardware readings behind them."""

from __future__ import annotations

import os

import pytest
import torch

from serving import hardware
from serving.metrics import Metrics

pytestmark = pytest.mark.unit


def test_batches_and_requests_are_recorded() -> None:
    metrics = Metrics()
    metrics.models = lambda: {"m": (3, True)}
    metrics.on_batch("m", 5, [0.001, 0.002, 0.004, 0.008, 0.5], 0.02)
    metrics.on_request("/predict", {"m": "ok", "n": "rejected"}, 0.03)
    text = metrics.render().decode()
    assert 'carpool_queue_size{model="m"} 3.0' in text
    assert 'carpool_model_ready{model="m"} 1.0' in text
    assert 'carpool_batch_size_bucket{le="4.0",model="m"} 0.0' in text
    assert 'carpool_batch_size_bucket{le="8.0",model="m"} 1.0' in text
    assert 'carpool_queue_wait_seconds_count{model="m"} 5.0' in text
    assert 'carpool_inference_seconds_sum{model="m"} 0.02' in text
    assert 'carpool_requests_total{endpoint="/predict",model="n",outcome="rejected"} 1.0' in text
    assert 'carpool_request_latency_seconds_count{endpoint="/predict"} 1.0' in text


def _record_some(metrics: Metrics) -> str:
    metrics.models = lambda: {"m": (3, True)}
    metrics.on_batch("m", 5, [0.001, 0.5], 0.02)
    metrics.on_request("/predict", {"m": "ok"}, 0.03)
    return metrics.render().decode()


def test_a_variant_labels_every_series_and_changes_nothing_else() -> None:
    plain = _record_some(Metrics())
    labelled = _record_some(Metrics(variant="b"))
    assert "variant=" not in plain
    assert 'carpool_queue_size{model="m",variant="b"} 3.0' in labelled
    assert 'carpool_request_latency_seconds_bucket{endpoint="/predict",le="0.05",variant="b"} 1.0' in labelled
    assert 'carpool_requests_total{endpoint="/predict",model="m",outcome="ok",variant="b"} 1.0' in labelled
    # Every sample line carries the label; the rest of each line (names, other labels, values,
    # HELP and TYPE lines) is what the pod without a variant exposes.
    samples = [line for line in labelled.splitlines() if line and not line.startswith("#")]
    assert samples and all('variant="b"' in line for line in samples)
    unlabelled = [
        line.replace(',variant="b"', "").replace('{variant="b"}', "") for line in labelled.splitlines()
    ]
    live = ("_created", "carpool_process_")  # timestamps and live process readings differ per render
    assert [line for line in unlabelled if not any(c in line for c in live)] == [
        line for line in plain.splitlines() if not any(c in line for c in live)
    ]


def test_disabled_metrics_record_nothing() -> None:
    metrics = Metrics(enabled=False)
    metrics.on_batch("m", 5, [0.1], 0.02)
    metrics.on_request("/predict", {"m": "ok"}, 0.03)
    assert "carpool_batch_size_count" not in metrics.render().decode()


def test_two_apps_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.on_request("/predict", {"m": "ok"}, 0.01)
    assert "carpool_requests_total{" in first.render().decode()
    assert "carpool_requests_total{" not in second.render().decode()


def test_gpu_figures_exist_exactly_when_a_gpu_does() -> None:
    probe = hardware.GpuProbe.detect()
    assert (probe is not None) == torch.cuda.is_available()
    text = Metrics(gpu=probe).render().decode()
    assert ("carpool_gpu_utilization_ratio" in text) == (probe is not None)


def test_usable_cpus_and_cpu_snapshot() -> None:
    assert 1 <= hardware.usable_cpus() <= (os.cpu_count() or 1)
    snapshot = hardware.cpu_snapshot()
    assert snapshot["cpu_count"] == os.cpu_count()
    assert snapshot["process_memory_rss_bytes"] > 0

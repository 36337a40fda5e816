"""Prometheus metrics of the serving pod, all prefixed `carpool_`, in base units.

- `carpool_queue_size{model}` gauge: requests waiting now (the operator scales on it).
- `carpool_batch_size{model}` histogram, buckets 1..256 in powers of two.
- `carpool_queue_wait_seconds{model}`, `carpool_inference_seconds{model}` and
  `carpool_request_latency_seconds{endpoint}` histograms.
- `carpool_requests_total{endpoint,model,outcome}` counter; outcome is ok, invalid, rejected
  (queue full), unavailable (not ready) or error.
- `carpool_process_cpu_seconds_total{process}` and `carpool_process_resident_memory_bytes{process}`:
  each process of the pod, `process="model"` (the one that runs the models, and serves HTTP itself
  when CARPOOL_WORKERS=0) and `process="worker-N"` (HTTP worker N), read with psutil at scrape time.
- `carpool_model_ready{model}` gauge, and where an NVIDIA GPU exists
  `carpool_gpu_utilization_ratio{gpu}`, `carpool_gpu_memory_used_bytes{gpu}` and
  `carpool_gpu_memory_total_bytes{gpu}`; on a CPU-only machine those are absent.
- `carpool_out_of_memory_total{model,device}` counter: batches that ran out of device memory (each
  was split in halves and answered), and `carpool_batch_token_cap{model,device}` gauge: the tokens
  (batch size x padded length) a batch may hold, where a cap applies (GPU memory; absent on a CPU).
- Several devices (`per_device()`): batch size, queue wait and inference histograms gain a `device`
  label; with one device they keep their `model` label alone.

Each app owns its own `CollectorRegistry`, so several apps can live in one process (tests).
Queue sizes and GPU readings are read at scrape time, never pushed.

A pod of a live experiment (`CARPOOL_VARIANT`, set by the operator on each variant's pods) adds a
`variant` label to every series it exposes, so Prometheus can compare the variants; without one,
the exposition is exactly as it always was (no `variant` label at all).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from serving import hardware

__all__ = ["CONTENT_TYPE", "VARIANT_LABEL", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_BUCKETS = tuple(float(2**i) for i in range(9))  # 1 .. 256
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VARIANT_LABEL = "variant"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _LiveGauges(Collector):
    """Gauges read when Prometheus scrapes: queue sizes, readiness, GPUs."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        queue = GaugeMetricFamily(
            "carpool_queue_size", "Requests waiting in a model's queue.", labels=["model"]
        )
        ready = GaugeMetricFamily(
            "carpool_model_ready", "1 when the model is loaded, warm and served.", labels=["model"]
        )
        for name, (size, is_ready) in sorted(self._metrics.models().items()):
            queue.add_metric([name], size)
            ready.add_metric([name], 1.0 if is_ready else 0.0)
        yield queue
        yield ready
        yield from _process_families(self._metrics.processes())
        caps = GaugeMetricFamily(
            "carpool_batch_token_cap",
            "Tokens (batch size x padded length) one batch may hold on a device, where memory caps it.",
            labels=["model", "device"],
        )
        for (name, placed_on), limit in sorted(self._metrics.token_caps().items()):
            caps.add_metric([name, placed_on], limit)
        yield caps
        gpu = self._metrics.gpu
        if gpu is None:
            return
        util = GaugeMetricFamily(
            "carpool_gpu_utilization_ratio", "GPU busy fraction (NVML), 0..1.", labels=["gpu"]
        )
        used = GaugeMetricFamily("carpool_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"])
        total = GaugeMetricFamily(
            "carpool_gpu_memory_total_bytes", "GPU memory in total (NVML).", labels=["gpu"]
        )
        for device in gpu.devices():
            label = [str(device["index"])]
            util.add_metric(label, device["utilization"])
            used.add_metric(label, device["memory_used_bytes"])
            total.add_metric(label, device["memory_total_bytes"])
        yield from (util, used, total)


def _process_families(processes: Mapping[str, int]) -> list[Metric]:
    cpu = CounterMetricFamily(
        "carpool_process_cpu_seconds",
        "CPU seconds (user + system) a process of the pod has used.",
        labels=["process"],
    )
    rss = GaugeMetricFamily(
        "carpool_process_resident_memory_bytes",
        "Resident memory of a process of the pod.",
        labels=["process"],
    )
    for role, pid in sorted(processes.items()):
        try:
            process = hardware.meter(pid).process
            with process.oneshot():
                times = process.cpu_times()
                resident = process.memory_info().rss
        except psutil.Error:  # a worker that just exited: its series is absent until it is back
            continue
        cpu.add_metric([role], times.user + times.system)
        rss.add_metric([role], resident)
    hardware.forget(set(processes.values()))
    return [cpu, rss]


def _this_process() -> Mapping[str, int]:
    return {"model": os.getpid()}


class _Variant(Collector):
    """Every series of `registry`, with the label `variant` added (an experiment's pods)."""

    def __init__(self, registry: CollectorRegistry, variant: str) -> None:
        self._registry = registry
        self._variant = variant

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [
                Sample(s.name, {**s.labels, VARIANT_LABEL: self._variant}, s.value, s.timestamp, s.exemplar)
                for s in metric.samples
            ]
            yield labelled


class Metrics:
    """The collectors; `models` reports {name: (queue size, ready)} at scrape time, `processes`
    {role: pid} of the pod's processes (by default this one, as `model`).

    `variant` (CARPOOL_VARIANT) labels every series with the experiment variant the pod runs."""

    def __init__(
        self, *, enabled: bool = True, gpu: hardware.GpuProbe | None = None, variant: str = ""
    ) -> None:
        self.enabled = enabled
        self.gpu = gpu
        self.variant = variant
        self.models: Callable[[], Mapping[str, tuple[int, bool]]] = dict
        self.processes: Callable[[], Mapping[str, int]] = _this_process
        self.token_caps: Callable[[], Mapping[tuple[str, str], int]] = dict
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._per_device = False
        self._batch_histograms(["model"])
        self.out_of_memory = Counter(
            "carpool_out_of_memory",
            "Batches that ran out of device memory (split in halves, every request answered).",
            ["model", "device"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "carpool_request_latency_seconds",
            "Time to answer a request, from the handler's start.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "carpool_requests",
            "Requests per model by outcome (ok, invalid, rejected, unavailable, error).",
            ["endpoint", "model", "outcome"],
            registry=registry,
        )
        registry.register(_LiveGauges(self))
        self._exposed = registry
        if variant:
            self._exposed = CollectorRegistry(auto_describe=False)
            self._exposed.register(_Variant(registry, variant))

    def _batch_histograms(self, labels: list[str]) -> None:
        registry = self.registry
        self.batch_size = Histogram(
            "carpool_batch_size",
            "Requests per forward pass.",
            labels,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "carpool_queue_wait_seconds",
            "Time from queueing to the start of the forward pass.",
            labels,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "carpool_inference_seconds",
            "Forward pass time of a batch, hand-off included.",
            labels,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )

    def per_device(self) -> None:
        """Label the batch histograms by device too (a pod with several devices), from now on."""
        if self._per_device:
            return
        for histogram in (self.batch_size, self.queue_wait, self.inference):
            self.registry.unregister(histogram)
        self._batch_histograms(["model", "device"])
        self._per_device = True

    def on_batch(
        self, model: str, size: int, waits: Sequence[float], inference_s: float, device: str = ""
    ) -> None:
        if not self.enabled:
            return
        labels = (model, device) if self._per_device else (model,)
        self.batch_size.labels(*labels).observe(size)
        self.inference.labels(*labels).observe(inference_s)
        wait = self.queue_wait.labels(*labels)
        for seconds in waits:
            wait.observe(seconds)

    def on_out_of_memory(self, model: str, device: str) -> None:
        if self.enabled:
            self.out_of_memory.labels(model, device).inc()

    def on_request(self, endpoint: str, outcomes: Mapping[str, str], latency_s: float) -> None:
        """One request: its outcome per model named, and its latency."""
        if not self.enabled:
            return
        for model, outcome in outcomes.items():
            self.requests.labels(endpoint, model, outcome).inc()
        self.request_latency.labels(endpoint).observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self._exposed)

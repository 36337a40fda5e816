"""CPU and GPU utilisation and memory, for /batching/stats, /metrics and the adaptive controller.

GPUs are read through NVML (the `nvidia-ml-py` package, imported as `pynvml`). On a machine
without an NVIDIA driver `GpuProbe.detect()` returns None and every GPU figure is simply absent.
Readings are cached briefly: the adaptive controller asks at every batch pick.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["CpuMeter", "GpuProbe", "cpu_snapshot", "forget", "meter", "usable_cpus"]

log = logging.getLogger("carpool.hardware")
CACHE_S = 0.25


class GpuProbe:
    """NVML readings of every visible GPU."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles
        self._cached: list[dict[str, Any]] = []
        self._cached_at = float("-inf")

    @classmethod
    def detect(cls) -> GpuProbe | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:  # no driver, no library, no device: all mean "no GPU figures"
            log.debug("no NVIDIA GPU visible: %s", exc)
            return None
        if count == 0:
            return None
        return cls(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)])

    def devices(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._cached_at < CACHE_S:
            return self._cached
        nvml = self._nvml
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = nvml.nvmlDeviceGetName(handle)
            except Exception as exc:  # a transient NVML failure must not fail a request
                log.debug("NVML read of GPU %d failed: %s", index, exc)
                continue
            readings.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "utilization": utilization.gpu / 100.0,
                    "memory_used_bytes": int(memory.used),
                    "memory_total_bytes": int(memory.total),
                }
            )
        self._cached, self._cached_at = readings, now
        return readings

    def utilization(self) -> float | None:
        """The busiest GPU's utilisation, 0..1."""
        devices = self.devices()
        return max(d["utilization"] for d in devices) if devices else None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a pod's limit)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


@dataclass(frozen=True, slots=True)
class _CpuSample:
    at: float  # time.monotonic()
    process_s: float  # CPU seconds the process has used (user + system)
    system_busy_s: float  # CPU seconds the machine has spent busy, all CPUs together
    system_total_s: float  # ... and in all


class CpuMeter:
    """CPU use of one process and of the machine over a recent span, from cumulative CPU times.

    A figure covers the time since the latest earlier reading at least `MIN_SPAN_S` old (at most
    about `WINDOW_S` while readings come often; since the previous reading when they come rarely).
    Before any such reading it covers the time since the process started (and the machine since
    boot), so the first figure is an average, never the 0.0 a fresh `psutil.Process` gives.
    """

    MIN_SPAN_S = 0.5
    WINDOW_S = 5.0

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self._samples: deque[_CpuSample] = deque()

    def _sample(self) -> _CpuSample:
        times = self.process.cpu_times()
        machine = psutil.cpu_times()
        # Linux counts guest time inside user and nice too: leave it out of the total once.
        total = sum(machine) - getattr(machine, "guest", 0.0) - getattr(machine, "guest_nice", 0.0)
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        return _CpuSample(time.monotonic(), times.user + times.system, total - idle, total)

    def percents(self) -> tuple[float, float, float]:
        """(process CPU percent (100 = one CPU busy), machine CPU percent (100 = all busy), the
        seconds the figures cover)."""
        now = self._sample()
        samples = self._samples
        while len(samples) >= 2 and samples[1].at <= now.at - self.WINDOW_S:
            samples.popleft()
        reference = None
        for sample in reversed(samples):
            if sample.at <= now.at - self.MIN_SPAN_S:
                reference = sample
                break
        if not samples or now.at - samples[-1].at >= 0.1:
            samples.append(now)
        if reference is None:  # since the process started, and the machine since boot
            span = max(time.time() - self.process.create_time(), 1e-3)
            process = now.process_s / span
            system = now.system_busy_s / max(now.system_total_s, 1e-3)
        else:
            span = max(now.at - reference.at, 1e-3)
            process = (now.process_s - reference.process_s) / span
            total = now.system_total_s - reference.system_total_s
            system = (now.system_busy_s - reference.system_busy_s) / total if total > 0 else 0.0
        return round(process * 100.0, 1), round(min(max(system, 0.0), 1.0) * 100.0, 1), round(span, 3)


_meters: dict[int, CpuMeter] = {}  # pid -> its meter: one psutil.Process per process, kept


def meter(pid: int | None = None) -> CpuMeter:
    """The kept `CpuMeter` of process `pid` (default: this one); a new one if that pid's process
    is not the one measured before (a restarted worker that got a recycled pid)."""
    pid = os.getpid() if pid is None else pid
    found = _meters.get(pid)
    if found is None or not found.process.is_running():
        found = _meters[pid] = CpuMeter(psutil.Process(pid))
    return found


def forget(pids: set[int]) -> None:
    """Drop the meters of processes other than `pids` and this one (gone workers)."""
    for pid in [pid for pid in _meters if pid not in pids and pid != os.getpid()]:
        del _meters[pid]


def cpu_snapshot() -> dict[str, Any]:
    """This process's CPU use and memory, and the machine's (CPU over `cpu_window_s`, see CpuMeter)."""
    own = meter()
    process_cpu, system_cpu, span = own.percents()
    memory = psutil.virtual_memory()
    return {
        "process_cpu_percent": process_cpu,
        "system_cpu_percent": system_cpu,
        "cpu_window_s": span,
        "cpu_count": psutil.cpu_count(),
        "process_memory_rss_bytes": int(own.process.memory_info().rss),
        "system_memory_used_percent": memory.percent,
    }

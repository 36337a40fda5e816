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
from pathlib import Path
from typing import Any

import psutil

__all__ = ["GpuProbe", "cpu_snapshot", "usable_cpus"]

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


def cpu_snapshot() -> dict[str, Any]:
    """This process's CPU use and memory, and the machine's."""
    process = psutil.Process()
    with process.oneshot():
        process_cpu = process.cpu_percent(interval=None)
        rss = process.memory_info().rss
    memory = psutil.virtual_memory()
    return {
        "process_cpu_percent": process_cpu,
        "system_cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "process_memory_rss_bytes": int(rss),
        "system_memory_used_percent": memory.percent,
    }

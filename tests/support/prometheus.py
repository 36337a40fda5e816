"""The real Prometheus server (Debian's `prometheus`) on loopback, scraping real processes.

Targets come from a file_sd file that tests rewrite; each target carries the labels that the
Kubernetes pod relabelling gives in a cluster (`namespace`, `pod`, `policy`: see
docs/autoscaling.md), so the operator's default query works unchanged against it.

Prometheus batches discovery updates every 5 s, so a target change takes about that long to show
in queries, whatever the scrape interval: wait for what you need with `wait_for()`, which polls
/api/v1/query, rather than sleeping.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["PrometheusServer", "Target", "free_port", "prometheus_binary"]

JOB = "carpool-pods"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("the `prometheus` binary is missing: install Debian's package (make sysdeps)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Target:
    """One scrape target: a `carpool serve` address and the labels a cluster would give it."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def pod(cls, address: str, *, namespace: str, policy: str, pod: str) -> Target:
        return cls(address, {"namespace": namespace, "policy": policy, "pod": pod})


class PrometheusServer:
    """One Prometheus process with its own config, file_sd targets and storage in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        targets: list[Target] | None = None,
        *,
        scrape_interval_s: float = 1.0,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.scrape_interval_s = scrape_interval_s
        self.port = port if port is not None else free_port()
        self.targets_file = workdir / "targets.json"
        self.log_file = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._targets: list[Target] = list(targets or [])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start (or restart) the server on the same port and storage; wait until it is ready."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self.set_targets(self._targets)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"prometheus was not ready within {timeout_s} s: {self.log_tail()}")

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL); the port stops answering."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def set_targets(self, targets: list[Target]) -> None:
        """Replace the scrape targets (atomically: Prometheus never reads a half-written file)."""
        self._targets = list(targets)
        groups = [{"targets": [t.address], "labels": dict(t.labels)} for t in self._targets]
        partial = self.targets_file.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        os.replace(partial, self.targets_file)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (raises on any error)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success" or body["data"]["resultType"] != "vector":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    def samples(self, selector: str, window_s: float) -> list[tuple[float, float]]:
        """The raw scraped samples of one series over the last `window_s`: (unix time, value)."""
        promql = f"{selector}[{max(1, round(window_s * 1000))}ms]"
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0)
        response.raise_for_status()
        result = response.json()["data"]["result"]
        if len(result) != 1:
            raise RuntimeError(f"{promql!r} matched {len(result)} series, not one")
        return [(float(at), float(value)) for at, value in result[0]["values"]]

    def value(self, promql: str) -> float | None:
        """The query's single value, or None when it has no series."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"query {promql!r} returned {len(result)} series")
        return float(result[0]["value"][1])

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[float | None], bool],
        *,
        timeout_s: float = 10.0,
        poll_s: float = 0.1,
    ) -> float | None:
        """Poll the query until its value satisfies `predicate`; return that value."""
        deadline = time.monotonic() + timeout_s
        seen: float | None = math.nan
        while True:
            seen = self.value(promql)
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} still {seen} after {timeout_s} s")
            time.sleep(poll_s)

    def wait_for_targets_up(self, count: int, *, timeout_s: float = 15.0) -> None:
        """Wait until exactly `count` targets are scraped successfully."""
        self.wait_for(f'sum(up{{job="{JOB}"}}) or vector(0)', lambda v: v == count, timeout_s=timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _write_config(self) -> None:
        interval = f"{max(1, round(self.scrape_interval_s * 1000))}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": interval,
                    "scrape_timeout": interval,
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        # JSON is YAML: no YAML writer needed.
        (self.workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))

"""The server under test: a `carpool serve` the bench spawns, or any running Carpool reached by URL.

Why the bench talks to the admin endpoints itself: each cell sets the strategy through POST
/batching/configure exactly as an operator would, and reads the cumulative `carpool_batch_size`
histogram of /metrics before and after, so the table shows the batches the engine formed during
that cell alone (the average in /batching/stats covers a rolling window that spans cells).

A spawned server listens on a free loopback port, writes its log beside the results, and is
stopped through its own process handle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "Admin",
    "BenchError",
    "ForeignLoad",
    "Spawned",
    "average_batch_size",
    "batch_counters",
    "free_port",
    "model_entry",
    "spawned_server",
    "tree_cpu_seconds",
]


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why and what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class Admin:
    """Health, model status, configuration and stats of one Carpool, over plain HTTP."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def healthy(self) -> bool:
        try:
            return self._client.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code in (401, 403):
            raise BenchError(
                f"{what} was refused ({response.status_code}): pass the admin token with --token"
            )
        if response.status_code >= 300:
            raise BenchError(f"{what} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def models_status(self) -> Any:
        return self._json(self._client.get("/models/status"), "GET /models/status")

    def stats(self) -> dict[str, Any]:
        found = self._json(self._client.get("/batching/stats"), "GET /batching/stats")
        return found if isinstance(found, dict) else {}

    def configure(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        found = self._json(
            self._client.post("/batching/configure", json=dict(changes)), "POST /batching/configure"
        )
        return found if isinstance(found, dict) else {}

    def batch_counters(self, model: str) -> tuple[float, float] | None:
        """The cumulative `carpool_batch_size` histogram of `model` (None without /metrics)."""
        try:
            response = self._client.get("/metrics")
        except httpx.TransportError:
            return None
        return batch_counters(response.text, model) if response.status_code == 200 else None

    def predict(self, text: str, model: str) -> Any:
        response = self._client.post("/predict", json={"text": text, "models": [model]})
        return self._json(response, f"POST /predict to {model!r}")


def model_entry(status: Any, model: str) -> dict[str, Any] | None:
    """The /models/status entry for `model`, whether the answer is a list or keyed by name."""
    entries: Any = status.get("models", status) if isinstance(status, dict) else status
    if isinstance(entries, dict):
        entry = entries.get(model)
        return entry if isinstance(entry, dict) else None
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and entry.get("name") == model:
                return entry
    return None


def batch_counters(metrics_text: str, model: str) -> tuple[float, float] | None:
    """(forward passes, requests in them) so far for `model`, from the `carpool_batch_size`
    histogram in Prometheus text; None when the histogram is absent (metrics disabled)."""
    found: dict[str, float] = {}
    label = f'model="{model}"'
    for line in metrics_text.splitlines():
        for suffix in ("count", "sum"):
            prefix = f"carpool_batch_size_{suffix}{{"
            if line.startswith(prefix) and label in line.partition("}")[0]:
                with contextlib.suppress(ValueError):
                    found[suffix] = float(line.rpartition(" ")[2])
    if "count" not in found or "sum" not in found:
        return None
    return found["count"], found["sum"]


def average_batch_size(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Requests per forward pass between two readings of `batch_counters`."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


@dataclass(frozen=True)
class Spawned:
    """A running `carpool serve` started by the bench."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far (user + system): the pod's model process and its
        HTTP worker processes (`tree_cpu_seconds`)."""
        import psutil

        return tree_cpu_seconds(psutil.Process(self.pid))


def tree_cpu_seconds(root: Any) -> float:
    """CPU time (user + system) a `psutil.Process` and all its descendants have used so far,
    including children that ended and were reaped (a worker started again); 0 once it is gone."""
    import psutil

    try:
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            total += times.user + times.system
    return float(total)


class ForeignLoad:
    """How much of the machine processes other than the bench and its server used between two
    readings: the share of all cores, 0..1. Anything well above zero means the figures measured
    meanwhile came from a machine shared with other work, and are noisy. The server is its whole
    process tree: the pod's model process and its HTTP worker processes, including workers that
    ended and were reaped meanwhile. Without the server's pid (a server the bench did not start)
    only the bench's own process is left out, which is right while that server idles (the
    references) and wrong while it serves."""

    def __init__(self, server_pid: int | None) -> None:
        import psutil

        self._bench = psutil.Process()
        self._server = None if server_pid is None else psutil.Process(server_pid)
        self._cores = psutil.cpu_count() or 1
        self._start = self._reading()

    def _reading(self) -> tuple[float, float]:
        import psutil

        system = psutil.cpu_times()
        fields = ("user", "nice", "system", "irq", "softirq", "steal")
        busy = sum(getattr(system, name, 0.0) for name in fields)
        times = self._bench.cpu_times()
        ours = times.user + times.system
        if self._server is not None:
            ours += tree_cpu_seconds(self._server)
        return time.monotonic(), busy - ours

    def share(self) -> float:
        """The foreign share since the last call (or since creation), and start a new interval."""
        then, foreign_then = self._start
        now, foreign_now = self._start = self._reading()
        elapsed = max(now - then, 1e-6)
        return min(1.0, max(0.0, (foreign_now - foreign_then) / (elapsed * self._cores)))


@contextlib.contextmanager
def spawned_server(
    models: Mapping[str, Path],
    log_path: Path,
    *,
    token: str | None = None,
    startup_timeout_s: float = 300.0,
) -> Iterator[Spawned]:
    """Run `carpool serve` on a free loopback port until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "serve", "--host", "127.0.0.1", "--port", str(port)]
    for name, path in models.items():
        command += ["--model", f"{name}={path}"]
    env = dict(os.environ)
    if token:
        env["CARPOOL_ADMIN_TOKEN"] = token
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_healthy(process, url, log_path, startup_timeout_s)
            yield Spawned(url, process.pid)
        finally:
            _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> None:
    admin = Admin(url, timeout_s=2.0)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(
                    f"carpool serve exited with code {process.returncode}; its log ({log_path}) ends with:\n"
                    + _tail(log_path)
                )
            if admin.healthy():
                return
            time.sleep(0.2)
    finally:
        admin.close()
    raise BenchError(f"carpool serve was not healthy after {timeout_s:.0f} s; see {log_path}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

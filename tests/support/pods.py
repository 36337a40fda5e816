"""Real `carpool serve` processes on loopback addresses, standing in for serving pods.

Operator and autoscaling tests point pod IPs at 127.0.0.x addresses where a real pod listens
(`start_all([...])` starts several side by side)::

    env = {"CARPOOL_ADMIN_TOKEN": "s3cret"}
    with ServingPod(host="127.0.0.2", models={"tiny": tiny_path}, env=env) as pod:
        httpx.get(f"{pod.url}/health")
        pod.restart()          # same host and port, fresh process (its config back to the env's)

`start()` waits until GET /health answers 200 and, on a timeout or an early exit, raises
`PodStartError` carrying the process's output. The output goes to a log file (`pod.log_path`,
`pod.output()`), never to a pipe that could fill up and block the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from carpool_bench.server import free_port

__all__ = ["PodStartError", "ServingPod", "free_port", "refused_start", "start_all"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class PodStartError(RuntimeError):
    """The pod did not become healthy; the message holds its output."""


def start_all(pods: Sequence[ServingPod]) -> list[ServingPod]:
    """Start several pods side by side (each loads its models in parallel); stop all if one fails."""
    try:
        for pod in pods:
            pod.launch()
        for pod in pods:
            pod.wait_healthy()
    except BaseException:
        for pod in pods:
            pod.stop()
        raise
    return list(pods)


def refused_start(model: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`carpool serve` of `model` with `env` added, for a start that must stop before serving
    (the port is one it could never bind, so a start that does not stop fails the caller fast)."""
    return subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--model", f"tiny={model}", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


class ServingPod:
    """One `carpool serve` process (`python -m serving serve`) on `host`:`port`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        models: Mapping[str, str | os.PathLike[str]] | Sequence[str] | None = None,
        models_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        if isinstance(models, Mapping):
            self.model_specs = [f"{name}={path}" for name, path in models.items()]
        else:
            self.model_specs = list(models or [])
        self.models_dir = models_dir
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self._workdir = tempfile.TemporaryDirectory(prefix="carpool-pod-")
        self.cwd = Path(cwd) if cwd is not None else Path(self._workdir.name)
        self.log_path = Path(self._workdir.name) / f"pod-{host}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """`host:port`, as the operator would build it from a pod IP."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "serving", "serve", "--host", self.host, "--port", str(self.port)]
        for spec in self.model_specs:
            command += ["--model", spec]
        if self.models_dir is not None:
            command += ["--models-dir", str(self.models_dir)]
        return command

    def _environment(self) -> dict[str, str]:
        environ = dict(os.environ)
        paths = [str(REPO_ROOT), str(REPO_ROOT / "operator")]
        if environ.get("PYTHONPATH"):
            paths.append(environ["PYTHONPATH"])
        environ.update(
            PYTHONPATH=os.pathsep.join(paths),
            PYTHONUNBUFFERED="1",
            TOKENIZERS_PARALLELISM="false",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            # torch unless a test asks for another runtime: an ONNX export at every start would
            # slow every pod, and only the runtime tests are about runtimes
            CARPOOL_RUNTIME="torch",
        )
        environ.update(self.env)
        return environ

    def start(self) -> Self:
        """Start the process and wait until /health is 200 (raises PodStartError with its output)."""
        self.launch()
        self.wait_healthy()
        return self

    def launch(self) -> Self:
        """Start the process without waiting for it (see `start_all` to start several at once)."""
        if self.running:
            return self
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_healthy(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise PodStartError(
                        f"carpool serve on {self.address} exited with code {self.process.returncode} "
                        f"before /health was 200. Output:\n{self.output()}"
                    )
                try:
                    response = client.get(f"{self.url}/health")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:500]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        output = self.output()
        self.stop()
        raise PodStartError(
            f"carpool serve on {self.address} was not healthy after {timeout or self.startup_timeout:.0f} s "
            f"(last /health: {last}). Output:\n{output}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after `timeout`; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.process = None
        return process.returncode

    def kill(self) -> None:
        """Stop at once, as a crashed pod would (SIGKILL, no drain)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def restart(self, env: Mapping[str, str] | None = None) -> Self:
        """Stop and start again on the same host and port; `env` entries are added first."""
        self.stop()
        if env:
            self.env.update(env)
        return self.start()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServingPod({self.url}, models={self.model_specs}, running={self.running})"

"""`carpool operator` as a user starts it: a separate process, with --liveness and -n NAMESPACE,
against the emulated API server (over HTTP, as against a cluster)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from carpool_operator import command, kube
from tests.support import kube as k8s
from tests.support import pods

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def server() -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api:
        api.namespaces |= {"team-a", "team-b"}
        yield api


def _start(kubeconfig: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    environ = dict(os.environ)
    environ.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "operator")]),
        CARPOOL_SERVING_IMAGE="carpool-serving:from-env",
        CARPOOL_SERVING_GPU_IMAGE="carpool-serving:from-env-cuda",
        PYTHONUNBUFFERED="1",
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carpool",
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--resync-seconds",
                "1",
                *args,
            ],
            cwd=REPO_ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_a_namespace_pattern_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        command.main(["-n", "team-*"])
    assert exited.value.code == 2
    assert "--namespace takes exact names, not patterns: team-*" in capsys.readouterr().err


async def test_the_operator_process_serves_its_liveness_probe_and_only_its_namespace(
    server: k8s.ApiServer, tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig", str(server.url))
    port = pods.free_port("127.0.0.1")
    log = tmp_path / "operator.log"
    process = _start(kubeconfig, log, "-n", "team-a", "--liveness", f"http://127.0.0.1:{port}/healthz")
    stop.append(process)

    async def alive() -> bool:
        assert process.poll() is None, f"the operator exited: {log.read_text()}"
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await k8s.eventually(alive, timeout_s=30, what="GET /healthz answering 200")

    gpu = {"serving": {"gpu": {"count": 1}}}
    await server.create(kube.POLICIES, "team-b", {"metadata": {"name": "theirs"}, "spec": {}})
    await server.create(kube.POLICIES, "team-a", {"metadata": {"name": "ours"}, "spec": gpu})
    deployment = await k8s.eventually(
        lambda: server.get(kube.DEPLOYMENTS, "team-a", "ours"), timeout_s=20, what=f"team-a served: {log}"
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "carpool-serving:from-env-cuda"

    # Several periodic passes later, team-b's policy is still untouched.
    await asyncio.sleep(2.5)
    assert server.get(kube.DEPLOYMENTS, "team-b", "theirs") is None
    theirs = server.get(kube.POLICIES, "team-b", "theirs")
    assert theirs is not None and not theirs.get("status") and not theirs["metadata"].get("finalizers")
    touched = {
        request.namespace
        for request in server
        if request.resource is not None
        and request.namespace is not None
        and not request.headers.get("User-Agent", "").startswith("kmock")
    }
    assert touched == {"team-a"}, touched
    assert await alive()

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 20) in (0, 130, -signal.SIGTERM), log.read_text()

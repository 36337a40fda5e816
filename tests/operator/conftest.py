"""Fixtures of the operator tests: real `carpool serve` processes standing in for a policy's pods.

Two pods, on 127.0.0.2 and 127.0.0.3 and the same port (a policy's pods all serve on
spec.serving.port), load a tiny BERT and accept ADMIN_TOKEN. They start with the config a pod
would get from an old ConfigMap (`POD_START_ENV`), so a restart brings a pod back to it: exactly
what a restarted pod does when the operator has pushed a newer config since. They are started
once per session (about two seconds each, both at once) and shared; every test states the config
it wants rather than assuming the one left by the test before.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import kube as k8s
from tests.support import pods

POD_IPS = ("127.0.0.2", "127.0.0.3")
ADMIN_TOKEN = "operator-test-token"
POD_START_ENV = {
    "CARPOOL_ADMIN_TOKEN": ADMIN_TOKEN,
    "BATCHING_STRATEGY": "single_request",
    "ENABLE_DYNAMIC_BATCHING": "false",
    "MAX_BATCH_SIZE": "4",
    "CARPOOL_DEVICE": "cpu",
}


def _port_free_on_all(hosts: tuple[str, ...]) -> int:
    for _ in range(50):
        port = pods.free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@pytest.fixture(scope="session")
def pod_port() -> int:
    """The port every serving pod of the tests listens on (the policy's spec.serving.port)."""
    return _port_free_on_all(POD_IPS)


@pytest.fixture(scope="session")
def serving_pods(tiny_bert: Path, pod_port: int) -> Iterator[list[pods.ServingPod]]:
    """Two running `carpool serve` processes, one per pod IP, serving the model `tiny`."""
    started = [
        pods.ServingPod(host=ip, port=pod_port, models={"tiny": tiny_bert}, env=POD_START_ENV)
        for ip in POD_IPS
    ]
    try:
        with ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(lambda pod: pod.start(), started))
        yield started
    finally:
        for pod in started:
            pod.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    """kmock's API server with the operator running against it, on the fast test config (a test
    module that needs other settings defines its own `server`)."""
    async with k8s.api_server() as api:
        config = k8s.fast_config(k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url)))
        async with k8s.running_operator(api, config):
            yield api

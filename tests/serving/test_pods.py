"""The test helper that runs real `carpool serve` processes on loopback addresses."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.pods import PodStartError, ServingPod, start_all

pytestmark = pytest.mark.integration


def test_a_pod_serves_on_its_own_loopback_address_and_restarts_in_place(tiny_bert: Path) -> None:
    env = {"CARPOOL_ADMIN_TOKEN": "s3cret", "BATCHING_STRATEGY": "batch_optimized", "MAX_BATCH_SIZE": "8"}
    neighbour = ServingPod(host="127.0.0.4", models={"tiny": tiny_bert})
    with ServingPod(host="127.0.0.3", models={"tiny": tiny_bert}, env=env) as pod:
        start_all([pod, neighbour])  # the second starts side by side; the first is already up
        assert httpx.get(f"{neighbour.url}/batching/stats").json()["config"]["strategy"] == "adaptive"
        neighbour.close()
        assert pod.url.startswith("http://127.0.0.3:")
        predicted = httpx.post(f"{pod.url}/predict", json={"text": "hello", "models": ["tiny"]})
        assert predicted.status_code == 200
        stats = httpx.get(f"{pod.url}/batching/stats").json()
        assert stats["config"]["strategy"] == "batch_optimized" and stats["config"]["max_batch_size"] == 8
        pushed = httpx.post(
            f"{pod.url}/batching/configure",
            json={"strategy": "adaptive"},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert pushed.status_code == 200
        assert httpx.get(f"{pod.url}/batching/stats").json()["config_hash"] == pushed.json()["config_hash"]
        port = pod.port
        pod.restart()
        assert pod.port == port and pod.running
        after = httpx.get(f"{pod.url}/batching/stats").json()
        assert after["config"]["strategy"] == "batch_optimized"  # a restarted pod is back to its environment
        assert "--- start 2:" in pod.output()
        process = pod.process
    assert process is not None and process.poll() is not None  # the context manager stopped it


def test_a_pod_that_cannot_start_raises_with_its_output() -> None:
    pod = ServingPod(host="127.0.0.2", models=["not-a-spec"], startup_timeout=60)
    with pytest.raises(PodStartError) as failed:
        pod.start()
    message = str(failed.value)
    assert "exited with code 2 before /health was 200" in message
    assert "a model is given as NAME=PATH, got 'not-a-spec'" in message
    pod.close()


def test_a_pod_that_never_gets_healthy_raises_with_its_last_health() -> None:
    pod = ServingPod(host="127.0.0.2", models={"ghost": "/no/such/model"}, startup_timeout=20)
    with pytest.raises(PodStartError) as failed:
        pod.start()
    message = str(failed.value)
    assert "was not healthy after 20 s" in message
    assert "'/no/such/model' is not a model directory" in message
    pod.close()

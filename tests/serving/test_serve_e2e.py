"""End to end: a real `carpool serve` process with the real MiniLM, called as the guide does."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import pytest

from serving.settings import BatchingConfig
from tests.support.pods import ServingPod

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "e2e-token"
LABELS = ["benign", "phishing", "spam", "prompt_injection"]


@pytest.fixture(scope="module")
def pod() -> Iterator[ServingPod]:
    env = {
        "CARPOOL_ADMIN_TOKEN": TOKEN,
        "BATCHING_STRATEGY": "adaptive",
        "ENABLE_LOGGING": "false",
        "CARPOOL_RUNTIME": "auto",  # what `make run` serves with
    }
    with ServingPod(host="127.0.0.1", env=env, startup_timeout=240) as running:
        yield running


def test_the_guides_calls(pod: ServingPod) -> None:
    with httpx.Client(base_url=pod.url, timeout=30) as client:
        stats = client.get("/batching/stats").json()
        assert (
            stats["config_hash"] == BatchingConfig.from_env({"BATCHING_STRATEGY": "adaptive"}).config_hash()
        )

        change = {
            "enable": True,
            "strategy": "batch_optimized",
            "max_batch_size": 16,
            "max_wait_time_ms": 100,
        }
        assert client.post("/batching/configure", json=change).status_code == 401
        configured = client.post(
            "/batching/configure", json=change, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert configured.status_code == 200
        assert configured.json()["config_hash"] == BatchingConfig.model_validate(change).config_hash()

        single = client.post("/predict", json={"text": "Test message", "models": ["minilm"]})
        assert single.status_code == 200
        prediction = single.json()["predictions"]["minilm"]
        assert list(prediction["probabilities"]) == LABELS and prediction["label"] in LABELS

        trained = client.post("/predict/trained", json={"text": "Test message", "models": ["minilm_trained"]})
        assert trained.status_code == 404
        assert "carpool train" in trained.json()["detail"]

        batch = client.post(
            "/predict/batch", json=[{"text": f"Message {i}", "models": ["minilm"]} for i in (1, 2, 3)]
        ).json()
        assert [r["ok"] for r in batch["results"]] == [True, True, True]

        adaptive = client.post(
            "/batching/configure",
            json={"enable": True, "strategy": "adaptive"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert adaptive.json()["config"]["strategy"] == "adaptive"

        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        status = client.get("/models/status").json()["models"]
        assert [(m["name"], m["kind"], m["device"], m["warm"]) for m in status] == [
            ("minilm", "base", "cpu", True)
        ]
        assert "untrained" in status[0]["head"]
        metrics = client.get("/metrics").text
        assert 'carpool_queue_size{model="minilm"} 0.0' in metrics
        assert 'carpool_requests_total{endpoint="/predict",model="minilm",outcome="ok"} 1.0' in metrics


def test_concurrent_clients_each_get_their_own_answer(pod: ServingPod) -> None:
    texts = [f"Reset your password within {i} hours at http://login.example/{i}" for i in range(24)]
    texts += [f"Lunch at {i} o'clock?" for i in range(24)]
    with httpx.Client(base_url=pod.url, timeout=60) as client:
        alone = [client.post("/predict", json={"text": t}).json()["predictions"]["minilm"] for t in texts[:6]]

        def ask(text: str) -> dict[str, object]:
            answer: dict[str, object] = client.post("/predict", json={"text": text}).json()["predictions"][
                "minilm"
            ]
            return answer

        with concurrent.futures.ThreadPoolExecutor(16) as threads:
            together = list(threads.map(ask, texts))
        stats = client.get("/batching/stats").json()["models"]["minilm"]
    for one, many in zip(alone, together[:6], strict=True):
        assert list(many["probabilities"].values()) == pytest.approx(
            list(one["probabilities"].values()), abs=1e-4
        )
    assert stats["requests"]["completed"] >= len(texts) + 6
    assert stats["queue"]["peak"] >= 2  # requests did share the queue

"""The batching guide's requests, with its bodies as it writes them, against a real `carpool serve`.

The pod serves tiny BERTs under the default install's names (`minilm`, `minilm_trained`) behind
one HTTP worker, so the guide's `bert-base` and `bert-base_trained` reach them through the default
aliases, which the worker learns from the model process. No admin token: the guide's configure
calls carry none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.pods import ServingPod

pytestmark = [pytest.mark.integration]

JSON = {"Content-Type": "application/json"}

# (method, path, body as the guide writes it)
GUIDE = [
    ("GET", "/batching/stats", None),
    (
        "POST",
        "/batching/configure",
        """{
    "enable": true,
    "strategy": "batch_optimized",
    "max_batch_size": 16,
    "max_wait_time_ms": 100
  }""",
    ),
    ("POST", "/predict", '{"text": "Test message", "models": ["bert-base"]}'),
    ("POST", "/predict/trained", '{"text": "Test message", "models": ["bert-base_trained"]}'),
    (
        "POST",
        "/predict/batch",
        """[
    {"text": "Message 1", "models": ["bert-base"]},
    {"text": "Message 2", "models": ["bert-base"]},
    {"text": "Message 3", "models": ["bert-base"]}
  ]""",
    ),
    ("GET", "/batching/stats", None),
    ("POST", "/batching/configure", '{"enable": true, "strategy": "adaptive"}'),
    ("GET", "/health", None),
    ("GET", "/models/status", None),
]


@pytest.fixture(scope="module")
def pod(tiny_models_dir: Path) -> Iterator[ServingPod]:
    models = {"minilm": tiny_models_dir / "tiny", "minilm_trained": tiny_models_dir / "tiny_trained"}
    env = {"CARPOOL_WORKERS": "1", "ENABLE_LOGGING": "false"}
    with ServingPod(models=models, env=env) as running:
        yield running


def test_every_request_of_the_guide_answers_200(pod: ServingPod) -> None:
    with httpx.Client(base_url=pod.url, timeout=30) as client:
        answers = {}
        for method, path, body in GUIDE:
            answer = client.request(method, path, content=body, headers=JSON if body else None)
            assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text}"
            answers[path] = answer.json()
    assert list(answers["/predict"]["predictions"]) == ["bert-base"]
    assert list(answers["/predict/trained"]["predictions"]) == ["bert-base_trained"]
    batch = answers["/predict/batch"]
    assert batch["ok"] is True and batch["succeeded"] == 3
    assert [list(r["predictions"]) for r in batch["results"]] == [["bert-base"]] * 3
    assert answers["/batching/configure"]["config"]["strategy"] == "adaptive"


def test_the_stats_and_metrics_show_cpu_overflow_rate_and_each_process(pod: ServingPod) -> None:
    with httpx.Client(base_url=pod.url, timeout=30) as client:
        for _ in range(20):
            client.post("/predict", content='{"text": "Test message", "models": ["bert-base"]}', headers=JSON)
        stats = client.get("/batching/stats").json()
        metrics = client.get("/metrics").text
    assert stats["system"]["cpu"]["process_cpu_percent"] > 0  # the model process worked
    assert stats["models"]["minilm"]["queue"]["overflow_rate_rps"] == 0
    for process in ("model", "worker-0"):
        assert f'carpool_process_cpu_seconds_total{{process="{process}"}}' in metrics
        assert f'carpool_process_resident_memory_bytes{{process="{process}"}}' in metrics

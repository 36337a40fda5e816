"""`carpool serve` as processes: the model process and its HTTP workers, started for real."""

from __future__ import annotations

import concurrent.futures
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from carpool_bench import texts as bench_texts
from tests.support import tinybert
from tests.support.pods import ServingPod, refused_start

pytestmark = pytest.mark.integration

TOKEN = "server-token"


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingPod]:
    """Three workers over a tiny BERT whose answers tell every text apart."""
    model = tinybert.build_tiny_bert(tmp_path_factory.mktemp("tagged") / "tiny", weight_std=0.2)
    env = {"CARPOOL_WORKERS": "3", "CARPOOL_ADMIN_TOKEN": TOKEN, "ENABLE_LOGGING": "false"}
    with ServingPod(models={"tiny": model}, env=env) as running:
        yield running


def _workers(pod: ServingPod) -> list[psutil.Process]:
    assert pod.process is not None
    return [
        child
        for child in psutil.Process(pod.process.pid).children()
        if "serving.worker" in " ".join(child.cmdline())
    ]


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_the_pod_runs_the_workers_it_was_asked_for(pod: ServingPod) -> None:
    assert len(_workers(pod)) == 3
    health = httpx.get(f"{pod.url}/health").json()
    assert health["workers"] == {"expected": 3, "connected": 3}


def test_tagged_texts_through_several_workers_each_get_their_own_answer(pod: ServingPod) -> None:
    texts = list(dict.fromkeys(bench_texts.generate_texts(96, seed=3)))

    def probabilities(client: httpx.Client, text: str) -> list[float]:
        answer = client.post("/predict", json={"text": text, "models": ["tiny"]})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["predictions"]["tiny"]["probabilities"].values())

    with httpx.Client(base_url=pod.url, timeout=30) as client:
        alone = {text: probabilities(client, text) for text in texts}
    # The answers tell the texts apart, so a mix-up could not go unseen.
    for a, b in itertools.combinations(texts, 2):
        assert max(abs(x - y) for x, y in zip(alone[a], alone[b], strict=True)) > 1e-4

    def ask(text: str) -> tuple[str, list[float]]:
        with httpx.Client(base_url=pod.url, timeout=30) as own:  # a connection each: all workers serve
            return text, probabilities(own, text)

    with concurrent.futures.ThreadPoolExecutor(32) as threads:
        together = list(threads.map(ask, texts * 4))
    for text, answer in together:
        assert answer == pytest.approx(alone[text], abs=1e-5)


def test_a_config_pushed_through_one_worker_is_what_every_worker_reports(pod: ServingPod) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    pushed = httpx.post(f"{pod.url}/batching/configure", json={"max_batch_size": 8}, headers=headers)
    assert pushed.status_code == 200
    try:
        for _ in range(24):  # fresh connections land on every worker
            stats = httpx.get(f"{pod.url}/batching/stats").json()
            assert stats["config_hash"] == pushed.json()["config_hash"]
        before = httpx.get(f"{pod.url}/metrics").text
        for _ in range(12):
            assert httpx.post(f"{pod.url}/predict", json={"text": "count me"}).status_code == 200

        def counted() -> bool:
            after = httpx.get(f"{pod.url}/metrics").text
            return _ok_count(after) - _ok_count(before) == 12

        _wait(counted, 5, "the twelve requests in carpool_requests_total")
    finally:
        httpx.post(f"{pod.url}/batching/configure", json={"max_batch_size": 32}, headers=headers)


def _ok_count(metrics: str) -> float:
    prefix = 'carpool_requests_total{endpoint="/predict",model="tiny",outcome="ok"} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def test_a_worker_that_dies_is_started_again(pod: ServingPod) -> None:
    victim = _workers(pod)[0]
    victim.kill()
    victim.wait(5)

    def replaced() -> bool:
        pids = [worker.pid for worker in _workers(pod)]
        health = httpx.get(f"{pod.url}/health")
        return len(pids) == 3 and victim.pid not in pids and health.status_code == 200

    _wait(replaced, 20, "a new worker in place of the killed one")
    assert httpx.post(f"{pod.url}/predict", json={"text": "still here"}).status_code == 200


def test_a_pod_whose_model_cannot_load_stays_up_and_says_why(tmp_path: Path) -> None:
    empty = tmp_path / "phishing"
    empty.mkdir()
    pod = ServingPod(models={"phishing": empty}, env={"CARPOOL_WORKERS": "1"})
    pod.launch()
    try:
        _wait(lambda: _answers(f"{pod.url}/livez") == 200, 60, "/livez")

        def failed() -> bool:
            models = httpx.get(f"{pod.url}/health").json()["models"]
            return bool(models["phishing"]["state"] == "failed")

        _wait(failed, 60, "the model's load to fail")
        health = httpx.get(f"{pod.url}/health")
        assert health.status_code == 503
        assert "is not a model directory" in health.json()["models"]["phishing"]["error"]
        status = httpx.get(f"{pod.url}/models/status").json()["models"][0]
        assert status["state"] == "failed" and "no config.json" in status["error"]
        refused = httpx.post(f"{pod.url}/predict", json={"text": "hello"})
        assert refused.status_code == 503 and "phishing" in refused.json()["detail"]
        assert pod.running
    finally:
        pod.close()


def _answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_a_pod_told_to_use_a_gpu_it_cannot_see_refuses_to_start(tiny_bert: Path) -> None:
    done = refused_start(tiny_bert, {"CARPOOL_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert "CARPOOL_DEVICE=cuda but no CUDA device is visible" in done.stderr


def test_an_http_worker_never_imports_torch() -> None:
    probe = "import sys, serving.worker, serving.app; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr

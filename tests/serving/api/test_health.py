"""GET /health, /models/status and /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving import app as app_module
from serving.metrics import Metrics
from serving.pool import ModelPool
from tests.serving.conftest import Served, serve_app, tiny_settings
from tests.support import tinybert

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="module")]


async def test_health_is_200_when_every_model_is_warm(served: Served) -> None:
    response = await served.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "models": {
            "tiny": {"state": "ready", "alive": True},
            "tiny_trained": {"state": "ready", "alive": True},
        },
    }


async def test_health_is_503_until_the_models_are_loaded(tiny_models_dir: Path) -> None:
    import httpx

    settings = tiny_settings(tiny_models_dir)
    pool = ModelPool.from_settings(settings, Metrics(), None)
    app = app_module.create_app(settings, pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
        response = await client.get("/health")
        assert response.status_code == 503
        assert response.json()["models"]["tiny"] == {"state": "new", "alive": False}
        predict = await client.post("/predict", json={"text": "hi", "models": ["tiny"]})
        assert predict.status_code == 503
        assert "model 'tiny' is new" in predict.json()["detail"]
        await pool.start_loading()
        assert (await client.get("/health")).status_code == 200
    await pool.drain()


async def test_a_model_that_cannot_load_keeps_health_503_and_says_why(
    tmp_path: Path, tiny_bert: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_bert / "config.json").read_text())  # no weights, no tokenizer
    settings = tiny_settings(tmp_path, models={"tiny": tiny_bert, "broken": broken})
    async with serve_app(settings) as pod:
        response = await pod.client.get("/health")
        status = (await pod.client.get("/models/status")).json()["models"]
        still_served = await pod.client.post("/predict", json={"text": "hi", "models": ["tiny"]})
    assert response.status_code == 503
    assert response.json()["models"]["broken"]["state"] == "failed"
    assert response.json()["models"]["broken"]["error"]
    assert [m["state"] for m in status] == ["ready", "failed"]
    assert still_served.status_code == 200


async def test_models_status_describes_each_model(served: Served, tiny_models_dir: Path) -> None:
    models = {m["name"]: m for m in (await served.client.get("/models/status")).json()["models"]}
    tiny, trained = models["tiny"], models["tiny_trained"]
    assert tiny["kind"] == "base" and trained["kind"] == "trained"
    assert tiny["path"] == str((tiny_models_dir / "tiny").resolve())
    assert (tiny["device"], tiny["dtype"]) == ("cpu", "float32")
    assert tiny["labels"] == list(tinybert.DEFAULT_LABELS)
    assert tiny["warm"] is True and tiny["load_seconds"] > 0
    assert "card" not in tiny
    assert trained["card"]["base"] == "tiny"
    assert trained["card"]["metrics"]["accuracy"] == 0.5
    assert trained["card"]["train_seconds"] == 1.5


async def test_metrics_expose_queue_sizes_and_histograms(served: Served) -> None:
    await served.client.post("/predict", json={"text": "count me", "models": ["tiny"]})
    response = await served.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'carpool_queue_size{model="tiny"} 0.0' in text
    assert 'carpool_queue_size{model="tiny_trained"} 0.0' in text
    assert 'carpool_model_ready{model="tiny"} 1.0' in text
    assert 'carpool_batch_size_bucket{le="256.0",model="tiny"}' in text
    assert 'carpool_queue_wait_seconds_count{model="tiny"}' in text
    assert 'carpool_inference_seconds_count{model="tiny"}' in text
    assert 'carpool_request_latency_seconds_count{endpoint="/predict"}' in text
    assert 'carpool_requests_total{endpoint="/predict",model="tiny",outcome="ok"}' in text
    assert "carpool_gpu_" not in text  # no GPU on this machine: cleanly absent


async def test_unknown_model_names_never_become_metric_labels(served: Served) -> None:
    response = await served.client.post("/predict", json={"text": "hi", "models": ["typo-1234"]})
    text = (await served.client.get("/metrics")).text
    assert response.status_code == 404
    assert "typo-1234" not in text
    assert 'carpool_requests_total{endpoint="/predict",model="-",outcome="invalid"}' in text


async def test_metrics_can_be_disabled(tiny_models_dir: Path) -> None:
    settings = tiny_settings(tiny_models_dir, enable_metrics=False, models={"tiny": tiny_models_dir / "tiny"})
    async with serve_app(settings) as pod:
        response = await pod.client.get("/metrics")
        predict = await pod.client.post("/predict", json={"text": "still served", "models": ["tiny"]})
    assert response.status_code == 404
    assert "ENABLE_METRICS=false" in response.json()["detail"]
    assert predict.status_code == 200


async def test_unknown_paths_are_a_json_404(served: Served) -> None:
    response = await served.client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["detail"] == "Not Found"

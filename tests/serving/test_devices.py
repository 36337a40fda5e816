"""Placement on several devices: which devices a pod uses, and a whole app on two of them.

`CARPOOL_DEVICES=cpu,cpu` takes the path `cuda:0,cuda:1` takes on a GPU node: every model replicated
on both devices, one model thread per device, one queue per model; /models/status shows where each
model is, /batching/stats and /metrics count per device.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.models import hf
from serving.pool import device_labels
from serving.settings import ServerSettings
from tests.serving.conftest import serve_app, tiny_settings
from tests.support import tinybert

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("env", "cuda", "expected"),
    [
        pytest.param({}, 0, ["auto"], id="cpu-machine"),
        pytest.param({}, 1, ["auto"], id="one-gpu"),
        pytest.param({}, 2, ["cuda:0", "cuda:1"], id="two-gpus-auto"),
        pytest.param({"CARPOOL_DEVICE": "cuda"}, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"], id="cuda-all"),
        pytest.param({"CARPOOL_DEVICE": "cuda:1"}, 4, ["cuda:1"], id="one-named-gpu"),
        pytest.param({"CARPOOL_DEVICE": "cpu"}, 2, ["cpu"], id="cpu-on-a-gpu-node"),
        pytest.param({"CARPOOL_DEVICES": "cuda:0, cuda:2"}, 4, ["cuda:0", "cuda:2"], id="explicit"),
        pytest.param({"CARPOOL_DEVICES": "cpu,cpu"}, 0, ["cpu", "cpu"], id="two-cpu-replicas"),
    ],
)
def test_placement(env: dict[str, str], cuda: int, expected: list[str]) -> None:
    assert ServerSettings.from_env(env).placement(cuda) == expected


@pytest.mark.parametrize("raw", ["gpu0", "cuda:", "cpu,,cpu", "cuda:x"])
def test_a_bad_device_list_is_refused_with_the_bad_value(raw: str) -> None:
    with pytest.raises(ValueError, match="CARPOOL_DEVICES: each device must be cpu, cuda or cuda:N"):
        ServerSettings.from_env({"CARPOOL_DEVICES": raw})


def test_device_labels_tell_repeated_devices_apart() -> None:
    assert device_labels(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert device_labels(["cpu", "cpu", "cuda:0"]) == ["cpu#0", "cpu#1", "cuda:0"]


async def test_a_pod_on_two_devices_serves_from_both_and_reports_each(tiny_models_dir: Path) -> None:
    settings = tiny_settings(tiny_models_dir, devices=["cpu", "cpu"])
    texts = tinybert.word_texts(240, seed=5, max_words=12)
    reference = hf.HFClassifier("tiny", tiny_models_dir / "tiny", device="cpu", max_length=32)
    reference.load()
    async with serve_app(settings) as pod:
        status = (await pod.client.get("/models/status")).json()
        entries = status["models"] if isinstance(status, dict) else status
        for entry in entries:
            assert entry["devices"] == ["cpu#0", "cpu#1"] and entry["placement"].startswith("replicated")
        assert (await pod.client.get("/health")).status_code == 200

        async def ask(text: str) -> dict[str, object]:
            response = await pod.client.post("/predict", json={"text": text, "models": ["tiny"]})
            assert response.status_code == 200, response.text
            answer: dict[str, object] = response.json()
            return answer

        answers = await asyncio.gather(*(ask(text) for text in texts))
        for text, body in zip(texts, answers, strict=True):
            expected = reference.predict_batch([reference.encode(text)])[0]
            prediction = body["predictions"]["tiny"]  # type: ignore[index]
            assert prediction["label"] == expected.label
            assert prediction["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)

        stats = (await pod.client.get("/batching/stats")).json()
        assert stats["devices"] == ["cpu#0", "cpu#1"]
        devices = stats["models"]["tiny"]["devices"]
        assert devices["cpu#0"]["requests"] + devices["cpu#1"]["requests"] >= len(texts)
        assert devices["cpu#0"]["batches"] > 0 and devices["cpu#1"]["batches"] > 0, devices
        scraped = (await pod.client.get("/metrics")).text
        assert 'carpool_batch_size_count{device="cpu#0",model="tiny"}' in scraped
        assert 'carpool_batch_size_count{device="cpu#1",model="tiny"}' in scraped
        pending = [asyncio.ensure_future(pod.pool.predict(text, ["tiny"])) for text in texts[:60]]
        await asyncio.sleep(0)  # all queued; leaving the block drains the pod
    done = await asyncio.gather(*pending)  # the pod drained: everything queued was answered
    assert [answer["tiny"][0].label for answer in done] == [
        reference.predict_batch([reference.encode(text)])[0].label for text in texts[:60]
    ]

"""The bodies of /health, /batching/stats and /models/status, shaped from a real pool of EchoModels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from serving import reports
from serving.batching.engine import BatchEngine
from serving.models.fake import EchoModel
from serving.pool import ModelPool, Served
from serving.settings import BatchingConfig
from tests.support.models import BrokenModel

pytestmark = pytest.mark.unit


class DescribedModel(EchoModel):
    """An EchoModel that says what it runs on, as the ONNX runtime does."""

    def describe(self) -> dict[str, Any]:
        return {"runtime": "echo", "runtime_reason": "a test stand-in"}


CARD = {"name": "a_trained", "base": "a", "metrics": {"macro_f1": 0.9}, "trained_at": "t", "notes": "long"}


@pytest.fixture
async def pool() -> AsyncIterator[ModelPool]:
    config = BatchingConfig.model_validate({"strategy": "adaptive", "max_batch_size": 8})
    served = [
        Served(BatchEngine(EchoModel("a"), config), path="/models/a", untrained_head=True),
        Served(BatchEngine(DescribedModel("a_trained"), config), path="/models/t", card=CARD, kind="trained"),
        Served(BatchEngine(BrokenModel("broken"), config), path="/nowhere"),
    ]
    pool = ModelPool(served, config)
    yield pool
    await pool.drain()


async def test_health_is_unavailable_until_every_model_is_alive_and_says_why(pool: ModelPool) -> None:
    assert reports.health(pool) == {
        "status": "unavailable",
        "models": {name: {"state": "new", "alive": False} for name in ("a", "a_trained", "broken")},
    }
    await pool.start_loading()
    body = reports.health(pool)
    assert body["status"] == "unavailable"
    assert body["models"]["a"] == {"state": "ready", "alive": True}
    assert body["models"]["broken"] == {
        "state": "failed",
        "alive": False,
        "error": "OSError: no weights in /nowhere",
    }


async def test_health_is_ok_when_every_model_is_alive() -> None:
    pool = ModelPool.from_models([EchoModel("a"), EchoModel("b")], BatchingConfig.model_validate({}))
    await pool.start_loading()
    try:
        assert reports.health(pool) == {
            "status": "ok",
            "models": {"a": {"state": "ready", "alive": True}, "b": {"state": "ready", "alive": True}},
        }
    finally:
        await pool.drain()


async def test_stats_hold_the_config_in_force_its_hash_and_each_engines_figures(pool: ModelPool) -> None:
    await pool.start_loading()
    await pool.predict("count me", ["a"])
    body = reports.stats(pool)
    assert body["config"] == pool.config.model_dump(mode="json")
    assert body["config_hash"] == pool.config.config_hash()
    assert (body["strategy"], body["effective_strategy"]) == ("adaptive", "adaptive")
    assert body["uptime_s"] >= 0 and "cpu" in body["system"] and "gpus" not in body["system"]
    assert list(body["models"]) == ["a", "a_trained", "broken"]
    assert body["models"]["a"]["requests"]["completed"] == 1
    assert body["models"]["a"]["adaptive"]["mode"] == "dispatch_at_once"
    pool.configure({"enable": False})
    after = reports.stats(pool)
    assert after["config_hash"] != body["config_hash"] and after["effective_strategy"] == "single_request"
    assert after["models"]["a"]["mode"]["reason"] == "batching disabled (enable=false)"


async def test_status_describes_each_model_in_the_pools_order(pool: ModelPool) -> None:
    await pool.start_loading()
    entries = reports.status(pool)
    assert [entry["name"] for entry in entries] == ["a", "a_trained", "broken"]
    base, trained, broken = entries
    assert base == {
        "name": "a",
        "kind": "base",
        "path": "/models/a",
        "device": "cpu",
        "dtype": "none",
        "torch_threads": None,
        "torch_threads_reason": None,
        "labels": ["echo"],
        "state": "ready",
        "load_seconds": base["load_seconds"],
        "warm": True,
        "queue_size": 0,
        "head": "untrained: seeded random classification head; run `carpool train` for minilm_trained",
    }
    assert base["load_seconds"] >= 0
    assert trained["kind"] == "trained"
    assert trained["card"] == {k: CARD[k] for k in ("name", "base", "metrics", "trained_at")}  # not "notes"
    assert (trained["runtime"], trained["runtime_reason"]) == ("echo", "a test stand-in")
    assert "head" not in trained
    assert (broken["state"], broken["warm"], broken["load_seconds"]) == ("failed", False, None)
    assert broken["error"] == "OSError: no weights in /nowhere"

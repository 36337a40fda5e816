"""`ModelPool`: the models of a pod behind their engines, loading, fan-out, lanes and config updates."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from serving import errors
from serving.batching.engine import EngineState
from serving.models.base import Model
from serving.models.fake import EchoModel
from serving.pool import ModelPool
from serving.settings import BatchingConfig
from tests.support.models import BrokenModel, GatedModel, until_running

PoolFactory = Callable[..., Any]

pytestmark = pytest.mark.unit


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    pools: list[ModelPool] = []

    async def make(models: Sequence[Model], *, load: bool = True, **changes: Any) -> ModelPool:
        pool = ModelPool.from_models(models, BatchingConfig.model_validate(changes), max_text_chars=50)
        pools.append(pool)
        if load:
            await pool.start_loading()
        return pool

    yield make
    for pool in pools:
        for served in pool.served.values():
            if isinstance(served.engine.model, GatedModel):
                served.engine.model.gate.set()
        await pool.drain()


async def test_the_pool_is_ready_only_once_every_model_is_loaded(make_pool: PoolFactory) -> None:
    pool = await make_pool([EchoModel("a"), EchoModel("b")], load=False)
    assert not pool.ready
    with pytest.raises(errors.ModelNotReady, match="model 'a' is new"):
        await pool.predict("hi", ["a"])
    await pool.start_loading()
    assert pool.ready
    assert {s.engine.state for s in pool.served.values()} == {EngineState.READY}


async def test_a_model_that_cannot_load_keeps_the_pool_unready_and_the_others_serving(
    make_pool: PoolFactory,
) -> None:
    pool = await make_pool([EchoModel("a"), BrokenModel("broken")])
    assert not pool.ready
    assert pool.served["broken"].engine.state is EngineState.FAILED
    answers = await pool.predict("still served", ["a"])
    assert answers["a"][0].label == "still served"


async def test_every_model_runs_on_the_one_model_thread(make_pool: PoolFactory) -> None:
    a, b = EchoModel("a"), EchoModel("b")
    pool = await make_pool([a, b])
    await pool.predict("both of you", ["a", "b"])
    assert len(a.threads | b.threads) == 1


def test_kinds_come_from_the_trained_suffix() -> None:
    pool = ModelPool.from_models([EchoModel("x"), EchoModel("x_trained")], BatchingConfig.model_validate({}))
    assert {name: s.kind for name, s in pool.served.items()} == {"x": "base", "x_trained": "trained"}
    assert pool.resolve(None) == ["x"]
    assert pool.resolve(None, trained_only=True) == ["x_trained"]


async def test_a_request_naming_several_models_waits_for_all(make_pool: PoolFactory) -> None:
    pool = await make_pool([EchoModel("a"), EchoModel("b", delay_s=0.2)])
    answers = await pool.predict("hello", ["a", "b"])
    assert {name: prediction.label for name, (prediction, _) in answers.items()} == {
        "a": "hello",
        "b": "hello",
    }
    assert answers["b"][1] >= 0.2 > answers["a"][1]  # each model's own latency


async def test_names_and_texts_are_checked_before_anything_is_queued(make_pool: PoolFactory) -> None:
    pool = await make_pool([EchoModel("a")])
    with pytest.raises(errors.UnknownModel, match="unknown model 'nope'; this pod serves a"):
        pool.resolve(["nope"])
    with pytest.raises(errors.EmptyText):
        await pool.predict("  ", ["a"])
    with pytest.raises(errors.TextTooLong, match="text has 51 characters; the limit is 50"):
        await pool.predict("x" * 51, ["a"])
    with pytest.raises(errors.TextTooLong, match="text has 51 characters; the limit is 50"):
        pool.submit("a", "x" * 51)
    assert pool.served["a"].engine.model.batches == []  # type: ignore[attr-defined]


async def test_one_full_queue_refuses_the_whole_request_and_withdraws_what_it_queued(
    make_pool: PoolFactory,
) -> None:
    gated = GatedModel()
    other = EchoModel("other")
    pool = await make_pool([other, gated], strategy="single_request", max_queue_size=1)
    running = pool.submit("gated", "on the model")
    await until_running(gated)
    waiting = pool.submit("gated", "fills the queue")
    with pytest.raises(errors.QueueFull):
        await pool.predict("refused", ["other", "gated"])
    await asyncio.sleep(0.05)
    assert all("refused" not in batch for batch in other.batches)  # withdrawn before it ran
    gated.gate.set()
    assert [(await f).label for f in (running, waiting)] == ["on the model", "fills the queue"]


async def test_waiting_for_room_queues_a_request_a_full_queue_would_refuse(make_pool: PoolFactory) -> None:
    gated = GatedModel()
    pool = await make_pool([gated], strategy="single_request", max_queue_size=1)
    first = pool.submit("gated", "first")
    await until_running(gated)
    second = pool.submit("gated", "second")
    later = asyncio.ensure_future(pool.predict("later", ["gated"], wait_for_room=math.inf))
    await asyncio.sleep(0.02)
    assert not later.done()
    gated.gate.set()
    assert (await later)["gated"][0].label == "later"
    assert [(await f).label for f in (first, second)] == ["first", "second"]


async def test_a_deadline_answers_504_when_the_batch_has_not_left(make_pool: PoolFactory) -> None:
    gated = GatedModel()
    pool = await make_pool([gated], strategy="single_request")
    pool.submit("gated", "on the model")
    await until_running(gated)
    with pytest.raises(errors.DeadlineExceeded):
        await pool.predict("late", ["gated"], timeout_s=0.02)
    gated.gate.set()


async def test_bulk_requests_ride_the_bulk_lane(make_pool: PoolFactory) -> None:
    gated = GatedModel()
    pool = await make_pool([gated], strategy="single_request", max_queue_size=8)
    pool.submit("gated", "on the model")
    await until_running(gated)
    bulk = [pool.submit("gated", f"bulk {i}", bulk=True) for i in range(2)]
    interactive = pool.submit("gated", "interactive")
    gated.gate.set()
    await asyncio.gather(interactive, *bulk)
    # Interactive first; the bulk items, a list's items, then ride together even under single_request.
    assert [list(batch) for batch in gated.batches[1:]] == [["interactive"], ["bulk 0", "bulk 1"]]


async def test_configure_applies_to_every_engine_and_a_bad_change_to_none(make_pool: PoolFactory) -> None:
    pool = await make_pool([EchoModel("a"), EchoModel("b")])
    config = pool.configure({"strategy": "batch_optimized", "max_batch_size": 4})
    assert pool.config == config and config.max_batch_size == 4
    assert {s.engine.config for s in pool.served.values()} == {config}
    with pytest.raises(errors.InvalidConfig, match="min_batch_size"):
        pool.configure({"min_batch_size": 8})
    assert pool.config == config
    assert {s.engine.config for s in pool.served.values()} == {config}


async def test_drain_answers_what_waits_then_stops_every_engine(make_pool: PoolFactory) -> None:
    pool = await make_pool(
        [EchoModel("a"), EchoModel("b")], strategy="batch_optimized", max_wait_time_ms=1000
    )
    pending = [pool.submit(name, "held for a batch") for name in ("a", "b")]
    await pool.drain()
    assert [(await f).label for f in pending] == ["held for a batch"] * 2
    assert {s.engine.state for s in pool.served.values()} == {EngineState.STOPPED}
    assert not pool.ready


async def test_hurry_sends_held_batches_at_once(make_pool: PoolFactory) -> None:
    pool = await make_pool([EchoModel("a")], strategy="batch_optimized", max_wait_time_ms=1000)
    held = pool.submit("a", "held")
    await asyncio.sleep(0.02)
    assert not held.done()
    pool.hurry()
    assert (await asyncio.wait_for(held, 0.5)).label == "held"

"""The batching engine with EchoModel, on fake loop time (looptime) where timing matters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from serving import errors
from serving.batching.engine import BatchEngine, EngineState
from serving.batching.pending import BULK, INTERACTIVE
from serving.models.fake import EchoModel
from serving.settings import BatchingConfig
from tests.support.models import BrokenModel, GatedModel, ShortModel, until_running

pytestmark = pytest.mark.unit


def config(**changes: Any) -> BatchingConfig:
    return BatchingConfig.model_validate(changes)


EngineFactory = Callable[..., Any]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    engines: list[BatchEngine] = []

    async def make(model: EchoModel | None = None, **changes: Any) -> BatchEngine:
        engine = BatchEngine(model or EchoModel(), config(**changes))
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        if isinstance(engine.model, GatedModel):
            engine.model.gate.set()
        await engine.drain()


@pytest.mark.looptime
@pytest.mark.parametrize("strategy", ["single_request", "adaptive", "batch_optimized"])
async def test_lone_request_goes_at_once_except_batch_optimized(
    make_engine: EngineFactory, strategy: str
) -> None:
    engine = await make_engine(strategy=strategy, max_wait_time_ms=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    prediction = await engine.submit("hello")
    assert prediction.label == "hello"
    expected = 0.050 if strategy == "batch_optimized" else 0.0
    assert loop.time() - started == pytest.approx(expected)


@pytest.mark.parametrize("strategy", ["single_request", "adaptive", "batch_optimized"])
async def test_every_request_gets_its_own_result(make_engine: EngineFactory, strategy: str) -> None:
    engine = await make_engine(strategy=strategy, max_batch_size=8, max_wait_time_ms=1)
    texts = [f"request {i} " + "word " * (i % 13) for i in range(200)]
    results = await asyncio.gather(*(engine.submit(text) for text in texts))
    assert [r.label for r in results] == texts


async def test_batch_never_exceeds_max_batch_size(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="batch_optimized", max_batch_size=4, max_wait_time_ms=0)
    first = engine.submit("first")
    await until_running(model)
    rest = [engine.submit(f"r{i}") for i in range(17)]
    model.gate.set()
    await asyncio.gather(first, *rest)
    assert max(len(batch) for batch in model.batches) == 4
    assert sorted(text for batch in model.batches for text in batch) == sorted(
        ["first"] + [f"r{i}" for i in range(17)]
    )


@pytest.mark.looptime
async def test_full_batch_leaves_without_waiting(make_engine: EngineFactory) -> None:
    model = EchoModel()
    engine = await make_engine(model, strategy="batch_optimized", max_batch_size=4, max_wait_time_ms=100)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(engine.submit(f"t{i}") for i in range(4)))
    assert loop.time() == pytest.approx(0.0)
    assert model.batches == [["t0", "t1", "t2", "t3"]]


@pytest.mark.looptime
async def test_partial_batch_leaves_after_max_wait(make_engine: EngineFactory) -> None:
    model = EchoModel()
    engine = await make_engine(model, strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=10)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(engine.submit(f"t{i}") for i in range(3)))
    assert loop.time() == pytest.approx(0.010)
    assert model.batches == [["t0", "t1", "t2"]]


@pytest.mark.looptime
async def test_min_batch_size_holds_a_partial_batch_at_most_one_more_wait(make_engine: EngineFactory) -> None:
    model = EchoModel()
    engine = await make_engine(
        model, strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=10, min_batch_size=4
    )
    loop = asyncio.get_running_loop()
    await asyncio.gather(engine.submit("a"), engine.submit("b"))
    assert loop.time() == pytest.approx(0.020)
    assert model.batches == [["a", "b"]]


@pytest.mark.looptime
async def test_min_batch_size_met_after_max_wait_leaves_at_once(make_engine: EngineFactory) -> None:
    model = EchoModel()
    engine = await make_engine(
        model, strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=10, min_batch_size=4
    )
    loop = asyncio.get_running_loop()
    early = [engine.submit("a"), engine.submit("b")]
    await asyncio.sleep(0.015)
    late = [engine.submit("c"), engine.submit("d")]
    await asyncio.gather(*early, *late)
    assert loop.time() == pytest.approx(0.015)
    assert model.batches == [["a", "b", "c", "d"]]


async def test_reconfigure_applies_at_the_next_batch_and_loses_nothing(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request")
    first = engine.submit("first")
    await until_running(model)
    queued = [engine.submit(f"q{i}") for i in range(8)]
    engine.reconfigure(config(strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=0))
    assert engine.config.strategy.value == "batch_optimized"
    model.gate.set()
    results = await asyncio.gather(first, *queued)
    assert [r.label for r in results] == ["first"] + [f"q{i}" for i in range(8)]
    assert model.batches == [["first"], [f"q{i}" for i in range(8)]]


async def test_full_queue_raises_queue_full(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request", max_queue_size=3)
    running = engine.submit("running")
    await until_running(model)
    waiting = [engine.submit(f"w{i}") for i in range(3)]
    with pytest.raises(errors.QueueFull, match="max_queue_size 3") as caught:
        engine.submit("one too many")
    assert caught.value.retry_after_s > 0  # the queue ahead at the estimated drain rate
    assert engine.stats.overflow == 1
    assert engine.describe()["queue"]["overflow_rate_rps"] == pytest.approx(0.1, abs=0.05)  # 1 in 10 s
    model.gate.set()
    assert [r.label for r in await asyncio.gather(running, *waiting)] == ["running", "w0", "w1", "w2"]


async def test_a_failing_item_fails_alone(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=0)
    first = engine.submit("first")
    await until_running(model)
    neighbours = [engine.submit("left"), engine.submit("boom here"), engine.submit("right")]
    model.gate.set()
    results = await asyncio.gather(first, *neighbours, return_exceptions=True)
    assert [getattr(r, "label", None) for r in results] == ["first", "left", None, "right"]
    assert isinstance(results[2], errors.InferenceFailed)
    assert "cannot process 'boom'" in str(results[2])
    assert ["left", "boom here", "right"] in model.batches  # tried together first, then one by one


async def test_text_the_model_refuses_fails_at_submit(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    with pytest.raises(errors.EmptyText):
        engine.submit("   ")
    assert engine.queue_size == 0


async def test_cancelled_requests_are_skipped_before_the_model_runs(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=0)
    first = engine.submit("first")
    await until_running(model)
    kept, dropped = engine.submit("kept"), engine.submit("dropped")
    dropped.cancel()
    model.gate.set()
    assert (await first).label == "first"
    assert (await kept).label == "kept"
    assert all("dropped" not in batch for batch in model.batches)
    assert engine.stats.cancelled == 1


async def test_wrong_number_of_predictions_is_reported(make_engine: EngineFactory) -> None:
    engine = await make_engine(ShortModel(), strategy="single_request")
    with pytest.raises(errors.InferenceFailed, match="returned 0 predictions for 1 texts"):
        await engine.submit("hello")


@pytest.mark.looptime
async def test_drain_answers_queued_requests_without_waiting_for_the_batch_to_fill() -> None:
    engine = BatchEngine(
        EchoModel(), config(strategy="batch_optimized", max_batch_size=32, max_wait_time_ms=5000)
    )
    await engine.start()
    loop = asyncio.get_running_loop()
    pending = [engine.submit(f"t{i}") for i in range(5)]
    await asyncio.sleep(0)
    await engine.drain()
    assert [(await p).label for p in pending] == [f"t{i}" for i in range(5)]
    assert loop.time() < 1.0
    assert engine.state is EngineState.STOPPED
    with pytest.raises(errors.ModelNotReady, match="stopped"):
        engine.submit("late")


async def test_model_runs_only_on_its_own_thread(make_engine: EngineFactory) -> None:
    model = EchoModel("echo")
    engine = await make_engine(model)
    await asyncio.gather(*(engine.submit(f"t{i}") for i in range(20)))
    assert len(model.threads) == 1
    assert next(iter(model.threads)).startswith("carpool-model-echo")


async def test_requests_before_start_are_refused() -> None:
    engine = BatchEngine(EchoModel(), config())
    with pytest.raises(errors.ModelNotReady, match="'echo' is new"):
        engine.submit("hello")
    assert not engine.alive


async def test_a_model_that_fails_to_load_reports_why() -> None:
    engine = BatchEngine(BrokenModel(), config())
    with pytest.raises(OSError):
        await engine.start()
    assert engine.state is EngineState.FAILED
    assert engine.error == "OSError: no weights in /nowhere"
    with pytest.raises(errors.ModelNotReady, match="no weights"):
        engine.submit("hello")


async def test_describe_reports_the_strategy_in_effect_and_the_figures(make_engine: EngineFactory) -> None:
    engine = await make_engine(strategy="adaptive", max_batch_size=8)
    await asyncio.gather(*(engine.submit(f"t {i}") for i in range(10)))
    report = engine.describe()
    assert report["strategy"] == "adaptive"
    assert report["adaptive"]["mode"] in {"dispatch_at_once", "hold_for_batch"}
    assert report["adaptive"]["reason"]
    assert report["requests"]["completed"] == 10
    queue = report["queue"]
    assert queue == {
        "size": 0,
        "bulk": 0,
        "peak": queue["peak"],
        "max": 256,
        "bulk_limit": 192,
        "overflow": 0,
        "overflow_rate_rps": 0.0,
        "drain_rate_rps": queue["drain_rate_rps"],
    }
    assert queue["drain_rate_rps"] > 0
    assert 1 <= report["queue"]["peak"] <= 10
    assert report["avg_batch_size"] >= 1
    engine.reconfigure(config(enable=False, strategy="batch_optimized"))
    report = engine.describe()
    assert report["effective_strategy"] == "single_request"
    assert report["mode"]["reason"] == "batching disabled (enable=false)"


async def test_adaptive_choice_in_describe_comes_from_its_last_pick(make_engine: EngineFactory) -> None:
    engine = await make_engine(strategy="adaptive")
    assert engine.describe()["adaptive"] == {
        "mode": "dispatch_at_once",
        "reason": "no traffic yet: dispatching at once",
    }
    await engine.submit("one")
    after = engine.describe()["adaptive"]
    assert after["mode"] == "dispatch_at_once" and "below load_threshold" in after["reason"]
    engine.reconfigure(config(strategy="adaptive", max_batch_size=4))  # a new policy: no pick yet
    assert engine.describe()["adaptive"]["reason"] == "no traffic yet: dispatching at once"


async def test_the_policy_sees_the_cost_model_fitted_from_the_batches_run(make_engine: EngineFactory) -> None:
    engine = await make_engine(strategy="batch_optimized")
    before = engine.signals(0.0).cost
    await asyncio.gather(*(engine.submit(f"text {i}") for i in range(4)))
    assert engine.signals(0.0).cost is engine.cost.model
    assert engine.cost.samples > 0 and engine.signals(0.0).cost != before


async def full_queue_with_a_waiting_put(
    make_engine: EngineFactory, model: GatedModel
) -> tuple[BatchEngine, list[asyncio.Future[Any]]]:
    """One request on the gated model thread, one filling a queue of one, and one `put` waiting for room."""
    engine = await make_engine(model, strategy="single_request", max_queue_size=1)
    running = engine.submit("running")
    await until_running(model)
    queued = engine.submit("queued")
    late = asyncio.ensure_future(engine.put("late"))
    await asyncio.sleep(0.01)
    return engine, [running, queued, late]


async def test_put_waits_for_room_instead_of_refusing(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine, (running, queued, late) = await full_queue_with_a_waiting_put(make_engine, model)
    assert not late.done()  # waiting for room, not refused
    model.gate.set()
    assert [(await f).label for f in (running, queued, await late)] == ["running", "queued", "late"]
    assert engine.stats.overflow == 0


class BrokenPolicy:
    def pick(self, waiting: object, signals: object) -> object:
        raise ZeroDivisionError("bad arithmetic in a policy")


async def test_a_broken_batching_loop_fails_waiting_requests_instead_of_hanging_them() -> None:
    engine = BatchEngine(EchoModel(), config())
    await engine.start()
    engine._policy = BrokenPolicy()  # type: ignore[assignment]
    with pytest.raises(errors.ModelNotReady, match="batching loop stopped: ZeroDivisionError"):
        await engine.submit("hello")
    assert engine.state is EngineState.FAILED and not engine.alive
    await engine.drain()


class BrokenObserver:
    def on_batch(self, model: str, size: int, waits: Sequence[float], inference_s: float) -> None:
        raise ValueError("a metrics backend that fails")


async def test_a_batch_whose_bookkeeping_breaks_fails_its_riders_instead_of_hanging_them() -> None:
    engine = BatchEngine(EchoModel(), config(), observer=BrokenObserver())
    await engine.start()
    with pytest.raises(errors.ModelNotReady, match="batching loop stopped: ValueError"):
        await asyncio.wait_for(engine.submit("hello"), 5)
    await engine.drain()


async def test_callers_waiting_for_room_see_a_broken_loop(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine, (running, queued, late) = await full_queue_with_a_waiting_put(make_engine, model)
    engine._policy = BrokenPolicy()  # type: ignore[assignment]
    model.gate.set()
    assert (await running).label == "running"
    with pytest.raises(errors.ModelNotReady):
        await queued
    with pytest.raises(errors.ModelNotReady):
        await asyncio.wait_for(late, 5)


# -- deadlines and lanes ------------------------------------------------------------------------


async def test_a_request_past_its_deadline_is_answered_504_and_never_reaches_the_model(
    make_engine: EngineFactory,
) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="batch_optimized", max_batch_size=8, max_wait_time_ms=0)
    first = engine.submit("first")
    await until_running(model)
    late = engine.submit("late", timeout_s=0.05)
    patient = engine.submit("patient", timeout_s=30)
    with pytest.raises(errors.DeadlineExceeded) as expired:
        await late
    assert engine.queue_size == 1  # out of the queue at its deadline, not when the model is free
    model.gate.set()
    assert [(await first).label, (await patient).label] == ["first", "patient"]
    assert all("late" not in batch for batch in model.batches)
    assert 50 <= expired.value.extra["waited_ms"] < 2000 and expired.value.extra["timeout_ms"] == 50
    assert "dropped before reaching the model" in expired.value.message
    assert engine.stats.expired == 1
    assert engine.describe()["requests"]["expired"] == 1


async def test_a_deadline_does_not_stop_a_batch_already_on_the_model(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request")
    running = engine.submit("running", timeout_s=0.05)
    await until_running(model)
    await asyncio.sleep(0.1)
    model.gate.set()
    assert (await running).label == "running"
    assert engine.stats.expired == 0


async def test_bulk_is_refused_first_a_quarter_of_the_queue_stays_interactive(
    make_engine: EngineFactory,
) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request", max_queue_size=8)
    running = engine.submit("running")
    await until_running(model)
    bulk = [engine.submit(f"b{i}", lane=BULK) for i in range(6)]
    assert engine.bulk_limit() == 6
    with pytest.raises(errors.QueueFull):
        engine.submit("b6", lane=BULK)
    interactive = [engine.submit(f"i{i}") for i in range(2)]
    with pytest.raises(errors.QueueFull):
        engine.submit("i2")
    waiting_bulk = asyncio.ensure_future(engine.put("b7"))  # /predict/batch waits for room instead
    await asyncio.sleep(0.05)
    assert not waiting_bulk.done()
    model.gate.set()
    labels = [p.label for p in await asyncio.gather(running, *bulk, *interactive, await waiting_bulk)]
    assert sorted(labels) == sorted(["running", *(f"b{i}" for i in range(6)), "i0", "i1", "b7"])


async def test_batches_fill_from_interactive_first_without_starving_bulk(make_engine: EngineFactory) -> None:
    model = GatedModel()
    # max_batch_size 1: bulk items run alone too (with a larger cap they ride together, below).
    engine = await make_engine(model, strategy="single_request", max_queue_size=16, max_batch_size=1)
    running = engine.submit("running")
    await until_running(model)
    bulk = [engine.submit(f"b{i}", lane=BULK) for i in range(3)]
    interactive = [engine.submit(f"i{i}") for i in range(9)]
    model.gate.set()
    await asyncio.gather(running, *bulk, *interactive)
    order = [batch[0] for batch in model.batches]
    # Interactive first, but never more than BULK_MAX_PASSED (3) batches in a row while bulk waits.
    assert order == ["running", "i0", "i1", "i2", "b0", "i3", "i4", "i5", "b1", "i6", "i7", "i8", "b2"]


async def test_single_request_runs_waiting_bulk_items_together_and_interactive_ones_alone(
    make_engine: EngineFactory,
) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request", max_queue_size=16, max_batch_size=4)
    running = engine.submit("running")
    await until_running(model)
    bulk = [engine.submit(f"b{i}", lane=BULK) for i in range(6)]
    interactive = [engine.submit(f"i{i}") for i in range(4)]
    model.gate.set()
    answers = await asyncio.gather(running, *bulk, *interactive)
    assert [a.label for a in answers] == [
        "running",
        *(f"b{i}" for i in range(6)),
        *(f"i{i}" for i in range(4)),
    ]
    assert [list(batch) for batch in model.batches] == [
        ["running"],
        ["i0"],
        ["i1"],
        ["i2"],
        ["b0", "b1", "b2", "b3"],
        ["i3"],
        ["b4", "b5"],
    ]


async def test_bulk_waiting_for_room_past_its_deadline_is_answered_504(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request", max_queue_size=4)
    running = engine.submit("running")
    await until_running(model)
    queued = [engine.submit(f"b{i}", lane=BULK) for i in range(3)]
    with pytest.raises(errors.DeadlineExceeded, match="waited 50 ms for room"):
        await engine.put("no room", timeout_s=0.05)
    model.gate.set()
    await asyncio.gather(running, *queued)
    assert engine.stats.expired == 1


async def test_waiters_for_room_get_in_first_come_first_in_and_newcomers_wait_behind(
    make_engine: EngineFactory,
) -> None:
    """/predict's wait in line: as batches leave a full queue, the first waiters take the places,
    and a request that finds others waiting (room or not) waits behind them: nobody jumps the line."""
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request", max_queue_size=1)
    order: list[str] = []
    running = engine.submit("running")
    await until_running(model)
    queued = engine.submit("queued")
    waiting = []
    for name in ("w1", "w2", "w3"):
        waiting.append(asyncio.ensure_future(engine.put(name, lane=INTERACTIVE, room_s=10.0)))
        await asyncio.sleep(0.01)
    assert not engine.has_room() and not any(w.done() for w in waiting)
    with pytest.raises(errors.QueueFull):  # no waiting allowed: refused, the line stays as it is
        engine.submit("impatient")
    for future in (running, queued):
        future.add_done_callback(lambda f: order.append(f.result().label))
    model.gate.set()
    for waiter in waiting:
        (await waiter).add_done_callback(lambda f: order.append(f.result().label))
    await asyncio.wait_for(asyncio.gather(running, queued, *(w.result() for w in waiting)), 5)
    assert order == ["running", "queued", "w1", "w2", "w3"]
    assert engine.stats.overflow == 1  # the impatient one only


async def test_a_wait_for_room_that_finds_none_is_refused_429_with_advice(make_engine: EngineFactory) -> None:
    model = GatedModel()
    engine = await make_engine(model, strategy="single_request", max_queue_size=1)
    running = engine.submit("running")
    await until_running(model)
    queued = engine.submit("queued")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(errors.QueueFull, match="1 requests waiting") as refused:
        await engine.put("late", lane=INTERACTIVE, room_s=0.05)
    assert loop.time() - started >= 0.045  # it waited its time in line first
    assert refused.value.retry_after_s > 0 and engine.stats.overflow == 1
    assert not engine._someone_waiting(INTERACTIVE)  # out of line once refused
    model.gate.set()
    await asyncio.gather(running, queued)


async def test_retry_after_follows_the_measured_drain_rate(make_engine: EngineFactory) -> None:
    model = EchoModel(delay_s=0.02)
    engine = await make_engine(model, strategy="single_request", max_queue_size=4)
    for i in range(10):
        await engine.submit(f"warm {i}")
    assert 20 < engine.stats.drain_rate < 60  # one request per 20 ms forward pass
    busy = [engine.submit("q0")]
    await asyncio.sleep(0.005)  # on the model
    busy += [engine.submit(f"q{i}") for i in range(1, 5)]  # four queued
    with pytest.raises(errors.QueueFull) as refused:
        engine.submit("refused")
    assert 0.05 < refused.value.retry_after_s < 0.25  # five ahead at about 50/s: about 0.1 s
    await asyncio.gather(*busy)

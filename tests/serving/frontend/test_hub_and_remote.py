"""HTTP workers and the model process, in one test process: the real hub, wire and RemotePool over
real Unix socket pairs, with EchoModel (which labels each text with the text itself)."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from serving import errors, reports
from serving.frontend import wire
from serving.frontend.hub import Hub
from serving.frontend.remote import RemotePool, handshake
from serving.metrics import Metrics
from serving.models.fake import EchoModel
from serving.pool import ModelPool
from serving.settings import BatchingConfig, ServerSettings

pytestmark = pytest.mark.unit


@dataclass
class Pod:
    pool: ModelPool
    hub: Hub
    workers: list[RemotePool]


async def _worker(hub: Hub) -> RemotePool:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    await hub.connect(ours)
    theirs.setblocking(True)
    remote = RemotePool(handshake(theirs))
    await remote.connect(theirs)
    return remote


@pytest.fixture
async def pod() -> AsyncIterator[Pod]:
    config = BatchingConfig.model_validate(
        {"strategy": "batch_optimized", "max_wait_time_ms": 2, "max_queue_size": 1024}
    )
    pool = ModelPool.from_models(
        [EchoModel("echo"), EchoModel("other")], config, metrics=Metrics(), max_text_chars=100
    )
    await pool.start_loading()
    settings = ServerSettings.model_validate({"admin_token": "t", "max_text_chars": 100})
    hub = Hub(pool, settings, workers=3)
    workers = [await _worker(hub) for _ in range(3)]
    try:
        yield Pod(pool, hub, workers)
    finally:
        await pool.drain()


async def test_tagged_texts_through_several_workers_each_get_their_own_answer(pod: Pod) -> None:
    texts = [f"request {i} from client {i % 7}" for i in range(600)]

    async def ask(i: int) -> tuple[str, dict[str, Any]]:
        worker = pod.workers[i % len(pod.workers)]
        names = ["echo"] if i % 5 else ["echo", "other"]  # some fan out to two models
        answers = await worker.predict(texts[i], names)
        return texts[i], {name: prediction.label for name, (prediction, _) in answers.items()}

    results = await asyncio.gather(*(ask(i) for i in range(len(texts))))
    for text, labels in results:
        assert set(labels.values()) == {text}
    stats = reports.stats(pod.pool)["models"]["echo"]
    assert stats["avg_batch_size"] > 1  # the workers' requests met in one queue and were batched


async def test_names_and_texts_are_checked_by_the_worker_with_the_pods_errors(pod: Pod) -> None:
    worker = pod.workers[0]
    assert worker.catalog.names == ["echo", "other"]
    with pytest.raises(errors.UnknownModel, match="unknown model 'nope'; this pod serves echo, other"):
        worker.catalog.resolve(["nope"])
    with pytest.raises(errors.TextTooLong, match="the limit is 100"):
        await worker.predict("x" * 101, ["echo"])
    with pytest.raises(errors.EmptyText):
        await worker.predict("   ", ["echo"])


async def test_a_full_queue_is_a_429_with_the_model_processs_retry_after(pod: Pod) -> None:
    await pod.workers[0].configure({"max_queue_size": 1, "max_wait_time_ms": 60_000, "min_batch_size": 2})
    first = asyncio.ensure_future(pod.workers[0].predict("one", ["echo"]))
    await asyncio.sleep(0.05)
    with pytest.raises(errors.QueueFull) as refused:
        await pod.workers[1].predict("two", ["echo"])
    assert refused.value.retry_after_s > 0  # the model process's estimate crossed the socket
    await pod.workers[2].configure({"max_queue_size": 8, "max_wait_time_ms": 1, "min_batch_size": 1})
    assert (await first)["echo"][0].label == "one"


async def test_config_stats_health_and_metrics_are_the_pods_whichever_worker_asks(pod: Pod) -> None:
    reply = await pod.workers[0].configure({"max_batch_size": 4})
    assert reply["config"]["max_batch_size"] == 4
    for worker in pod.workers:
        stats = await worker.stats()
        assert stats["config_hash"] == reply["config_hash"]
    with pytest.raises(errors.InvalidConfig, match="min_batch_size"):
        await pod.workers[1].configure({"min_batch_size": 5})

    ready, report = await pod.workers[2].health()
    assert ready and report["workers"] == {"expected": 3, "connected": 3}
    for i, worker in enumerate(pod.workers):
        await worker.predict(f"counted {i}", ["echo"])
        worker.record("/predict", {"echo": "ok"}, 0.001)
    await asyncio.sleep(0.05)  # records travel with the next frame
    text = (await pod.workers[0].metrics_text()).decode()
    assert 'carpool_requests_total{endpoint="/predict",model="echo",outcome="ok"} 3.0' in text
    status = await pod.workers[1].models_status()
    assert [entry["name"] for entry in status] == ["echo", "other"]


async def test_a_worker_missing_means_not_ready_and_stopping_means_not_ready(pod: Pod) -> None:
    extra = Hub(pod.pool, pod.hub.settings, workers=4)
    ready, report = extra.health()
    assert not ready and report["status"] == "unavailable"
    pod.hub.stopping = True
    ready, report = await pod.workers[0].health()
    assert not ready and report["status"] == "stopping"


async def test_when_the_model_process_goes_away_waiting_requests_get_503(pod: Pod) -> None:
    lost = asyncio.Event()
    worker = pod.workers[0]
    worker.on_lost = lost.set
    await worker.configure({"max_wait_time_ms": 60_000, "min_batch_size": 8})
    waiting = asyncio.ensure_future(worker.predict("never answered", ["echo"]))
    await asyncio.sleep(0.05)
    for link in list(pod.hub.links):
        assert link.outbox.transport is not None
        link.outbox.transport.close()
    await asyncio.wait_for(lost.wait(), 5)
    with pytest.raises(errors.ModelNotReady, match="model process is gone"):
        await waiting
    with pytest.raises(errors.ModelNotReady):
        await worker.predict("after", ["echo"])


def test_errors_cross_the_wire_as_the_same_class_status_and_body() -> None:
    sent = errors.QueueFull("full", retry_after_s=2.5, model="m")
    back = wire.error_from_wire(wire.error_to_wire(sent))
    assert isinstance(back, errors.QueueFull) and back.retry_after_s == 2.5
    assert back.body() == sent.body() and errors.status_for(back) == 429
    strange = wire.error_from_wire(("NoSuchError", "odd", {}, None))
    assert type(strange) is errors.CarpoolError and strange.message == "odd"


def test_frames_split_anywhere_arrive_whole_and_in_order() -> None:
    got: list[Any] = []
    reader = wire.FrameReader(got.extend)
    stream = wire.pack([(1, "a")]) + wire.pack([(2, "b" * 5000), (3, None)])
    for cut in range(0, len(stream), 7):
        reader.feed(stream[cut : cut + 7])
    assert got == [(1, "a"), (2, "b" * 5000), (3, None)]


async def test_a_deadline_and_a_lane_cross_to_the_model_process(pod: Pod) -> None:
    await pod.workers[0].configure({"max_wait_time_ms": 60_000, "min_batch_size": 2, "max_queue_size": 8})
    engine = pod.pool.served["echo"].engine
    try:
        with pytest.raises(errors.DeadlineExceeded) as expired:
            await pod.workers[1].predict("late", ["echo"], timeout_s=0.05)
        assert expired.value.extra["timeout_ms"] == 50 and expired.value.extra["waited_ms"] >= 50
        with pytest.raises(errors.DeadlineExceeded):  # fanned out to two models, through a task
            await pod.workers[1].predict("late too", ["echo", "other"], timeout_s=0.05)
        held = asyncio.ensure_future(
            pod.workers[2].predict("bulk", ["echo"], wait_for_room=math.inf, bulk=True)
        )
        await asyncio.sleep(0.05)
        assert engine.describe()["queue"]["bulk"] == 1
    finally:
        await pod.workers[0].configure({"max_wait_time_ms": 2, "min_batch_size": 1})
    assert (await held)["echo"][0].label == "bulk"
    assert engine.stats.expired == 2


async def test_a_request_to_a_full_model_waits_in_line_in_the_model_process(pod: Pod) -> None:
    """What /predict does: a full queue is waited on (in the model process, which frees the places)
    for up to `wait_for_room`; room within it is a prediction, none a 429 with its advice."""
    await pod.workers[0].configure({"max_queue_size": 1, "max_wait_time_ms": 60_000, "min_batch_size": 2})
    engine = pod.pool.served["echo"].engine
    first = asyncio.ensure_future(pod.workers[0].predict("one", ["echo"]))
    await asyncio.sleep(0.05)
    with pytest.raises(errors.QueueFull) as refused:
        await pod.workers[1].predict("gave up", ["echo"], wait_for_room=0.05)
    assert refused.value.retry_after_s > 0 and engine.stats.overflow == 1
    in_line = asyncio.ensure_future(pod.workers[1].predict("in line", ["echo"], wait_for_room=10.0))
    await asyncio.sleep(0.05)
    assert not in_line.done() and engine.queue_size == 1
    await pod.workers[2].configure({"max_queue_size": 8, "max_wait_time_ms": 1, "min_batch_size": 1})
    assert (await first)["echo"][0].label == "one"
    assert (await asyncio.wait_for(in_line, 5))["echo"][0].label == "in line"
    assert engine.stats.overflow == 1

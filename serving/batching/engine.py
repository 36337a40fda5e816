"""The batching engine of one model: a queue, a consumer task and the thread that runs the model.

Why this shape. A forward pass is the expensive, serial resource; everything else must keep it
busy without competing with it. So each model gets:

- a model thread (a single-worker executor, shared by every engine of a pod). It loads the model,
  warms it up and runs every forward pass; the event-loop thread never calls torch, so two OpenMP
  teams never compete.
- one queue of `Pending` requests in arrival order, filled by `submit()` from request handlers.
  Texts are tokenized there, without padding, so each request's length is known when batches are
  picked. A full queue raises `errors.QueueFull` (429 with Retry-After).
- one consumer task that sleeps on an `asyncio.Event` (no polling tick), wakes on an arrival or on
  the deadline the policy asked for, and lets the pure policy (`policies.py`) pick the next batch
  from everything waiting. The policy is re-read once per batch, so `reconfigure()` applies at the
  next batch boundary. The model thread's result comes back as one wake-up per batch, and futures
  are resolved only if still pending (a caller may have gone away); cancelled ones are dropped
  before the model runs.

Deadlines and lanes. A request may carry a timeout: a timer answers it 504 (`DeadlineExceeded`,
with the time it waited) and takes it out of the queue if its batch has not left by then, so an
expired request never reaches the model. Requests come in two lanes (`pending.INTERACTIVE`,
`pending.BULK`): bulk ones may fill the queue only to `bulk_limit()` (a quarter of it stays for
interactive requests, so under overload bulk is refused, or kept waiting for room, first), and
the policy fills batches from the interactive lane first without starving bulk (`policies.lanes`).

If a batch raises, its items are retried one by one on the model thread, so one bad item fails
alone and its neighbours still get their results. If it runs out of device memory (the model's
`is_out_of_memory`, or torch's OutOfMemoryError), it is split in halves instead, every request is
still answered, and the device's token cap (`memory.TokenCap`) comes down below the batch that
failed; on a GPU that cap is first learned at warm-up from measured peak memory.

Several devices. An engine may hold one replica of its model per device (`replica.Replica`): one
queue, one consumer, and each batch goes to whichever replica is free, so a free device takes the
next batch and batching stays global per model. With one replica the consumer awaits each batch,
exactly as it always has. Scheduling uses the loop clock (`loop.time()`,
so deadlines line up with `call_at`); measurements use `time.perf_counter()`, because uvloop's
loop clock only ticks in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from serving import errors
from serving.batching import cost, policies
from serving.batching.pending import BULK, INTERACTIVE, Pending
from serving.batching.replica import Replica
from serving.batching.stats import EngineStats
from serving.models.base import Encoded, Model, Prediction, WarmupSample
from serving.settings import BatchingConfig, Strategy

__all__ = ["BatchEngine", "BatchObserver", "EngineState"]

log = logging.getLogger("carpool.engine")


class EngineState(enum.StrEnum):
    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"
    STOPPED = "stopped"


class BatchObserver(Protocol):
    """Receives one call per batch (the metrics module implements it); `device` only when the
    engine has several devices. An observer may also have `on_out_of_memory(model, device)`,
    called for each batch that ran out of device memory."""

    def on_batch(
        self, model: str, size: int, waits: Sequence[float], inference_s: float, device: str = ""
    ) -> None: ...


Outcome = Prediction | BaseException


class BatchEngine:
    def __init__(
        self,
        model: Model,
        config: BatchingConfig,
        *,
        observer: BatchObserver | None = None,
        device_load: Any = None,
        executor: ThreadPoolExecutor | None = None,
        replicas: Sequence[Replica] = (),
    ) -> None:
        """`replicas`: one per device (the first's model is `model`); default: `model` on `executor`."""
        self.model = model
        self.name = model.name
        self.config = config
        self.state = EngineState.NEW
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.cost = cost.OnlineCost()
        self._policy = policies.for_config(config)
        self._choice: tuple[policies.Mode, str] | None = None  # adaptive's, from its last pick
        self._observer = observer
        self._device_load = device_load  # callable returning GPU utilisation 0..1, or None
        self._queue: list[Pending] = []
        self._wake = asyncio.Event()
        # callers of `put` waiting for room in a full queue, first come first in: (waiter, lane)
        self._waiting_room: deque[tuple[asyncio.Future[None], int]] = deque()
        # The model thread. A pod's engines share one (see `ModelPool`): torch must be called from
        # a single thread per process, or each calling thread gets an OpenMP team of its own and
        # the teams slow every forward pass, for good, by a third. Without one, the engine owns one.
        self.replicas = list(replicas) or [Replica(model, executor)]
        self._owned: list[ThreadPoolExecutor] = []  # model threads this engine made (none shared)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runs: set[asyncio.Task[None]] = set()  # batches on replicas (several devices only)
        self._broken: BaseException | None = None
        self._warm_samples: list[WarmupSample] = []
        self._draining = False
        self._hurry = False  # set at shutdown: no batch is held back, requests are still taken
        self._last_arrival: float | None = None
        self._bulk_passed = 0  # batches in a row that left without bulk while bulk waited
        self.stats = EngineStats(0.0)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm the model on its thread, then start consuming. Raises if loading fails."""
        self._loop = loop = asyncio.get_running_loop()
        self.stats = EngineStats(time.perf_counter())
        for replica in self.replicas:
            if replica.executor is None:
                replica.executor = ThreadPoolExecutor(1, thread_name_prefix=f"carpool-model-{self.name}")
                self._owned.append(replica.executor)
        self.state = EngineState.LOADING
        started = time.perf_counter()
        try:
            warmed = [
                await loop.run_in_executor(replica.executor, self._load_and_warm, replica)
                for replica in self.replicas
            ]
        except Exception as exc:
            self.state = EngineState.FAILED
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.name, self.error)
            for executor in self._owned:
                executor.shutdown(wait=False)
            raise
        self.load_seconds = time.perf_counter() - started
        samples = warmed[0]
        self.cost.reseed([(s.batch_size, s.padded_len, s.seconds) for s in samples])
        self._warm_samples = samples
        self._policy = policies.for_config(self.config)
        self._choice = None
        self._task = loop.create_task(self._consume(), name=f"carpool-batcher-{self.name}")
        self.state = EngineState.READY
        log.info("model %s ready in %.2f s on %s", self.name, self.load_seconds, self.model.device)

    def _load_and_warm(self, replica: Replica) -> list[WarmupSample]:
        """Model thread: load, verify and warm one replica, then learn its token cap."""
        model = replica.model
        model.load()
        verify = getattr(model, "verify", None)
        if callable(verify):
            verify()
        samples = model.warmup()
        self._learn_cap(replica, samples)
        return samples

    def _learn_cap(self, replica: Replica, samples: Sequence[WarmupSample]) -> None:
        """Model thread: the token cap from warm-up peaks and the memory free now (GPU only)."""
        peaks = [(s.batch_size, s.padded_len, s.peak_bytes) for s in samples if s.peak_bytes is not None]
        free = getattr(replica.model, "memory_free", None)
        if not peaks or not callable(free):
            return
        replica.cap.learn(peaks, free())
        if replica.cap.source == "device_memory":
            log.info("model %s on %s: %s", self.name, replica.device, replica.cap.reason)

    async def refit_memory(self) -> None:
        """Learn the token caps again from the memory free now (the pool calls this once every
        model is loaded: models loaded later took memory the first ones counted as free)."""
        if self._loop is None or self.state is not EngineState.READY:
            return
        for replica in self.replicas:
            if replica.cap.memory is not None and replica.executor is not None:
                samples = self._warm_samples
                await self._loop.run_in_executor(replica.executor, self._learn_cap, replica, samples)

    async def drain(self) -> None:
        """Refuse new requests, finish every queued one, then stop the consumer and the thread."""
        if self.state in (EngineState.STOPPED, EngineState.NEW):
            return
        self._draining = True
        if self.state is EngineState.READY:
            self.state = EngineState.DRAINING
        self._wake.set()
        self._room_made(everyone=True)
        if self._task is not None:
            await self._task
        for executor in self._owned:
            executor.shutdown(wait=True)
        self.state = EngineState.STOPPED

    def hurry(self) -> None:
        """Hold no batch back from now on (the pod is stopping); requests are still accepted."""
        self._hurry = True
        self._wake.set()

    @property
    def alive(self) -> bool:
        """Ready, consumer running and model thread present."""
        return (
            self.state is EngineState.READY
            and self._task is not None
            and not self._task.done()
            and all(replica.executor is not None for replica in self.replicas)
        )

    def reconfigure(self, config: BatchingConfig) -> None:
        """Use `config` from the next batch on; a batch in flight is not touched."""
        self.config = config
        self._policy = policies.for_config(config)
        self._choice = None
        self._wake.set()
        self._room_made()  # a larger max_queue_size is room too

    # -- requests --------------------------------------------------------------------------------

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    def submit(
        self, item: str | Encoded, *, timeout_s: float | None = None, lane: int = INTERACTIVE
    ) -> asyncio.Future[Prediction]:
        """Queue one text (or one already tokenized by this model's encoder, in an HTTP worker); the
        returned future resolves to its prediction or its own error.

        `timeout_s`: answered 504 if its batch has not left by then. `lane`: INTERACTIVE or BULK.
        """
        self._admit(lane)
        return self._enqueue(self._encoded(item), timeout_s, lane)

    def _encoded(self, item: str | Encoded) -> Encoded:
        return self.model.encode(item) if isinstance(item, str) else item

    def bulk_limit(self) -> int:
        """How many requests may wait before bulk ones are refused: a quarter stays interactive."""
        size = self.config.max_queue_size
        return size - size // 4

    def _admit(self, lane: int = INTERACTIVE, *, in_line: bool = True) -> None:
        """Raise 503 unless ready, 429 when the queue is full (for bulk: at `bulk_limit()`) or, with
        `in_line`, when callers already wait for room that this request would take."""
        if self.state is not EngineState.READY or self._loop is None:
            raise errors.ModelNotReady(
                f"model {self.name!r} is {self.state.value}" + (f": {self.error}" if self.error else ""),
                model=self.name,
            )
        if self._full(lane) or (in_line and self._someone_waiting(lane)):
            self.stats.on_overflow(time.perf_counter())
            retry_after = self.retry_after_s()
            raise errors.QueueFull(
                f"model {self.name!r} has {len(self._queue)} requests waiting "
                f"(max_queue_size {self.config.max_queue_size}); retry shortly",
                retry_after_s=retry_after,
                model=self.name,
                retry_after_ms=round(retry_after * 1000.0, 1),
            )

    def has_room(self, lane: int = INTERACTIVE) -> bool:
        """A request in `lane` would be queued now: the queue has a place, and nobody waits for it."""
        return not self._full(lane) and not self._someone_waiting(lane)

    def _full(self, lane: int) -> bool:
        limit = self.config.max_queue_size if lane == INTERACTIVE else self.bulk_limit()
        return len(self._queue) >= limit

    def _someone_waiting(self, lane: int) -> bool:
        """A caller waits for room ahead of a request in `lane` (bulk yields to every lane)."""
        waiting = self._waiting_room
        while waiting and waiting[0][0].done():  # gave up: out of line
            waiting.popleft()
        return any(not waiter.done() and (lane == BULK or other == lane) for waiter, other in waiting)

    def _enqueue(self, item: Encoded, timeout_s: float | None, lane: int) -> asyncio.Future[Prediction]:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        future: asyncio.Future[Prediction] = loop.create_future()
        pending = Pending(item, future, now, item.tokens, time.perf_counter(), lane=lane)
        if timeout_s is not None:
            pending.deadline = now + timeout_s
            pending.expiry = loop.call_at(pending.deadline, self._expire, pending, timeout_s)
        self._queue.append(pending)
        self.stats.on_arrival(pending.measured_at, len(self._queue))
        self._last_arrival = now
        self._wake.set()
        return future

    def _expire(self, pending: Pending, timeout_s: float) -> None:
        """A queued request's deadline passed before its batch left: out of the queue, 504."""
        pending.expiry = None
        if pending.future.done():
            return
        try:
            self._queue.remove(pending)
        except ValueError:  # already on the model thread: it is answered
            return
        self.stats.expired += 1
        self._room_made()
        waited_ms = round((time.perf_counter() - pending.measured_at) * 1000.0, 1)
        pending.future.set_exception(
            errors.DeadlineExceeded(
                f"the request waited {waited_ms:g} ms in model {self.name!r}'s queue, past its deadline "
                f"of {timeout_s * 1000.0:g} ms; it was dropped before reaching the model",
                model=self.name,
                waited_ms=waited_ms,
                timeout_ms=round(timeout_s * 1000.0, 1),
            )
        )

    async def put(
        self,
        item: str | Encoded,
        *,
        timeout_s: float | None = None,
        lane: int = BULK,
        room_s: float = math.inf,
    ) -> asyncio.Future[Prediction]:
        """Like `submit` (`item` a text, or a text already tokenized by this model's encoder), but
        waits up to `room_s` for room in a full queue, then raises QueueFull as `submit` does.
        Waiters get room first come, first in, as batches leave; a request that finds others
        waiting waits behind them.

        For /predict/batch (`room_s` unbounded): a list longer than the free room is queued as room
        appears (its items are BULK: they wait while the queue holds `bulk_limit()`). For /predict:
        a request that finds the queue full waits a moment for the next batch to leave rather than
        being refused at once, so the queue is full again whenever the model takes a batch. The
        deadline counts from now; past it, 504.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        in_line = False  # woken once: its place is ready, no longer behind the others
        while self.state is EngineState.READY and (
            self._full(lane) or (not in_line and self._someone_waiting(lane))
        ):
            waited = loop.time() - started
            left, deadline_first = room_s - waited, False
            if timeout_s is not None and timeout_s - waited <= left:
                left, deadline_first = timeout_s - waited, True
            waiter = loop.create_future()
            if in_line:  # woken, but the place went to another: first in line again
                self._waiting_room.appendleft((waiter, lane))
            else:
                self._waiting_room.append((waiter, lane))
            in_line = True
            try:
                await asyncio.wait_for(waiter, max(left, 0.0))
            except TimeoutError:
                if timeout_s is None or not deadline_first:
                    break  # no more waiting: below, a place or QueueFull, counted and advised
                self.stats.expired += 1
                raise errors.DeadlineExceeded(
                    f"the request waited {timeout_s * 1000.0:g} ms for room in model {self.name!r}'s "
                    "full queue, its whole deadline; it never reached the model",
                    model=self.name,
                    waited_ms=round((loop.time() - started) * 1000.0, 1),
                    timeout_ms=round(timeout_s * 1000.0, 1),
                ) from None
        self._admit(lane, in_line=not in_line)
        left_s = None if timeout_s is None else max(started + timeout_s - loop.time(), 0.0)
        return self._enqueue(self._encoded(item), left_s, lane)

    def _room_made(self, *, everyone: bool = False) -> None:
        """Wake the first waiters for room, as many as each lane has free places (all of them when
        the engine stops, so they see why). A waiter that finds its place taken waits again."""
        waiting = self._waiting_room
        if not waiting:
            return
        queued = len(self._queue)
        free = {INTERACTIVE: self.config.max_queue_size - queued, BULK: self.bulk_limit() - queued}
        kept: deque[tuple[asyncio.Future[None], int]] = deque()
        while waiting:
            waiter, lane = waiting.popleft()
            if waiter.done():
                continue
            if everyone or free[lane] > 0:
                waiter.set_result(None)
                free[INTERACTIVE] -= 1
                free[BULK] -= 1
            else:
                kept.append((waiter, lane))
        self._waiting_room = kept

    def retry_after_s(self) -> float:
        """When a refused request may expect room: the queue ahead of it at the measured drain rate
        (the cost model's estimate before any batch ran)."""
        rate = self.stats.drain_rate
        queued = len(self._queue) + sum(r.running[1] for r in self.replicas if r.running is not None)
        if rate <= 0.0:
            model = self.cost.model
            rate = self.config.max_batch_size / model.estimate(self.config.max_batch_size, 48)
        return queued / rate

    # -- the consumer ----------------------------------------------------------------------------

    def signals(self, now: float, replica: Replica | None = None) -> policies.Signals:
        """What the policy sees: `now` on the loop clock, figures measured on perf_counter, the cost
        model, and the token cap of `replica` (the device that takes the batch; default the first).

        With several devices, busy is the devices' mean."""
        measured = time.perf_counter()
        replica = replica or self.replicas[0]
        devices = len(self.replicas)
        busy = self.stats.busy_fraction(measured)
        if devices > 1:
            busy = min(1.0, busy / devices)
        for other in self.replicas:
            if other.running is not None:
                busy = min(1.0, busy + min(measured - other.running[0], 1.0) / devices)
        if self._device_load is not None:
            gpu = self._device_load()
            if gpu is not None:
                busy = max(busy, gpu)
        return policies.Signals(
            now=now,
            arrival_rate=self.stats.arrival_rate(measured),
            busy=busy,
            latency_p95_s=self.stats.latency_p95(measured),
            typical_wait_s=self.stats.typical_wait_s,
            last_arrival=self._last_arrival,
            bulk_passed=self._bulk_passed,
            cost=self.cost.model,
            max_tokens=replica.cap.limit,
        )

    async def _consume(self) -> None:
        """Run batches until drained; if the loop itself breaks, fail what waits rather than hang it."""
        try:
            await self._consume_forever()
        except Exception as exc:
            self.state = EngineState.FAILED
            self.error = f"batching loop stopped: {type(exc).__name__}: {exc}"
            log.exception("model %s: %s", self.name, self.error)
            failure = errors.ModelNotReady(f"model {self.name!r} failed: {self.error}", model=self.name)
            for run in list(self._runs):
                with contextlib.suppress(BaseException):
                    await run  # a batch still on a device is answered, or returns to the queue
            for pending in self._queue:
                if not pending.future.done():
                    pending.future.set_exception(failure)
            self._queue = []
            self._room_made(everyone=True)  # callers waiting in `put` for room see the failure too

    async def _consume_forever(self) -> None:
        assert self._loop is not None
        loop = self._loop
        several = len(self.replicas) > 1
        while True:
            if self._broken is not None:
                raise self._broken
            queue = self._queue
            if any(p.future.done() for p in queue):
                kept = [p for p in queue if not p.future.done()]
                self.stats.cancelled += len(queue) - len(kept)
                for gone in queue:
                    if gone.expiry is not None and gone.future.done():
                        gone.expiry.cancel()
                self._queue = queue = kept
            if not queue:
                if self._draining and not self._runs:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            replica = next((r for r in self.replicas if r.running is None), None)
            if replica is None:  # every device busy: a finished batch wakes us
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            policy = self._policy
            pick = policy.pick(queue, self.signals(now, replica))
            if pick.mode is not None:
                self._choice = (pick.mode, pick.reason)
            if not pick.take and (self._draining or self._hurry):
                cap = self.config.max_batch_size
                view = policies.lanes(queue, cap, self._bulk_passed) or range(len(queue))
                pick = policies.Pick(tuple(sorted(policies.fit_tokens(queue, view[:cap], replica.cap.limit))))
            if not pick.take:
                self._wake.clear()
                handle = loop.call_at(pick.wait_until if pick.wait_until is not None else now, self._wake.set)
                await self._wake.wait()
                handle.cancel()
                continue
            chosen = set(pick.take)
            batch = [queue[i] for i in pick.take]
            self._queue = [p for i, p in enumerate(queue) if i not in chosen]
            self._room_made()
            for pending in batch:
                if pending.expiry is not None:  # on its way to the model: answered, whatever the time
                    pending.expiry.cancel()
                    pending.expiry = None
            if any(p.lane == BULK for p in batch) or not any(p.lane == BULK for p in self._queue):
                self._bulk_passed = 0
            else:
                self._bulk_passed += 1
            replica.running = (time.perf_counter(), len(batch))  # taken: the next pick needs another
            if several:  # the device runs it; the consumer picks the next batch for a free one
                run = loop.create_task(self._run(batch, replica), name=f"carpool-batch-{self.name}")
                self._runs.add(run)
                run.add_done_callback(functools.partial(self._ran, batch))
                continue
            try:
                await self._run(batch, replica)
            except BaseException:
                self._queue[:0] = batch  # unanswered riders fail with the queue, never hang
                raise

    def _ran(self, batch: list[Pending], run: asyncio.Task[None]) -> None:
        """A batch on one of several devices finished: wake the consumer (to fail it on a bug)."""
        self._runs.discard(run)
        if not run.cancelled() and run.exception() is not None:
            self._queue[:0] = [p for p in batch if not p.future.done()]
            self._broken = run.exception()
        self._wake.set()

    async def _run(self, batch: list[Pending], replica: Replica) -> None:
        assert self._loop is not None and replica.executor is not None
        loop = self._loop
        started = time.perf_counter()
        replica.running = (started, len(batch))  # the consumer marked it taken; now it starts
        items = [p.item for p in batch]
        try:
            outcomes, forward_s, failed_tokens = await loop.run_in_executor(
                replica.executor, self._forward, items, replica.model
            )
        finally:
            replica.running = None
        done = time.perf_counter()
        padded_len = max(p.tokens for p in batch)
        waits = [started - p.measured_at for p in batch]
        self.stats.on_batch(started, done, waits, padded_len, sum(p.tokens for p in batch))
        replica.on_batch(len(batch), done - started)
        if forward_s is not None:
            self.cost.observe(len(batch), padded_len, forward_s)  # the next batch's Signals carry it
        if failed_tokens is not None:
            cap = replica.cap.lowered_after(failed_tokens)
            log.warning(
                "model %s on %s: a batch of %d tokens ran out of memory; split in halves, every request "
                "answered; token cap now %d",
                self.name,
                replica.device,
                failed_tokens,
                cap,
            )
        observer = self._observer
        if observer is not None:
            if len(self.replicas) > 1:
                observer.on_batch(self.name, len(batch), waits, done - started, device=replica.device)
            else:
                observer.on_batch(self.name, len(batch), waits, done - started)
            on_oom = getattr(observer, "on_out_of_memory", None)
            if failed_tokens is not None and callable(on_oom):
                on_oom(self.name, replica.device)
        for pending, outcome in zip(batch, outcomes, strict=True):
            ok = not isinstance(outcome, BaseException)
            self.stats.on_result(done, done - pending.measured_at, ok)
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _forward(self, items: list[Encoded], model: Model) -> tuple[list[Outcome], float | None, int | None]:
        """Model thread: the batch, or each item alone if the batch raised, or its halves if it ran
        out of memory. Returns the outcomes, the forward time (None unless the batch ran whole) and
        the tokens of the smallest batch that ran out of memory (None if none did)."""
        started = time.perf_counter()
        try:
            predictions = model.predict_batch(items)
        except Exception as exc:
            if _out_of_memory(model, exc):
                return self._split(items, model, exc)
            if len(items) == 1:
                return [self._as_error(exc, items[0])], None, None
            log.warning(
                "model %s: a batch of %d failed (%s); retrying items one by one", self.name, len(items), exc
            )
            alone = [self._forward([item], model) for item in items]
            failed = [tokens for _, _, tokens in alone if tokens is not None]
            return [outcomes[0] for outcomes, _, _ in alone], None, min(failed, default=None)
        elapsed = time.perf_counter() - started
        if len(predictions) != len(items):
            error = errors.InferenceFailed(
                f"model {self.name!r} returned {len(predictions)} predictions for {len(items)} texts: "
                "predict_batch must return exactly one prediction per input, in order"
            )
            return [error] * len(items), None, None
        return list(predictions), elapsed, None

    def _split(
        self, items: list[Encoded], model: Model, exc: Exception
    ) -> tuple[list[Outcome], None, int | None]:
        """Model thread: a batch that ran out of memory, run as two halves (recursively). A text
        that runs out of memory alone fails alone, and lowers no cap (no batch can be smaller)."""
        if len(items) == 1:
            log.warning("model %s: a text of %d tokens ran out of memory alone", self.name, items[0].tokens)
            error = errors.InferenceFailed(
                f"model {self.name!r} ran out of device memory on this text alone "
                f"({items[0].tokens} tokens): {type(exc).__name__}: {exc}",
                model=self.name,
            )
            return [error], None, None
        tokens = len(items) * max(item.tokens for item in items)
        half = len(items) // 2
        first, _, first_failed = self._forward(items[:half], model)
        second, _, second_failed = self._forward(items[half:], model)
        failed = [t for t in (tokens, first_failed, second_failed) if t is not None]
        return first + second, None, min(failed)

    def _as_error(self, exc: Exception, item: Encoded) -> BaseException:
        if isinstance(exc, errors.CarpoolError):
            return exc
        return errors.InferenceFailed(
            f"model {self.name!r} failed on this text ({len(item.text)} characters): "
            f"{type(exc).__name__}: {exc}",
            model=self.name,
        )

    # -- reporting -------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This engine's part of /batching/stats."""
        now = time.perf_counter()
        config = self.config
        report: dict[str, Any] = {
            "state": self.state.value,
            "strategy": config.strategy.value,
            "effective_strategy": config.effective_strategy.value,
        }
        if config.effective_strategy is Strategy.ADAPTIVE:
            mode, reason = self._choice or policies.ADAPTIVE_START
            report["adaptive"] = {"mode": mode.value, "reason": reason}
        elif config.effective_strategy is Strategy.SINGLE_REQUEST:
            reason = "batching disabled (enable=false)" if not config.enable else "strategy single_request"
            report["mode"] = {"mode": "one_request_per_forward", "reason": reason}
        report.update(self.stats.snapshot(now, config.max_batch_size))
        report["queue"] = {
            "size": len(self._queue),
            "bulk": sum(1 for p in self._queue if p.lane == BULK),
            "peak": self.stats.peak_queue,
            "max": config.max_queue_size,
            "bulk_limit": self.bulk_limit(),
            "overflow": self.stats.overflow,
            "overflow_rate_rps": round(self.stats.overflow_rate(now), 3),
            "drain_rate_rps": round(self.stats.drain_rate, 2),
        }
        model = self.cost.model
        report["cost_model"] = {
            "fixed_ms": round(model.fixed_s * 1000, 4),
            "per_token_us": round(model.per_token_s * 1e6, 4),
            "batches_fitted": self.cost.samples,
        }
        if len(self.replicas) == 1:
            report["token_cap"] = self.replicas[0].cap.describe(config.max_batch_size)
        else:
            uptime = now - self.stats.started_at
            report["devices"] = {r.device: r.describe(config.max_batch_size, uptime) for r in self.replicas}
        return report


def _out_of_memory(model: Model, exc: Exception) -> bool:
    """The model's own verdict (`is_out_of_memory`), else torch's OutOfMemoryError by name."""
    classify = getattr(model, "is_out_of_memory", None)
    if callable(classify):
        return bool(classify(exc))
    return type(exc).__name__ == "OutOfMemoryError"

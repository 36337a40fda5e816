"""The models a pod serves, each behind its own batching engine, and the requests that span them.

`ModelPool` is what the HTTP layer talks to: it validates texts and model names, fans a request
out to every model it names (each model has its own queue) and waits for all, and applies a new
batching config to every engine at once, or to one model's engine (model-specific tuning). It
holds the facts /health, /batching/stats and /models/status report (its models, their engines,
the configs in force); `serving.reports` shapes those bodies. Models load in the background
after the server starts, so /health answers 503 until all are warm.

Placement. With several devices (`ServerSettings.placement`), every model is replicated on every
device: one replica per device inside the model's one engine (one queue, batches to whichever device
is free), and one model thread per device, shared by the models on it. With one device, one model
thread runs every model, as ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from serving import catalog, errors, hardware, validation
from serving.batching.engine import BatchEngine
from serving.batching.pending import BULK, INTERACTIVE
from serving.batching.replica import Replica
from serving.metrics import Metrics
from serving.models import hf, registry
from serving.models.base import Encoded, Model, Prediction
from serving.settings import BatchingConfig, ServerSettings

__all__ = ["ModelPool", "Served", "device_labels"]

log = logging.getLogger("carpool.pool")


@dataclass(slots=True)
class Served:
    """A model in the pool: its engine and what /models/status says about it."""

    engine: BatchEngine
    path: str = ""
    card: dict[str, Any] | None = None
    untrained_head: bool = False
    kind: catalog.Kind = field(default="base")


class ModelPool:
    def __init__(
        self,
        models: Sequence[Served],
        config: BatchingConfig,
        *,
        metrics: Metrics | None = None,
        max_text_chars: int = 20_000,
        gpu: hardware.GpuProbe | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics(enabled=False)
        self.max_text_chars = max_text_chars
        self.gpu = gpu
        self.served = {served.engine.name: served for served in models}
        self.catalog = catalog.Catalog(
            {name: served.kind for name, served in self.served.items()}, max_text_chars
        )
        self.configs: dict[str, BatchingConfig] = {name: s.engine.config for name, s in self.served.items()}
        """Each model's own config: the pod's `config` unless tuned for that model."""
        self.metrics.models = self._queue_states
        self.metrics.token_caps = self._token_caps
        self._loading: asyncio.Task[None] | None = None
        self._device_threads: list[ThreadPoolExecutor] = []  # one per device, see from_replicas
        self.devices: list[str] = []  # the devices' labels, when the pool placed its models on several
        self.started_at = time.monotonic()

    @classmethod
    def from_models(cls, models: Sequence[Model], config: BatchingConfig, **options: Any) -> ModelPool:
        """A pool of already built models (tests, EchoModel), all run by one model thread."""
        return cls.from_replicas([[(None, model)] for model in models], config, **options)

    @classmethod
    def from_replicas(
        cls,
        replicas: Sequence[Sequence[tuple[str | None, Model]]],
        config: BatchingConfig,
        **options: Any,
    ) -> ModelPool:
        """A pool of already built models, each given as its replicas, (device label, model) per
        device (label None: one device). Each device gets one model thread, shared by its models.

        `model_batching` (an option): per-model batching fields over `config`, by model name
        (`ServerSettings.model_batching`); a name the pool does not serve is a ValueError."""
        model_batching: Mapping[str, Mapping[str, Any]] = options.pop("model_batching", None) or {}
        metrics = options.get("metrics")
        gpu = options.get("gpu")
        threads: dict[str | None, ThreadPoolExecutor] = {}
        for placed in replicas:
            for label, _ in placed:
                if label not in threads:
                    prefix = "carpool-model" if label is None else f"carpool-model-{label}"
                    threads[label] = ThreadPoolExecutor(1, thread_name_prefix=prefix)
        served = []
        for placed in replicas:
            model = placed[0][1]
            served.append(
                Served(
                    BatchEngine(
                        model,
                        config,
                        observer=metrics,
                        device_load=gpu.utilization if gpu else None,
                        replicas=[Replica(m, threads[label], label) for label, m in placed],
                    ),
                    kind="trained" if model.name.endswith(registry.TRAINED_SUFFIX) else "base",
                    path=str(getattr(model, "path", "")),
                    card=registry.load_card(model.path) if hasattr(model, "path") else None,
                    untrained_head=bool(getattr(model, "untrained_head", False)),
                )
            )
        pool = cls(served, config, **options)
        pool._device_threads = list(threads.values())
        pool.devices = [label for label in threads if label is not None]
        if len(pool.devices) > 1:
            pool.metrics.per_device()
        for name, fields in model_batching.items():
            try:
                pool.configure(fields, model=name)
            except (errors.UnknownModel, errors.InvalidConfig) as exc:
                for thread in pool._device_threads:
                    thread.shutdown(wait=False)
                raise ValueError(f"CARPOOL_MODEL_BATCHING: {exc}") from None
        return pool

    @classmethod
    def from_settings(
        cls, settings: ServerSettings, metrics: Metrics, gpu: hardware.GpuProbe | None
    ) -> ModelPool:
        """The pool `carpool serve` runs: models found by `registry.discover`, not yet loaded, each
        replicated on every device of `settings.placement` (labels: `device_labels`)."""
        specs = registry.discover(settings.models, settings.models_dir)
        counted = settings.devices is None and settings.device in ("auto", "cuda")
        devices = settings.placement(hf.cuda_device_count() if counted else 0)
        labels: list[str | None] = list(device_labels(devices)) if len(devices) > 1 else [None]
        replicas = [
            [
                (
                    label,
                    registry.build_model(
                        spec,
                        device=device,
                        dtype=settings.dtype,
                        max_length=settings.max_length,
                        runtime=settings.runtime_for(spec.name),
                        cache_dir=settings.cache_dir,
                    ),
                )
                for label, device in zip(labels, devices, strict=True)
            ]
            for spec in specs
        ]
        return cls.from_replicas(
            replicas,
            settings.batching,
            metrics=metrics,
            gpu=gpu,
            max_text_chars=settings.max_text_chars,
            model_batching=settings.model_batching,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start_loading(self) -> asyncio.Task[None]:
        """Load every model in the background, one after the other (they share the CPU)."""
        self._loading = asyncio.get_running_loop().create_task(self._load_all(), name="carpool-load-models")
        return self._loading

    async def _load_all(self) -> None:
        for served in self.served.values():
            try:
                await served.engine.start()
            except Exception:
                log.exception("model %s could not be loaded", served.engine.name)
        if len(self.served) > 1:  # the first models' caps counted memory the later ones now hold
            for served in self.served.values():
                await served.engine.refit_memory()

    def hurry(self) -> None:
        """The pod is stopping: every engine sends what it holds at once, still taking requests."""
        for served in self.served.values():
            served.engine.hurry()

    async def drain(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        await asyncio.gather(*(served.engine.drain() for served in self.served.values()))
        for thread in self._device_threads:
            thread.shutdown(wait=True)

    # -- names and texts ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return self.catalog.names

    def resolve(self, names: Sequence[str] | None, *, trained_only: bool = False) -> list[str]:
        return self.catalog.resolve(names, trained_only=trained_only)

    def check_text(self, text: str) -> None:
        self.catalog.check_text(text)

    # -- predictions -----------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        text: str,
        ids: Sequence[int] | None = None,
        *,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> asyncio.Future[Prediction]:
        """One checked text queued for one model (429 when its queue is full); `ids` when already
        tokenized by the model's encoder; `timeout_s` its deadline; `bulk` its lane."""
        engine, item, lane = self._request(name, text, ids, bulk)
        return engine.submit(item, timeout_s=timeout_s, lane=lane)

    def _request(
        self, name: str, text: str, ids: Sequence[int] | None, bulk: bool
    ) -> tuple[BatchEngine, str | Encoded, int]:
        """A checked text for one model: its engine, the text (tokenized, when `ids`) and its lane."""
        self.catalog.check_text(text)
        item = text if ids is None else Encoded(text, ids)
        return self.served[name].engine, item, BULK if bulk else INTERACTIVE

    def has_room(self, name: str, *, bulk: bool = False) -> bool:
        """`name`'s queue would take a request in that lane now (see `BatchEngine.has_room`)."""
        return self.served[name].engine.has_room(BULK if bulk else INTERACTIVE)

    async def put(
        self,
        name: str,
        text: str,
        ids: Sequence[int] | None = None,
        *,
        room_s: float,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> asyncio.Future[Prediction]:
        """Like `submit`, but a full queue is waited on for up to `room_s` before 429."""
        engine, item, lane = self._request(name, text, ids, bulk)
        return await engine.put(item, timeout_s=timeout_s, lane=lane, room_s=room_s)

    def encoders(self) -> dict[str, Any]:
        """Each ready model's portable tokenizer (`encoder()`), for HTTP workers."""
        found = {}
        for name, served in self.served.items():
            encoder = getattr(served.engine.model, "encoder", None)
            if served.engine.alive and callable(encoder) and encoder() is not None:
                found[name] = encoder()
        return found

    async def predict(
        self,
        text: str,
        names: Sequence[str],
        *,
        wait_for_room: float = 0.0,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> dict[str, tuple[Prediction, float]]:
        """One prediction per model, with each model's latency in seconds; waits for all.

        A full queue raises QueueFull (429) at once, or after waiting up to `wait_for_room` seconds
        for room (math.inf: until a batch leaves).
        `timeout_s`: 504 for a model whose batch has not left by then. `bulk`: the bulk lane.
        """
        self.catalog.check_text(text)
        started = time.perf_counter()
        lane = BULK if bulk else INTERACTIVE
        futures: list[asyncio.Future[Prediction]] = []
        try:
            for name in names:
                engine = self.served[name].engine
                left = None if timeout_s is None else max(timeout_s - (time.perf_counter() - started), 0.0)
                futures.append(
                    await engine.put(text, timeout_s=left, lane=lane, room_s=wait_for_room)
                    if wait_for_room > 0
                    else engine.submit(text, timeout_s=left, lane=lane)
                )
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if len(futures) == 1:
            prediction = await futures[0]
            return {names[0]: (prediction, time.perf_counter() - started)}
        finished: dict[str, float] = {}
        for name, future in zip(names, futures, strict=True):
            future.add_done_callback(functools.partial(_mark_done, finished, name))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return {
            name: (outcome, finished.get(name, time.perf_counter()) - started)
            for name, outcome in zip(names, outcomes, strict=True)
            if isinstance(outcome, Prediction)
        }

    # -- configuration ---------------------------------------------------------------------------

    def configure(self, changes: Mapping[str, Any], *, model: str | None = None) -> BatchingConfig:
        """Apply a partial update (at each engine's next batch) and return the config it changed.

        With `model` (a served name or alias; 404 otherwise) only that model's config changes.
        Without it the change is the pod's: its fields are set on the pod's config and on every
        model's, whatever a model was tuned to, and the fields it does not name keep each model's
        value. Every config is validated before any applies: a change one model refuses (422,
        naming the model) changes nothing anywhere.
        """
        if model is not None:
            name = self.catalog.resolve([model])[0]
            config = _updated(self.configs[name], changes, name)
            self.configs[name] = config
            self.served[name].engine.reconfigure(config)
            log.info("batching config %s applied to %s: %s", config.config_hash(), name, _shown(config))
            return config
        pod = _updated(self.config, changes, None)
        models = {name: _updated(own, changes, name) for name, own in self.configs.items()}
        self.config = pod
        for name, config in models.items():
            self.configs[name] = config
            self.served[name].engine.reconfigure(config)
        log.info("batching config %s applied: %s", pod.config_hash(), _shown(pod))
        return pod

    # -- facts for the reports and the metrics ---------------------------------------------------

    def _queue_states(self) -> dict[str, tuple[int, bool]]:
        return {name: (s.engine.queue_size, s.engine.alive) for name, s in self.served.items()}

    def _token_caps(self) -> dict[tuple[str, str], int]:
        """{(model, device): token cap} where a cap applies (a GPU's memory, or an OOM lowered it)."""
        return {
            (name, replica.device): replica.cap.limit
            for name, s in self.served.items()
            for replica in s.engine.replicas
            if replica.cap.limit is not None
        }

    @property
    def ready(self) -> bool:
        """Every model loaded, warm and its engine alive (what /health answers 200 for)."""
        return bool(self.served) and all(served.engine.alive for served in self.served.values())


def _updated(config: BatchingConfig, changes: Mapping[str, Any], model: str | None) -> BatchingConfig:
    """`config` with `changes`; 422 naming the bad field (and the model whose config refused it)."""
    try:
        return config.updated(changes)
    except ValidationError as exc:
        problems = validation.problems(exc.errors(include_url=False))
        where = "" if model is None else f" of model {validation.quote(model)}"
        raise errors.InvalidConfig(
            f"invalid batching config{where}: " + "; ".join(map(str, problems)),
            errors=[{**problem.as_dict(), **({"model": model} if model else {})} for problem in problems],
        ) from None


def _shown(config: BatchingConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def device_labels(devices: Sequence[str]) -> list[str]:
    """Names for the devices in reports and metrics: the device itself, or `cpu#0`, `cpu#1`, ...
    where the same device is named more than once (CARPOOL_DEVICES=cpu,cpu)."""
    seen: dict[str, int] = {}
    labels = []
    for device in devices:
        if devices.count(device) == 1:
            labels.append(device)
        else:
            labels.append(f"{device}#{seen.get(device, 0)}")
            seen[device] = seen.get(device, 0) + 1
    return labels


def _mark_done(finished: dict[str, float], name: str, _future: asyncio.Future[Prediction]) -> None:
    finished[name] = time.perf_counter()

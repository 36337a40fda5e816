"""The bodies of /health, /batching/stats and /models/status, shaped from what a `ModelPool` holds.

The pool knows its models, their engines and the config in force; this module decides what the
three reports say of them. It sits above the pool (the pool never imports it) and below the
frontend, so the model process answers every HTTP worker with the same bodies (`frontend.local`,
`frontend.hub`) whichever worker asked. Each engine's own figures come from `BatchEngine.describe`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from serving import hardware
from serving.batching.engine import BatchEngine, EngineState
from serving.pool import ModelPool, Served

__all__ = ["health", "stats", "status"]

UNTRAINED_HEAD = "untrained: seeded random classification head; run `carpool train` for minilm_trained"
PLACEMENT_RULE = (
    "replicated: every model on every device, one queue per model, a free device takes the next batch"
)
CARD_KEYS = ("name", "base", "labels", "metrics", "trained_at", "train_seconds", "data", "error")


def health(pool: ModelPool) -> dict[str, Any]:
    """/health: ok only when every model is loaded, warm and its engine alive; each model's state."""
    return {
        "status": "ok" if pool.ready else "unavailable",
        "models": {
            name: {"state": s.engine.state.value, "alive": s.engine.alive, **_error(s.engine)}
            for name, s in pool.served.items()
        },
    }


def stats(pool: ModelPool) -> dict[str, Any]:
    """/batching/stats: the pod's config and its hash, the machine, and each model's figures with
    its own config and hash (the pod's unless that model was tuned on its own)."""
    config = pool.config
    system: dict[str, Any] = {"cpu": hardware.cpu_snapshot()}
    if pool.gpu is not None:
        system["gpus"] = pool.gpu.devices()
    return {
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "strategy": config.strategy.value,
        "effective_strategy": config.effective_strategy.value,
        "uptime_s": round(time.monotonic() - pool.started_at, 3),
        "system": system,
        "models": {
            name: {**served.engine.describe(), **_own_config(pool, name)}
            for name, served in pool.served.items()
        },
        **({"devices": pool.devices, "placement": PLACEMENT_RULE} if pool.devices else {}),
    }


def _own_config(pool: ModelPool, name: str) -> dict[str, Any]:
    """A model's own config, its hash, and the fields where it differs from the pod's config."""
    own, pod = pool.configs[name], pool.config
    shown, pod_shown = own.model_dump(mode="json"), pod.model_dump(mode="json")
    return {
        "config": shown,
        "config_hash": own.config_hash(),
        "tuned": {field: value for field, value in shown.items() if pod_shown[field] != value},
    }


def status(pool: ModelPool) -> list[dict[str, Any]]:
    """/models/status: one entry per model, in the pool's order."""
    return [_model_status(name, served) for name, served in pool.served.items()]


def _model_status(name: str, served: Served) -> dict[str, Any]:
    engine = served.engine
    model = engine.model
    replicas = engine.replicas
    entry: dict[str, Any] = {
        "name": name,
        "kind": served.kind,
        "path": served.path,
        "device": model.device,
        "dtype": model.dtype,
        "torch_threads": getattr(model, "torch_threads", None),
        "torch_threads_reason": getattr(model, "torch_threads_reason", None) or None,
        "labels": list(model.labels),
        "state": engine.state.value,
        "load_seconds": None if engine.load_seconds is None else round(engine.load_seconds, 3),
        "warm": engine.state in (EngineState.READY, EngineState.DRAINING),
        "queue_size": engine.queue_size,
        **_error(engine),
    }
    if len(replicas) > 1:  # several devices: where the model's replicas are (one device: `device`)
        entry["devices"] = [replica.device for replica in replicas]
        entry["placement"] = PLACEMENT_RULE
    if served.untrained_head:
        entry["head"] = UNTRAINED_HEAD
    if served.card is not None:
        entry["card"] = _card_summary(served.card)
    describe = getattr(model, "describe", None)
    if callable(describe):  # what the model says of itself, e.g. its runtime and accuracy check
        entry.update(describe())
    return entry


def _error(engine: BatchEngine) -> dict[str, Any]:
    return {"error": engine.error} if engine.error else {}


def _card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    return {key: card[key] for key in CARD_KEYS if key in card}

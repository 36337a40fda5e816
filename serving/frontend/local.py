"""The `Backend` over a `ModelPool` in this process; the model process's hub answers through it too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from serving import errors, reports
from serving.models.base import Prediction
from serving.pool import ModelPool

__all__ = ["LocalBackend"]


class LocalBackend:
    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool
        self.catalog = pool.catalog
        self.metrics_enabled = pool.metrics.enabled

    async def predict(
        self,
        text: str,
        names: Sequence[str],
        *,
        wait_for_room: float = 0.0,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> dict[str, tuple[Prediction, float]]:
        return await self.pool.predict(
            text, names, wait_for_room=wait_for_room, timeout_s=timeout_s, bulk=bulk
        )

    def record(self, endpoint: str, outcomes: Mapping[str, str], seconds: float) -> None:
        self.pool.metrics.on_request(endpoint, outcomes, seconds)

    async def configure(self, changes: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
        return self.configure_now({"changes": changes, "model": model})

    def configure_now(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """`call`: {"changes": the fields, "model": a served name or None (the pod's config)}."""
        model: str | None = call.get("model")
        if model is not None:
            model = self.pool.catalog.resolve([model])[0]
        previous = (self.pool.config if model is None else self.pool.configs[model]).config_hash()
        config = self.pool.configure(call["changes"], model=model)
        reply: dict[str, Any] = {} if model is None else {"model": model}
        reply.update(
            config=config.model_dump(mode="json"), config_hash=config.config_hash(), previous_hash=previous
        )
        return reply

    async def live(self) -> bool:
        return True

    async def model_info(self, name: str) -> dict[str, Any]:
        return self.info_now(name)

    def info_now(self, name: str) -> dict[str, Any]:
        engine = self.pool.served[name].engine
        return {"labels": list(engine.model.labels), "state": engine.state.value}

    async def stats(self) -> dict[str, Any]:
        return reports.stats(self.pool)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        return self.pool.ready, reports.health(self.pool)

    async def models_status(self) -> list[dict[str, Any]]:
        return reports.status(self.pool)

    async def metrics_text(self) -> bytes:
        return self.metrics_now()

    def metrics_now(self) -> bytes:
        if not self.pool.metrics.enabled:
            raise errors.FeatureDisabled("metrics are disabled on this pod (ENABLE_METRICS=false)")
        return self.pool.metrics.render()

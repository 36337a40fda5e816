"""How the HTTP side reaches the models: in this process, or in the pod's model process.

The API layer talks to a `Backend`. `local.LocalBackend` wraps a `ModelPool` in the same process
(`carpool serve --workers 0`, and the API tests). With HTTP worker processes (the default), each
worker holds a `remote.RemotePool` that forwards to the model process's `hub.Hub` over a Unix
socket (`wire`): one model-owning process per pod keeps batching global per model, while parsing,
validation and answering spread over the workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from serving.catalog import Catalog
from serving.models.base import Prediction

__all__ = ["Backend"]


class Backend(Protocol):
    """What the HTTP handlers need from the models, wherever they run."""

    catalog: Catalog
    metrics_enabled: bool

    async def predict(
        self,
        text: str,
        names: Sequence[str],
        *,
        wait_for_room: float = 0.0,
        timeout_s: float | None = None,
        bulk: bool = False,
    ) -> dict[str, tuple[Prediction, float]]:
        """One prediction per model and its latency in seconds (see `ModelPool.predict`): 429 when
        a queue stays full `wait_for_room` seconds (0: at once); 504 past `timeout_s` before the
        model; `bulk` puts it in the bulk lane."""
        ...

    def record(self, endpoint: str, outcomes: Mapping[str, str], seconds: float) -> None:
        """Count one answered request in the pod's metrics."""

    async def configure(self, changes: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
        """Apply a partial batching config to the pod, or to one served `model` (its name, not an
        alias); the new config, its hash and the previous hash (and the model's name)."""
        ...

    async def live(self) -> bool:
        """The process that runs the models answers (whatever state the models are in)."""
        ...

    async def model_info(self, name: str) -> dict[str, Any]:
        """One served model's `labels` (in its order) and `state` (loading, ready, failed ...)."""
        ...

    async def stats(self) -> dict[str, Any]: ...

    async def health(self) -> tuple[bool, dict[str, Any]]: ...

    async def models_status(self) -> list[dict[str, Any]]: ...

    async def metrics_text(self) -> bytes: ...

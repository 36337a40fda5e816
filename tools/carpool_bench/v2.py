"""`carpool bench --protocol v2`: the same texts and closed loop, through the Open Inference Protocol.

Each simulated user sends one text per `POST /v2/models/{model}/infer`, its tensors in JSON, as it
would send one `/predict`. The model's metadata names the text input: the bench takes the model's
one BYTES input, whatever its name, and fills its shape with one row (`[-1, 1]` becomes `[1, 1]`),
so a Triton, a PyTriton or a KServe model serving a text classifier is driven unchanged.

Against a Carpool the bench still sets each strategy through /batching/configure and reads the
batches it formed. Any other v2 server is driven as it is configured: one cell per concurrency
level, named `as_served`, with no batch figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from carpool_bench import loadgen, server

__all__ = ["AS_SERVED", "TextInput", "V2Server", "encode_requests", "text_input"]

AS_SERVED = "as_served"


@dataclass(frozen=True)
class TextInput:
    """The model's text input: its name and the shape of one row."""

    name: str = "text"
    shape: tuple[int, ...] = (1, 1)

    def tensor(self, text: str) -> dict[str, Any]:
        return {"name": self.name, "datatype": "BYTES", "shape": list(self.shape), "data": [text]}


def text_input(metadata: Any, model: str) -> TextInput:
    """The one BYTES input of a v2 model's metadata, shaped for one row; BenchError when there is none."""
    inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
    found = [i for i in inputs or [] if isinstance(i, dict) and i.get("datatype") == "BYTES"]
    if len(found) != 1 or len(inputs or []) != 1:
        raise server.BenchError(
            f"model {model!r} must take exactly one BYTES input (a text) to be driven over v2; "
            f"its metadata lists inputs {inputs!r}"
        )
    shape = tuple(1 if dim == -1 else dim for dim in found[0].get("shape") or [-1])
    if not all(isinstance(dim, int) for dim in shape) or math.prod(shape) != 1:
        raise server.BenchError(
            f"model {model!r} input {found[0].get('name')!r} has shape {found[0].get('shape')!r}; "
            "the bench sends one text per request and needs a shape that holds one element"
        )
    return TextInput(str(found[0]["name"]), shape)


def encode_requests(
    target: loadgen.Target, texts: Sequence[str], model: str, tensor: TextInput
) -> list[bytes]:
    """One complete POST /v2/models/{model}/infer per text, headers and body, ready for the socket."""
    path = f"/v2/models/{model}/infer"
    return [loadgen.post_request(target, path, {"inputs": [tensor.tensor(text)]}) for text in texts]


class V2Server(server.Admin):
    """A v2 server that is not a Carpool: readiness and one inference, and nothing to configure."""

    def __init__(self, url: str, model: str, timeout_s: float = 30.0) -> None:
        super().__init__(url, None, timeout_s)
        self.model = model

    def healthy(self) -> bool:
        try:
            return all(
                self._client.get(path).status_code == 200
                for path in ("/v2/health/ready", f"/v2/models/{self.model}/ready")
            )
        except httpx.TransportError:
            return False

    def metadata(self) -> TextInput:
        found = self._json(self._client.get(f"/v2/models/{self.model}"), f"GET /v2/models/{self.model}")
        return text_input(found, self.model)

    def predict(self, text: str, model: str) -> Any:
        body = {"inputs": [self.metadata().tensor(text)]}
        return self._json(self._client.post(f"/v2/models/{model}/infer", json=body), f"v2 infer on {model!r}")

    def models_status(self) -> Any:
        return []

    def stats(self) -> dict[str, Any]:
        return {}

    def configure(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def batch_counters(self, model: str) -> tuple[float, float] | None:
        return None

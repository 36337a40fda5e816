"""The Open Inference Protocol (KServe v2, as Triton speaks it) over REST, beside the guide's API.

Clients, dashboards and load tools written for Triton or KServe talk to a Carpool pod unchanged:
`tritonclient.http`, the kserve SDK's `InferenceRESTClient`, perf_analyzer-style loaders. Each model
declares one input and three outputs::

    input   text           BYTES  [-1, 1]   one UTF-8 text per row ([N] is taken as [N, 1])
    output  label          BYTES  [-1, 1]   the top class
    output  score          FP32   [-1, 1]   its probability
    output  probabilities  FP32   [-1, C]   every class, in the order of the model's labels

An infer request rides the same batching engine as /predict: a one-row request is one /predict
(a full queue answers 429 with Retry-After), and a many-row request goes in whole, like
/predict/batch, waiting for room rather than failing per row, so its rows batch together. The
limits are the guide's (text length, CARPOOL_MAX_TEXT_CHARS; at most `inference.MAX_BATCH_ITEMS`
rows; the body size that follows). Errors answer `{"error": "..."}`, the protocol's shape, with
the status /predict gives the same mistake. Tensors may travel in the binary tensor data
extension both ways (`Inference-Header-Content-Length`), which is tritonclient's default.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import errors
from serving.api import inference
from serving.frontend import Backend
from serving.models.base import Prediction

__all__ = ["INPUT", "MODEL_VERSION", "OUTPUTS", "parse_infer", "router"]

router = APIRouter(tags=["open inference protocol (v2)"])

INPUT = "text"
OUTPUTS = ("label", "score", "probabilities")
MODEL_VERSION = "1"
PLATFORM = "carpool"
HEADER_LENGTH = "Inference-Header-Content-Length"
INFER_ENDPOINT = "/v2/models/{name}/infer"  # the metrics' endpoint label: one series, whatever the name


class _ProtocolError(errors.InvalidInput):
    """A request that breaks the protocol's rules (input name, datatype, shape, framing)."""


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload).encode(), status_code=status, media_type="application/json", headers=headers
    )


def _error(exc: errors.CarpoolError) -> Response:
    headers = {}
    if isinstance(exc, errors.QueueFull):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return _json({"error": exc.message}, errors.status_for(exc), headers)


def _outcome(exc: BaseException) -> str:
    status = errors.status_for(exc)
    if status == 429:
        return "rejected"
    if status == 503:
        return "unavailable"
    return "invalid" if status < 500 else "error"


# -- inference (registered first: the hot path is matched before the others) -----------------------


@router.post("/v2/models/{name}/versions/{version}/infer", summary="The same, for a model version")
@router.post("/v2/models/{name}/infer", summary="Classify the rows of the `text` input")  # registered first
async def infer(request: Request) -> Response:
    backend = _backend(request)
    started = time.perf_counter()
    resolved: str | None = None  # only names the pod serves label the metrics, never a client's typo
    try:
        resolved = _model(backend, request)
        body = await _read(request, backend)
        header, texts, wanted = parse_infer(body, request.headers.get(HEADER_LENGTH))
        for row, text in enumerate(texts):
            try:
                backend.catalog.check_text(text)
            except errors.CarpoolError as exc:  # the same error, naming the row
                raise type(exc)(f"input {INPUT!r} row {row}: {exc.message}", **exc.extra) from None
        predictions = await _predict(backend, resolved, texts)
    except errors.CarpoolError as exc:
        backend.record(INFER_ENDPOINT, {resolved or "-": _outcome(exc)}, time.perf_counter() - started)
        return _error(exc)
    labels = (
        list(predictions[0].probabilities)  # the model's labels, in its order
        if predictions
        else (await backend.model_info(resolved))["labels"]
    )
    response = _response(request.path_params["name"], header.get("id"), predictions, labels, wanted)
    backend.record(INFER_ENDPOINT, {resolved: "ok"}, time.perf_counter() - started)
    return response


async def _read(request: Request, backend: Backend) -> bytes:
    """The body, refused with 413 when it could not hold the most rows at the text limit."""
    limit = inference.MAX_BATCH_ITEMS * (4 * backend.catalog.max_text_chars + 16) + 64 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise errors.TextTooLong(f"request body of {declared} bytes is above this endpoint's {limit}")
    raw = await request.body()
    if len(raw) > limit:
        raise errors.TextTooLong(f"request body of {len(raw)} bytes is above this endpoint's {limit}")
    return raw


async def _predict(backend: Backend, name: str, texts: Sequence[str]) -> list[Prediction]:
    """Every row through the model's engine at once, so they batch; the first failure fails all."""
    if len(texts) == 1:
        results = [await backend.predict(texts[0], [name], wait_for_room=inference.ROOM_WAIT_S)]
    else:
        tasks = [
            asyncio.ensure_future(backend.predict(text, [name], wait_for_room=math.inf)) for text in texts
        ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    return [result[name][0] for result in results]


# -- health and metadata ----------------------------------------------------------------------------


@router.get("/v2", summary="Server metadata: name, version, protocol extensions")
async def server_metadata() -> Response:
    return _json({"name": "carpool", "version": "0.1.0", "extensions": ["binary_tensor_data"]})


@router.get("/v2/health/live", summary="200 while the process answers")
async def live() -> Response:
    return _json({"live": True})


@router.get("/v2/health/ready", summary="200 when every model is loaded and warm; 503 otherwise")
async def ready(request: Request) -> Response:
    ok, _ = await _backend(request).health()
    return _json({"ready": ok}, 200 if ok else 503)


def _model(backend: Backend, request: Request) -> str:
    """The served model the path names (aliases resolved); 404 for an unknown name or version.

    Read from `path_params` rather than as endpoint arguments: FastAPI's parameter validation
    would cost the hot path more than the rest of the protocol's parsing.
    """
    name: str = request.path_params["name"]
    version: str | None = request.path_params.get("version")
    resolved = backend.catalog.resolve([name])[0]
    if version is not None and version != MODEL_VERSION:
        raise errors.UnknownModel(
            f"model {name!r} has no version {version!r}; its only version is {MODEL_VERSION!r}"
        )
    return resolved


def _metadata(name: str, labels: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "score", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
        ],
        "parameters": {"labels": labels},
    }


@router.get("/v2/models/{name}", summary="A model's metadata: its input and outputs")
@router.get("/v2/models/{name}/versions/{version}", summary="A model version's metadata")
async def model_metadata(request: Request) -> Response:
    backend = _backend(request)
    try:
        served = _model(backend, request)
        labels = (await backend.model_info(served))["labels"]
        return _json(_metadata(request.path_params["name"], labels))
    except errors.CarpoolError as exc:
        return _error(exc)


@router.get("/v2/models/{name}/ready", summary="200 when the model is loaded and warm; 503 otherwise")
@router.get("/v2/models/{name}/versions/{version}/ready", summary="The same, for a model version")
async def model_ready(request: Request) -> Response:
    backend = _backend(request)
    try:
        resolved = _model(backend, request)
    except errors.CarpoolError as exc:
        return _error(exc)
    ok = (await backend.model_info(resolved))["state"] == "ready"
    return _json({"name": request.path_params["name"], "ready": ok}, 200 if ok else 503)


# -- the wire format (pure) -------------------------------------------------------------------------


def parse_infer(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[str], dict[str, bool]]:
    """(the JSON header, the texts, {output: binary?} to answer) from an infer request body.

    `header_length` is the `Inference-Header-Content-Length` header: the JSON is that many bytes, and
    binary tensors follow it. Raises `errors.MalformedBody` (400) for a body that cannot be read and
    `errors.InvalidInput` (422) for one that breaks the model's declared input and outputs.
    """
    json_end = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise errors.MalformedBody(
                f"{HEADER_LENGTH} is {header_length!r}; it must be a byte count within the "
                f"{len(body)}-byte body"
            )
        json_end = int(header_length)
    if not body[:json_end].strip():
        raise errors.MalformedBody('the request body is empty; send {"inputs": [{"name": "text", ...}]}')
    try:
        header = json.loads(body[:json_end])
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.MalformedBody(f"malformed JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _ProtocolError(f'expected a JSON object with "inputs", got {type(header).__name__}')
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _ProtocolError(f'"inputs" must be a list holding the input {INPUT!r}, got {inputs!r}')
    for item in inputs:
        if not isinstance(item, dict):
            raise _ProtocolError(
                f"each input must be an object with name, datatype, shape and data; got {item!r}"
            )
    names = [item.get("name") for item in inputs]
    if names != [INPUT]:
        raise _ProtocolError(f"the model takes exactly one input, {INPUT!r}; got inputs {names!r}")
    texts = _texts(inputs[0], body[json_end:])
    return header, texts, _wanted(header)


def _rows(shape: Any) -> int:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape)
        or (len(shape) == 2 and shape[1] != 1)
        or shape[0] < 1
    ):
        raise _ProtocolError(
            f"input {INPUT!r} has shape {shape!r}; it takes [N, 1] (or [N]): N texts, N >= 1"
        )
    if shape[0] > inference.MAX_BATCH_ITEMS:
        raise errors.TextTooLong(
            f"input {INPUT!r} has {shape[0]} rows; an infer request takes at most {inference.MAX_BATCH_ITEMS}"
        )
    rows: int = shape[0]
    return rows


def _texts(tensor: dict[str, Any], tail: bytes) -> list[str]:
    datatype = tensor.get("datatype")
    if datatype != "BYTES":
        raise _ProtocolError(f"input {INPUT!r} has datatype {datatype!r}; it takes 'BYTES' (UTF-8 texts)")
    rows = _rows(tensor.get("shape"))
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if not isinstance(size, int) or size != len(tail):
            raise errors.MalformedBody(
                f"input {INPUT!r} declares binary_data_size {size!r}, but {len(tail)} bytes follow the JSON"
            )
        values: list[Any] = list(_unpack_bytes(tail))
    elif "data" in tensor:
        values = _flatten(tensor["data"])
    else:
        raise _ProtocolError(f'input {INPUT!r} has no "data" and no binary_data_size')
    if len(values) != rows:
        raise _ProtocolError(f"input {INPUT!r} has shape [{rows}, 1] but holds {len(values)} values")
    texts: list[str] = []
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                texts.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise _ProtocolError(f"input {INPUT!r} row {row} is not valid UTF-8") from None
        elif isinstance(value, str):
            texts.append(value)
        else:
            raise _ProtocolError(f"input {INPUT!r} row {row} is {value!r}, not a text")
    return texts


def _flatten(data: Any) -> list[Any]:
    """A row-major flat list from the JSON `data`, flat or nested as the shape."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _unpack_bytes(raw: bytes) -> list[bytes]:
    """BYTES elements in the binary format: each a 4-byte little-endian length, then its bytes."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise errors.MalformedBody(f"binary BYTES tensor ends inside a length prefix at byte {offset}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise errors.MalformedBody(
                f"binary BYTES element at byte {offset - 4} claims {length} bytes; {len(raw) - offset} remain"
            )
        values.append(raw[offset : offset + length])
        offset += length
    return values


def _flag(parameters: Any, key: str) -> bool | None:
    if not isinstance(parameters, dict) or key not in parameters:
        return None
    value = parameters[key]
    if not isinstance(value, bool):
        raise _ProtocolError(f"parameter {key!r} must be true or false, got {value!r}")
    return value


def _wanted(header: dict[str, Any]) -> dict[str, bool]:
    """{output name: in binary?} in the order the request asks for them (default: all, JSON)."""
    default = bool(_flag(header.get("parameters"), "binary_data_output"))
    asked = header.get("outputs")
    if asked is None:
        return dict.fromkeys(OUTPUTS, default)
    if not isinstance(asked, list):
        raise _ProtocolError(f'"outputs" must be a list of {{"name": ...}}, got {asked!r}')
    wanted: dict[str, bool] = {}
    for item in asked:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise _ProtocolError(f"unknown output {name!r}; the model's outputs are {', '.join(OUTPUTS)}")
        binary = _flag(item.get("parameters"), "binary_data")
        wanted[name] = default if binary is None else binary
    return wanted


def _response(
    name: str,
    request_id: Any,
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    wanted: dict[str, bool],
) -> Response:
    rows = len(predictions)
    tensors: dict[str, tuple[str, list[int], list[Any]]] = {
        "label": ("BYTES", [rows, 1], [p.label for p in predictions]),
        "score": ("FP32", [rows, 1], [p.score for p in predictions]),
        "probabilities": (
            "FP32",
            [rows, len(labels)],
            [p.probabilities.get(label, 0.0) for p in predictions for label in labels],
        ),
    }
    outputs, binary = [], []
    for output, as_binary in wanted.items():
        datatype, shape, values = tensors[output]
        entry: dict[str, Any] = {"name": output, "datatype": datatype, "shape": shape}
        if as_binary:
            raw = _pack(datatype, values)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = values
        outputs.append(entry)
    payload: dict[str, Any] = {"model_name": name, "model_version": MODEL_VERSION, "outputs": outputs}
    if isinstance(request_id, str) and request_id:
        payload["id"] = request_id
    head = json.dumps(payload).encode()
    if not binary:
        return Response(head, media_type="application/json")
    return Response(
        b"".join([head, *binary]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def _pack(datatype: str, values: list[Any]) -> bytes:
    if datatype == "FP32":
        return struct.pack(f"<{len(values)}f", *values)
    parts = []
    for value in values:
        encoded = str(value).encode("utf-8")
        parts += [struct.pack("<I", len(encoded)), encoded]
    return b"".join(parts)

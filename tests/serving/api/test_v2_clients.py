"""Triton's and KServe's own v2 clients against a real `carpool serve` on loopback.

`tritonclient.http` (binary tensors by default, JSON on request) and the kserve SDK's
`InferenceRESTClient` ask a pod serving a tiny BERT for its metadata and readiness, classify 1 and
64 texts, and get each row's answer equal to /predict's for the same text. Bad requests fail in
each client the way a Triton's would: its exception carries the pod's status and message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

from tests.support import tinybert
from tests.support.pods import ServingPod

pytestmark = [pytest.mark.integration]

LABELS = list(tinybert.DEFAULT_LABELS)
OPENINGS = ["Dear customer", "Hi team", "URGENT", "Reminder", "Ignore all previous instructions"]
TEXTS = [  # 64 texts of varied length, so that rows batched together are padded
    f"{OPENINGS[i % 5]} {i}: " + " ".join(["verify your account at the link below"] * (1 + i % 4))
    for i in range(64)
]


@pytest.fixture(scope="module")
def pod(tiny_bert: Path) -> Iterator[ServingPod]:
    env = {"ENABLE_LOGGING": "false", "BATCHING_STRATEGY": "adaptive", "MAX_BATCH_SIZE": "16"}
    with ServingPod(models={"tiny": tiny_bert}, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def expected(pod: ServingPod) -> dict[str, dict[str, Any]]:
    """/predict's answer for every text, one request at a time."""
    with httpx.Client(base_url=pod.url, timeout=30) as client:
        return {
            text: client.post("/predict", json={"text": text, "models": ["tiny"]}).json()["predictions"][
                "tiny"
            ]
            for text in TEXTS
        }


@pytest.fixture
def triton_client(pod: ServingPod) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=pod.address)
    yield client
    client.close()


def assert_rows_match(
    expected: dict[str, dict[str, Any]], texts: list[str], labels: Any, scores: Any, probabilities: Any
) -> None:
    assert labels.shape == (len(texts), 1) and scores.shape == (len(texts), 1)
    assert probabilities.shape == (len(texts), len(LABELS))
    for row, text in enumerate(texts):
        answer = expected[text]
        label = labels[row][0]
        assert (label.decode() if isinstance(label, bytes) else label) == answer["label"]
        assert scores[row][0] == pytest.approx(answer["score"], rel=1e-5)
        assert list(probabilities[row]) == pytest.approx(
            [answer["probabilities"][k] for k in LABELS], rel=1e-5
        )


# -- tritonclient -------------------------------------------------------------------------------------


def test_triton_client_reads_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("tiny") and triton_client.is_model_ready("tiny", "1")
    assert not triton_client.is_model_ready("nope")
    assert triton_client.get_server_metadata()["name"] == "carpool"
    metadata = triton_client.get_model_metadata("tiny")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("label", "BYTES", [-1, 1]),
        ("score", "FP32", [-1, 1]),
        ("probabilities", "FP32", [-1, 4]),
    ]


def triton_text(texts: list[str], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_), binary_data=binary)
    return tensor


@pytest.mark.parametrize("rows", [1, 64])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_client_infers_each_row_as_predict_does(
    triton_client: triton.InferenceServerClient, expected: dict[str, dict[str, Any]], rows: int, binary: bool
) -> None:
    texts = TEXTS[:rows]
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "score", "probabilities")
    ]
    result = triton_client.infer("tiny", [triton_text(texts, binary)], outputs=outputs, request_id="r1")
    assert result.get_response()["id"] == "r1"
    assert_rows_match(
        expected, texts, result.as_numpy("label"), result.as_numpy("score"), result.as_numpy("probabilities")
    )


def test_triton_client_default_outputs_come_back_binary(
    triton_client: triton.InferenceServerClient, expected: dict[str, dict[str, Any]]
) -> None:
    result = triton_client.infer("tiny", [triton_text(TEXTS[:5], binary=True)], model_version="1")
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert_rows_match(
        expected,
        TEXTS[:5],
        result.as_numpy("label"),
        result.as_numpy("score"),
        result.as_numpy("probabilities"),
    )


def wrong_datatype() -> triton.InferInput:
    tensor = triton.InferInput("text", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[0.5]], dtype=np.float32))
    return tensor


def wrong_shape() -> triton.InferInput:
    tensor = triton.InferInput("text", [1, 2], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=np.object_))
    return tensor


@pytest.mark.parametrize(
    ("model", "make", "status", "message"),
    [
        pytest.param(
            "nope",
            lambda: triton_text(["hi"], True),
            "404",
            "unknown model 'nope'; this pod serves tiny",
            id="unknown-model",
        ),
        pytest.param(
            "tiny",
            wrong_datatype,
            "422",
            "input 'text' has datatype 'FP32'; it takes 'BYTES'",
            id="wrong-datatype",
        ),
        pytest.param(
            "tiny", wrong_shape, "422", "input 'text' has shape [1, 2]; it takes [N, 1]", id="wrong-shape"
        ),
        pytest.param(
            "tiny",
            lambda: triton_text(["fine", ""], True),
            "422",
            "input 'text' row 1: text must not be empty or blank",
            id="empty-text",
        ),
    ],
)
def test_triton_client_gets_the_pods_errors(
    triton_client: triton.InferenceServerClient, model: str, make: Any, status: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer(model, [make()])
    assert caught.value.status() == status
    assert message in caught.value.message()


# -- the kserve SDK ------------------------------------------------------------------------------------


@pytest.fixture
async def kserve_client() -> Any:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    yield client
    await client.close()


async def test_kserve_client_reads_health(pod: ServingPod, kserve_client: InferenceRESTClient) -> None:
    assert await kserve_client.is_server_live(pod.url) is True
    assert await kserve_client.is_server_ready(pod.url) is True
    assert await kserve_client.is_model_ready(pod.url, "tiny") is True
    assert await kserve_client.is_model_ready(pod.url, "nope") is False


@pytest.mark.parametrize("rows", [1, 64])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_kserve_client_infers_each_row_as_predict_does(
    pod: ServingPod,
    kserve_client: InferenceRESTClient,
    expected: dict[str, dict[str, Any]],
    rows: int,
    binary: bool,
) -> None:
    texts = TEXTS[:rows]
    tensor = InferInput("text", [rows, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t] for t in texts], dtype=np.object_), binary_data=binary)
    response = await kserve_client.infer(pod.url, InferRequest("tiny", [tensor], request_id="k1"), "tiny")
    assert (response.model_name, response.id) == ("tiny", "k1")
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    assert_rows_match(expected, texts, outputs["label"], outputs["score"], outputs["probabilities"])


@pytest.mark.parametrize(
    ("model", "tensor", "status", "message"),
    [
        pytest.param(
            "nope",
            InferInput("text", [1, 1], "BYTES", data=["hi"]),
            404,
            "unknown model 'nope'",
            id="unknown-model",
        ),
        pytest.param(
            "tiny",
            InferInput("text", [1, 1], "INT32", data=[3]),
            422,
            "input 'text' has datatype 'INT32'",
            id="wrong-datatype",
        ),
        pytest.param(
            "tiny",
            InferInput("text", [1, 3], "BYTES", data=["a", "b", "c"]),
            422,
            "input 'text' has shape [1, 3]",
            id="wrong-shape",
        ),
        pytest.param(
            "tiny",
            InferInput("text", [1, 1], "BYTES", data=[" "]),
            422,
            "input 'text' row 0: text must not be empty or blank",
            id="empty-text",
        ),
    ],
)
async def test_kserve_client_gets_the_pods_errors(
    pod: ServingPod,
    kserve_client: InferenceRESTClient,
    model: str,
    tensor: InferInput,
    status: int,
    message: str,
) -> None:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await kserve_client.infer(pod.url, InferRequest(model, [tensor]), model)
    assert caught.value.response.status_code == status
    assert message in str(caught.value)

"""`carpool bench --protocol v2` against real servers: a `carpool serve` (strategies still set and
its batches counted, every request through /v2/models/tiny/infer) and a model served by KServe's own
model server, which is not a Carpool and is driven as it is configured."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from carpool_bench import command, loadgen, server, v2
from tests.support.pods import REPO_ROOT, ServingPod

pytestmark = pytest.mark.integration

TOKEN = "bench-admin-token"
QUICK = ["--duration", "0.3", "--warmup", "0.1", "--texts", "24", "--reference-seconds", "0.05"]


@pytest.fixture(scope="module")
def pod(tiny_bert: Path) -> Iterator[ServingPod]:
    env = {"CARPOOL_ADMIN_TOKEN": TOKEN, "BATCHING_STRATEGY": "single_request", "MAX_BATCH_SIZE": "8"}
    with ServingPod(models={"tiny": tiny_bert}, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def kserve_url(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny BERT behind KServe's model server (input `input_text`, shape [-1]) on loopback."""
    port = server.free_port()
    log = tmp_path_factory.mktemp("kserve") / "kserve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.kserve_model", "tiny", str(tiny_bert), str(port)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v2/models/tiny/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def served_v2_requests(url: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(
            'carpool_requests_total{endpoint="/v2/models/{name}/infer",model="tiny",outcome="ok"}'
        ):
            total += float(line.rpartition(" ")[2])
    return total


def test_the_requests_are_v2_infer_calls_with_the_models_input() -> None:
    target = loadgen.Target("10.0.0.5", 8000, "/pods/a")
    metadata = {"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [-1]}]}
    (request,) = v2.encode_requests(target, ["héllo"], "tiny", v2.text_input(metadata, "tiny"))
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[:2] == [b"POST /pods/a/v2/models/tiny/infer HTTP/1.1", b"Host: 10.0.0.5:8000"]
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {
        "inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [1], "data": ["héllo"]}]
    }


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        pytest.param(
            [{"name": "ids", "datatype": "INT64", "shape": [-1, 128]}],
            "exactly one BYTES input",
            id="no-text",
        ),
        pytest.param(
            [
                {"name": "a", "datatype": "BYTES", "shape": [-1]},
                {"name": "b", "datatype": "BYTES", "shape": [-1]},
            ],
            "exactly one BYTES input",
            id="two-inputs",
        ),
        pytest.param(
            [{"name": "t", "datatype": "BYTES", "shape": [-1, 2]}], "holds one element", id="two-per-row"
        ),
    ],
)
def test_a_model_the_bench_cannot_drive_is_refused_with_the_reason(
    inputs: list[object], problem: str
) -> None:
    with pytest.raises(server.BenchError, match=problem):
        v2.text_input({"inputs": inputs}, "m")


def test_a_carpool_is_driven_through_v2_with_its_strategies_set(
    pod: ServingPod, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = served_v2_requests(pod.url)
    argv = ["--url", pod.url, "--token", TOKEN, "--model", "tiny", "--strategies", "batch_optimized,adaptive"]
    code = command.main(
        [*argv, "--protocol", "v2", "--concurrency", "1,4", *QUICK, "--output", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["meta"]["protocol"] == "v2"
    cells = results["cells"]
    assert [(c["strategy"], c["concurrency"]) for c in cells] == [
        ("batch_optimized", 1),
        ("batch_optimized", 4),
        ("adaptive", 1),
        ("adaptive", 4),
    ]
    assert all(c["completed"] > 0 and c["non_2xx"] == 0 and c["errors"] == 0 for c in cells)
    assert all(1 <= c["avg_batch_size"] <= 8 for c in cells)  # read from the pod, as over /predict
    assert served_v2_requests(pod.url) - before >= sum(c["completed"] for c in cells)
    assert httpx.get(f"{pod.url}/batching/stats").json()["config"]["strategy"] == "single_request"


def test_any_v2_server_is_driven_as_it_is_served(
    kserve_url: str, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", kserve_url, "--model", f"tiny={tiny_bert}", "--protocol", "v2", "--concurrency", "1,2"]
    assert command.main([*argv, *QUICK, "--output", str(tmp_path)]) == 0, capsys.readouterr().err
    assert "is a v2 server but not a Carpool" in capsys.readouterr().out
    results = json.loads((tmp_path / "bench.json").read_text())
    assert [(c["strategy"], c["concurrency"]) for c in results["cells"]] == [
        ("as_served", 1),
        ("as_served", 2),
    ]
    assert all(c["completed"] > 0 and c["non_2xx"] == 0 and c["errors"] == 0 for c in results["cells"])
    assert all(c["avg_batch_size"] is None for c in results["cells"])
    assert results["references"]["ceiling"]["texts_per_s"] > 0  # the raw model still measured beside it
    # no bound from Carpool's rider choice for a server that is not a Carpool
    assert all(run["fed_texts_per_s"] is None for run in results["cell_runs"])
    assert not any("raw fed" in check["name"] for check in results["checks"])


def test_a_server_without_v2_is_refused(
    pod: ServingPod, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = command.main(
        ["--url", pod.url, "--model", "missing", "--protocol", "v2", "--output", str(tmp_path)]
    )
    assert code == 1
    assert f"{pod.url}/v2/health/ready or /v2/models/missing/ready is not 200" in capsys.readouterr().err

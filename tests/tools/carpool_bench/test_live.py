"""`carpool bench` against real `carpool serve` processes serving a tiny BERT: the client counts what
the server answered, a running server is driven and left as it was found, `--spawn` runs the
whole grid end to end in rounds, writing the tables, the results file and the plot, and `--model
tiny` builds and serves its own tiny BERT and sends the user's texts."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from carpool_bench import command, loadgen, server
from serving.models import runtime
from tests.support.pods import ServingPod

pytestmark = pytest.mark.integration

TOKEN = "bench-admin-token"
QUICK = [
    *("--duration", "0.5", "--warmup", "0.2", "--texts", "24", "--reference-seconds", "0.05", "--rounds", "1")
]


@pytest.fixture(scope="module")
def pod(tiny_bert: Path) -> Iterator[ServingPod]:
    env = {
        "CARPOOL_ADMIN_TOKEN": TOKEN,
        "BATCHING_STRATEGY": "single_request",
        "MAX_BATCH_SIZE": "8",
        "CARPOOL_RUNTIME": "auto",  # the default a user gets: onnx-int8 for a model without a card
    }
    with ServingPod(models={"tiny": tiny_bert}, env=env) as running:
        yield running


def _served_requests(url: str) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "carpool_requests_total" and sample.labels.get("endpoint") == "/predict":
                outcomes[sample.labels["outcome"]] += int(sample.value)
    return outcomes


async def test_a_run_counts_what_the_server_answered(pod: ServingPod) -> None:
    before = _served_requests(pod.url)
    corpus = ["Your parcel is held, pay the fee", "lunch at 12?", "", "Ignore all previous instructions"]
    result = await loadgen.run_load(pod.url, corpus, "tiny", concurrency=4, duration_s=0.6, warmup_s=0.2)
    served = _served_requests(pod.url) - before
    assert result.errors == 0, result.error_samples
    assert sum(result.statuses.values()) == served["ok"] + served["invalid"]
    assert result.statuses[200] == served["ok"] > 0
    assert result.non_2xx == served["invalid"] > 0  # the empty text is refused each time it is sent
    assert set(result.statuses) == {200, 422}
    assert 0 < result.completed <= result.statuses[200]
    assert result.throughput == pytest.approx(result.completed / 0.6)
    assert all(0 < latency < 0.8 for latency in result.latencies_s)


def test_a_running_server_is_driven_and_its_config_put_back(
    pod: ServingPod, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", pod.url, "--token", TOKEN, "--model", "tiny", "--strategies", "batch_optimized,adaptive"]
    code = command.main([*argv, "--concurrency", "1,4", *QUICK, "--output", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["meta"]["spawned"] is False
    assert results["meta"]["model_path"] == str(tiny_bert.resolve())  # read from /models/status
    # the pod runs tiny in onnx-int8 (auto, no card): the rounds' references run in that runtime, on
    # the server's export, and eager torch's stand beside them
    assert results["meta"]["server_runtime"] == "onnx-int8"
    optimized = results["references"]
    assert [optimized[key]["label"] for key in ("single", "ceiling", "arrival")] == [
        "raw batch 1 [onnx-int8]",
        "raw batch 32, sorted (ceiling) [onnx-int8]",
        "raw batch 32, arrival order [onnx-int8]",
    ]
    eager = results["meta"]["eager_references"]
    assert list(eager) == ["raw batch 1", "raw batch 32, sorted (ceiling)", "raw batch 32, arrival order"]
    assert all(ref["texts_per_s"] > 0 for ref in eager.values())
    cells = results["cells"]
    assert [(c["strategy"], c["concurrency"]) for c in cells] == [
        ("batch_optimized", 1),
        ("batch_optimized", 4),
        ("adaptive", 1),
        ("adaptive", 4),
    ]
    assert all(c["completed"] > 0 and c["non_2xx"] == 0 and c["errors"] == 0 for c in cells)
    assert all(1 <= c["avg_batch_size"] <= 8 for c in cells)
    config = httpx.get(f"{pod.url}/batching/stats").json()["config"]
    assert config["strategy"] == "single_request" and config["max_batch_size"] == 8
    assert "put the server's batching config back" in capsys.readouterr().out


def test_without_the_admin_token_the_bench_says_what_is_missing(
    pod: ServingPod, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARPOOL_ADMIN_TOKEN", raising=False)
    assert command.main(["--url", pod.url, "--model", "tiny", "--output", str(tmp_path)]) == 1
    assert "pass the admin token with --token" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_spawn_runs_the_grid_and_writes_table_results_and_plot(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--spawn",
        "--model",
        f"tiny={tiny_bert}",
        "--concurrency",
        "1,4",
        *QUICK,
        "--rounds",
        "2",
        "--output",
        str(tmp_path),
    ]
    assert command.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "[bench] reference: raw batch 1\n" in out
    assert "[bench] cell 6/12, round 1/2: adaptive at concurrency 4" in out
    assert "[bench] cell 12/12, round 2/2: single_request at concurrency 1" in out  # backwards
    assert "[bench] references 5/5: sorted ceiling" in out
    # each concurrency-1 cell is followed by its served requests alternated with the raw call
    assert out.count("  alternated with the raw batch-1 call: served p50 ") == 6
    # each batching cell at the top concurrency is followed by the raw model fed from its queue
    assert out.count("  the raw model fed from a full queue of 4 (the pod's pick): ") == 4
    table = (tmp_path / "bench.txt").read_text()
    assert table in out
    assert "strategy          conc    req/s   p50 ms" in table and "medians over 2 rounds" in table
    assert "Spread over the 2 rounds (lowest-highest):" in table
    assert "Ratios (same run, medians over the rounds):" in table
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["meta"]["spawned"] is True
    # the references ran where the server runs the model (cpu here, cuda on a GPU machine)
    assert results["meta"]["server_device"] == results["references"]["device"]
    assert results["meta"]["server_dtype"] == results["references"]["dtype"]
    assert 0 <= results["meta"]["server_cpu_during_references"] < 0.5
    assert [c["strategy"] for c in results["cells"]] == ["single_request"] * 2 + ["batch_optimized"] * 2 + [
        "adaptive"
    ] * 2
    assert all(c["rounds"] == 2 for c in results["cells"])
    assert all(c["completed"] > 0 and c["non_2xx"] == 0 and c["errors"] == 0 for c in results["cells"])
    assert all(0 <= c["other_load"] <= 1 for c in results["cells"])
    assert all(0 <= results["references"][r]["other_load"] <= 1 for r in ("single", "ceiling", "arrival"))
    assert results["references"]["ceiling"]["texts_per_s"] > 0
    # every cell lies between two reference measurements, and was read against them
    runs, refs = results["cell_runs"], results["reference_runs"]
    assert len(runs) == 12 and len(refs) == 5
    moments = [r["at_s"] for r in refs]
    assert moments == sorted(moments)
    for run in runs:
        assert any(a <= run["at_s"] <= b for a, b in itertools.pairwise(moments))
        low, high = sorted(_ceilings_around(refs, run["at_s"]))
        assert low <= run["ceiling_texts_per_s"] <= high
    fed = [(r["strategy"], r["fed_batch_size"]) for r in runs if r["fed_texts_per_s"] is not None]
    assert sorted(s for s, _ in fed) == ["adaptive"] * 2 + ["batch_optimized"] * 2
    assert all(1 <= size <= 4 for _, size in fed)  # never more riders than the queue of 4 holds
    assert all(r["fed_ratio"] > 0 for r in runs if r["fed_texts_per_s"] is not None)
    assert {check["name"] for check in results["checks"]} >= {
        "raw fed from a queue of 4 / sorted ceiling",
        "adaptive c=4 / raw fed from a queue of 4",
        "batch_optimized c=4 / sorted ceiling",
        "adaptive c=1 p50 - raw batch 1 p50",
        "adaptive c=1 p50 - raw batch 1 p50, paired",
        "batch_optimized / single_request c=4",
    }
    png = (tmp_path / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert "Finished server process" in (tmp_path / "server.log").read_text()
    with pytest.raises(httpx.ConnectError):  # the spawned server is gone
        httpx.get(f"{results['meta']['url']}/health")


def _ceilings_around(refs: list[dict[str, Any]], at_s: float) -> tuple[float, float]:
    before = max((r for r in refs if r["at_s"] <= at_s), key=lambda r: r["at_s"])
    after = min((r for r in refs if r["at_s"] >= at_s), key=lambda r: r["at_s"])
    return before["ceiling"]["texts_per_s"], after["ceiling"]["texts_per_s"]


def test_model_tiny_builds_serves_and_benches_a_tiny_bert_on_the_user_s_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "traffic.jsonl"
    lines = [
        '{"text": "Verify your account at bit.ly/x", "label": "phishing"}',
        '"lunch at 12?"',
        "",
        '{"text": "ok"}',
    ]
    mine.write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "out"
    argv = ["--spawn", "--model", "tiny", "--texts-file", str(mine), "--strategies", "adaptive"]
    argv += ["--concurrency", "8", *QUICK[:4], "--reference-seconds", "0.05", "--rounds", "2"]
    argv += ["--reference-every", "1", "--output", str(out_dir)]
    assert command.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    built = out_dir / "tiny-model"
    assert f"building the tiny BERT (1 layer, hidden 32, the MiniLM tokenizer) in {built}" in out
    config = json.loads((built / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (1, 32)
    results = json.loads((out_dir / "bench.json").read_text())
    meta = results["meta"]
    assert meta["model"] == "tiny" and meta["model_path"] == str(built.resolve())
    assert meta["texts"] == 3 and meta["texts_source"] == f"3 texts from {mine}" and meta["seed"] is None
    assert results["references"]["tokens_max"] <= 16  # the user's short texts, not the generated ones
    [row] = results["cells"]
    assert row["rounds"] == 2 and row["non_2xx"] == 0 and row["errors"] == 0 and row["throughput"] > 0
    assert len(results["cell_runs"]) == 2 and len(results["reference_runs"]) == 3
    assert row["spread"]["throughput"][0] <= row["throughput"] <= row["spread"]["throughput"][1]


def test_foreign_load_counts_other_processes_not_the_bench_or_its_server() -> None:
    idle_server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        probe = server.ForeignLoad(idle_server.pid)
        spinner = subprocess.Popen(
            [sys.executable, "-c", "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass"]
        )
        spinner.wait()
        share = probe.share()
    finally:
        idle_server.kill()
        idle_server.wait()
    cores = psutil.cpu_count() or 1
    assert 0.5 <= share * cores <= cores  # the spinner kept about one core busy


def test_foreign_load_counts_the_servers_worker_processes_as_the_server() -> None:
    """A pod's HTTP workers are its model process's children: their CPU is the server's, not
    foreign load (it was, and a quiet machine read as 45 % busy with other work). One child here
    spins and stays, like a worker; the other spins and ends, like a worker started again."""
    spin = "import time\nend = time.time() + 0.4\nwhile time.time() < end: pass\n"
    pod = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"stays = subprocess.Popen([sys.executable, '-c', {spin + 'time.sleep(30)'!r}])\n"
            f"subprocess.Popen([sys.executable, '-c', {spin!r}]).wait()\n"
            "time.sleep(30)",
        ]
    )
    try:
        probe = server.ForeignLoad(pod.pid)
        time.sleep(1.0)  # both children spin, then the pod idles
        share = probe.share()
        tree_cpu = server.tree_cpu_seconds(psutil.Process(pod.pid))  # what Spawned.cpu_seconds reads
    finally:
        for child in psutil.Process(pod.pid).children(recursive=True):
            child.kill()
        pod.kill()
        pod.wait()
    cores = psutil.cpu_count() or 1
    assert share * cores < 0.3  # both children's 0.8 core-seconds counted as the server's
    assert tree_cpu >= 0.7


def test_a_runtime_the_bench_cannot_check_itself_is_reported_not_a_traceback(
    pod: ServingPod, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod serves tiny under onnx-int8 (auto); the bench's own probe check of that export, held
    here to no difference at all, refuses it: the bench says so and exits 1."""
    monkeypatch.setitem(runtime.TOLERANCE, "onnx-int8", 0.0)
    argv = ["--url", pod.url, "--model", "tiny", "--token", TOKEN, "--output", str(tmp_path), *QUICK]
    assert command.main(argv) == 1
    err = capsys.readouterr().err
    assert "the server runs 'tiny' under onnx-int8, but the bench cannot measure its raw references" in err
    assert "probe check failed" in err and "CARPOOL_RUNTIME=torch" in err
    assert not (tmp_path / "bench.json").exists()

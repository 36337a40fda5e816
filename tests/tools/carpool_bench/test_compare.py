"""`carpool bench --compare`: batching configs compared offline on recorded texts, against a real
`carpool serve` with a tiny BERT; and the tests it reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from carpool_bench import command, compare
from tests.support.pods import ServingPod

TOKEN = "compare-token"


@pytest.fixture(scope="module")
def pod(tiny_bert: Path) -> Iterator[ServingPod]:
    env = {"CARPOOL_ADMIN_TOKEN": TOKEN, "CARPOOL_WORKERS": "0", "ENABLE_LOGGING": "false"}
    with ServingPod(models={"tiny": tiny_bert}, env=env) as running:
        yield running


@pytest.mark.integration
def test_two_strategies_are_compared_on_recorded_texts(
    pod: ServingPod, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"recorded message number {i}" for i in range(40)) + "\n")
    before = httpx.get(f"{pod.url}/batching/stats").json()["config"]
    argv = [
        "--url", pod.url, "--model", "tiny", "--token", TOKEN, "--texts-file", str(texts),
        "--compare", "a=batch_optimized,max_wait_time_ms=30", "--compare", "b=single_request",
        "--concurrency", "1", "--rounds", "2", "--duration", "1", "--warmup", "0.2",
        "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    assert command.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert results["control"] == "a" and results["texts"] == f"40 texts from {texts}"
    a, b = results["rows"]
    assert (a["variant"], b["variant"]) == ("a", "b")
    # A lone client: a holds each request its whole 30 ms window, b answers at once
    assert a["p50_ms"] > 25 > b["p50_ms"]
    assert b["latency_significant"] is True and b["latency_p"] < 1e-6
    assert b["throughput"] > a["throughput"] and len(b["throughput_rounds"]) == 2
    assert b["throughput_significant"] is False  # two rounds cannot make a sign test significant
    assert a["errors"] == b["errors"] == 0 and b["errors_p"] == 1.0
    assert "p latency" in printed and "<1e-4 *" in printed
    # the server's config is put back
    assert httpx.get(f"{pod.url}/batching/stats").json()["config"] == before


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("adaptive", "NAME=STRATEGY", id="no-name"),
        pytest.param("a=fastest", "strategy", id="unknown-strategy"),
        pytest.param("a=adaptive,max_wait=3", "unknown knob 'max_wait'", id="unknown-knob"),
        pytest.param("a=adaptive,max_batch_size=0", "max_batch_size", id="bad-value"),
        pytest.param("a=adaptive,min_batch_size=64", "min_batch_size", id="min-above-max"),
        pytest.param("a=adaptive,20", "expected KNOB=VALUE", id="bare-value"),
    ],
)
def test_bad_variants_are_refused_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare.parse_variant(text)


@pytest.mark.unit
def test_a_variant_takes_a_strategy_and_knobs() -> None:
    variant = compare.parse_variant("b=batch_optimized,max_wait_time_ms=20,enable=true,load_threshold=0.5")
    assert variant == compare.Variant(
        "b", {"strategy": "batch_optimized", "max_wait_time_ms": 20, "enable": True, "load_threshold": 0.5}
    )
    assert compare.parse_variant("c=max_batch_size=8").changes == {"max_batch_size": 8}

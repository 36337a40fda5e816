"""schemathesis against real pods' own OpenAPI documents: every answer documented, no 5xx.

Bounded: a fixed seed and a fixed number of examples per operation (about 20 s a run here). The
checks' few project-specific settings are in schemathesis.toml at the repository root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pods import REPO_ROOT, ServingPod

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
EXAMPLES = "15"


def _fuzz(pod: ServingPod, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{pod.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        EXAMPLES,
        "--seed",
        "1",
        "--no-color",
        *extra,
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("pod_token", "headers"),
    [
        pytest.param(TOKEN, ["-H", f"Authorization: Bearer {TOKEN}"], id="token-given"),
        pytest.param(TOKEN, [], id="token-withheld"),
        pytest.param(None, [], id="pod-without-token"),
    ],
)
def test_the_fuzzer_finds_no_5xx_and_no_answer_outside_the_document(
    tiny_bert: Path, pod_token: str | None, headers: list[str]
) -> None:
    # The fuzzer may configure holds of up to 2 x 60 s (max_wait_time_ms, min_batch_size); a 5 s
    # default deadline answers a held request with the documented 504 before the client's 10 s timeout.
    env = {"CARPOOL_WORKERS": "1", "ENABLE_LOGGING": "false", "CARPOOL_REQUEST_TIMEOUT_MS": "5000"}
    if pod_token:
        env["CARPOOL_ADMIN_TOKEN"] = pod_token
    with ServingPod(models={"tiny": tiny_bert}, env=env) as pod:
        done = _fuzz(pod, *headers)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failures" not in done.stdout.splitlines()[-1]

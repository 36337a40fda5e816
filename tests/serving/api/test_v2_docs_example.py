"""docs/serving.md's tritonclient example, run as written against a real `carpool serve` with MiniLM.

Only the address changes: the example says `localhost:8000`, the pod listens on a free port.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pods import REPO_ROOT, ServingPod

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABELS = ["benign", "phishing", "spam", "prompt_injection"]
MARKER = "<!-- v2-example:"


def example() -> str:
    doc = (REPO_ROOT / "docs" / "serving.md").read_text()
    found = re.search(re.escape(MARKER) + r"[^\n]*\n```python\n(.*?)```", doc, re.DOTALL)
    assert found is not None, f"docs/serving.md lost its {MARKER} python block"
    return found.group(1)


@pytest.fixture(scope="module")
def pod() -> Iterator[ServingPod]:
    with ServingPod(env={"ENABLE_LOGGING": "false"}, startup_timeout=240) as running:
        yield running


def test_the_tritonclient_example_runs_as_written(pod: ServingPod, tmp_path: Path) -> None:
    code = example()
    assert code.count('"localhost:8000"') == 1
    script = tmp_path / "example.py"
    script.write_text(code.replace('"localhost:8000"', f'"{pod.address}"'))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line, text in zip(
        lines, ["Verify your password at http://example.com/login", "Lunch at noon on Friday?"], strict=True
    ):
        label, rest = line.split(maxsplit=1)
        probabilities = ast.literal_eval(rest[: rest.rindex("}") + 1])
        assert label in LABELS and list(probabilities) == LABELS
        assert max(probabilities, key=probabilities.get) == label
        assert rest.endswith(repr(text))

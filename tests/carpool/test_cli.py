"""The `carpool` command: its subcommands, `serve`'s checks, lazy dispatch, and the extra a command lacks."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from carpool import cli

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_all_four_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "train", "bench", "operator"):
        assert command in out


def test_no_subcommand_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: carpool" in capsys.readouterr().out


def test_serve_help_names_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--model NAME=PATH", "--models-dir", "--workers"):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["serve", "--model", "nopath"], "a model is given as NAME=PATH, got 'nopath'", id="no-equals"
        ),
        pytest.param(["serve", "--model", "bad name=/m"], "model name 'bad name'", id="bad-name"),
        pytest.param(
            ["serve", "--models-dir", "/no/such"], "models directory '/no/such' does not exist", id="dir"
        ),
    ],
)
def test_serve_refuses_bad_models_before_starting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_a_bad_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_BATCH_SIZE", "0")
    assert cli.main(["serve"]) == 2
    assert "MAX_BATCH_SIZE" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "flag"), [("train", "--base"), ("bench", "--help")])
def test_other_subcommands_get_the_rest_of_the_command_line(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert flag in capsys.readouterr().out


def test_carpool_operator_never_imports_torch() -> None:
    script = (
        "import sys\n"
        "from carpool.cli import main\n"
        "try:\n    main(['operator', '--help'])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")])}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]], ids=["bare", "serve"])
def test_python_m_serving_is_carpool_serve(argv: list[str]) -> None:
    """The pod's own entry point (what `carpool bench --spawn` and the tests start) keeps serving."""
    result = subprocess.run(
        [sys.executable, "-m", "serving", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: carpool serve") and "--models-dir" in result.stdout


def _tools_own_modules() -> set[str]:
    """The import names of what the `tools` extra installs beyond the `serving` one."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~ ;]", text)[0].lower().replace("_", "-") for text in requirements}

    own = names(extras["tools"]) - names(extras["serving"]) - {"carpool"}
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(distribution.lower().replace("_", "-") in own for distribution in distributions)
    }


def test_bench_without_the_tools_extra_names_it_before_running() -> None:
    blocked = _tools_own_modules()
    assert "matplotlib" in blocked
    script = f"import sys\nfor name in {sorted(blocked)!r}:\n    sys.modules[name] = None\n" + (
        "from carpool import cli\nsys.exit(cli.main(['bench', '--url', 'http://127.0.0.1:9']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "carpool bench: cannot import 'matplotlib' (No module named 'matplotlib'). "
        "Install the 'tools' extra: pip install 'carpool[tools]'"
    ]

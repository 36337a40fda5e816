"""The two images: linted, non-root, and built with the install commands that CI proves.

There is no Docker engine here, so the images are not built in the tests; what can drift is
checked instead: hadolint's rules, the torch pin against the Makefile's, the extras against
pyproject.toml, the build context against .dockerignore, and the ports and commands against
the chart.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.charts import rendering

pytestmark = pytest.mark.unit

REPO = rendering.REPO
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = ("Dockerfile.serving", "Dockerfile.operator")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def stages(dockerfile: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the build stages with their (INSTRUCTION, arguments) in order."""
    lines = (REPO / dockerfile).read_text().splitlines()
    # As Docker does: comment lines go first (even inside a continued instruction), then the
    # continued lines are joined.
    logical = "\n".join(line for line in lines if not line.lstrip().startswith("#")).replace("\\\n", " ")
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            found.append(Stage(base=words[0], name=words[2] if len(words) > 2 else None))
        elif found:
            found[-1].instructions.append((keyword, args.strip()))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip()
    return global_args, found


def makefile_torch_pin() -> str:
    match = re.search(r"^TORCH := (torch==\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins torch as TORCH := torch==X"
    return match.group(1)


def arg_default(stage: Stage, name: str) -> str:
    for args in stage.all("ARG"):
        key, _, default = args.partition("=")
        if key == name:
            return default
    raise AssertionError(f"no ARG {name} in the stage")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", dockerfile], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_final_image_runs_as_a_non_root_user_without_the_source_tree(dockerfile: str) -> None:
    _, found = stages(dockerfile)
    final = found[-1]
    user = final.all("USER")[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, user
    # Only the built virtualenv comes across: no source tree, no compilers, no pip cache.
    assert final.all("COPY") == ["--from=build /opt/carpool /opt/carpool"]
    assert final.all("WORKDIR") == ["/home/carpool"]
    assert final.all("ENTRYPOINT") == ['["carpool"]']


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_base_image_is_pinned(dockerfile: str) -> None:
    global_args, found = stages(dockerfile)
    base = global_args["BASE_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert {stage.base for stage in found} == {"${BASE_IMAGE}"}


def test_the_serving_image_installs_torch_as_ci_does_then_the_serving_extra() -> None:
    _, found = stages("Dockerfile.serving")
    build = found[0]
    runs = build.all("RUN")
    torch_step = next(run for run in runs if "torch==" in run)
    pin = "torch==" + arg_default(build, "TORCH_VERSION")
    assert pin == makefile_torch_pin()
    assert '"torch==${TORCH_VERSION}"' in torch_step
    # The default index serves the CPU build; a plain `torch` from PyPI would be the CUDA one.
    assert arg_default(build, "TORCH_INDEX_URL").endswith("/whl/cpu")
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_step
    install_step = runs.index(next(run for run in runs if "'.[serving]'" in run))
    assert runs.index(torch_step) < install_step, "torch goes first, so the serving extra cannot pull another"


def test_the_operator_image_installs_the_operator_extra_and_no_torch() -> None:
    _, found = stages("Dockerfile.operator")
    installs = [
        shlex.split(run.split("pip install", 1)[1]) for run in found[0].all("RUN") if "pip install" in run
    ]
    assert installs == [[".[operator]"]]
    assert not [args for stage in found for _, args in stage.instructions if "torch" in args.lower()]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    heavy = {"torch", "transformers", "tokenizers", "fastapi", "uvicorn"}
    assert not {re.split(r"[\[<>=!~ ]", requirement)[0] for requirement in extras["operator"]} & heavy


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_build_context_holds_what_the_build_copies(dockerfile: str) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, glob) or path.startswith(glob + "/"):
                keep = negated
        return keep

    _, found = stages(dockerfile)
    sources = [src for copy in found[0].all("COPY") for src in copy.split()[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert included(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    assert not included(".venv") and not included(".git") and not included("models")


def test_the_images_listen_where_the_chart_and_the_operator_look() -> None:
    _, serving = stages("Dockerfile.serving")
    _, operator = stages("Dockerfile.operator")
    health_port = rendering.chart().values["operator"]["healthPort"]
    assert serving[-1].all("EXPOSE") == ["8000"]
    assert "/health'" in serving[-1].all("HEALTHCHECK")[0]
    assert serving[-1].all("CMD") == ['["serve", "--host", "0.0.0.0"]']
    assert operator[-1].all("EXPOSE") == [str(health_port)]
    assert f"127.0.0.1:{health_port}/healthz" in operator[-1].all("HEALTHCHECK")[0]
    # The chart passes its own arguments, starting with the same sub-command as the image's CMD.
    assert operator[-1].all("CMD") == ['["operator"]']
    container = rendering.operator_container(rendering.rendered(rendering.DEFAULT))
    assert container["args"][0] == "operator"


OPERATOR_WITHOUT_SERVING_EXTRA = """
import sys

# As absent as in the operator image: importing them raises ModuleNotFoundError, and a library that
# first asks importlib.util.find_spec (python-json-logger does, for orjson) is told None.
for name in BLOCKED:
    sys.modules[name] = None
from carpool_operator import command, settings
from carpool import cli

command.build(settings.OperatorConfig())
try:
    code = cli.main(["operator", "--help"])
except SystemExit as exit:
    code = exit.code
sys.exit(code)
"""


def test_the_operator_runs_without_the_serving_extra() -> None:
    """What `pip install '.[operator]'` leaves out (torch, fastapi, matplotlib...) is never imported."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {
            re.split(r"[\[<>=!~ ;]", requirement)[0].lower().replace("_", "-") for requirement in requirements
        }

    extras = project["optional-dependencies"]
    # (the tools' extra names the serving one as carpool[serving]: the distribution itself stays)
    left_out = names(extras["serving"] + extras["tools"]) - names(
        ["carpool", *project["dependencies"], *extras["operator"]]
    )
    blocked = sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(distribution.lower().replace("_", "-") in left_out for distribution in distributions)
    )
    assert "torch" in blocked and "fastapi" in blocked
    result = subprocess.run(
        [sys.executable, "-c", f"BLOCKED = {set(blocked)!r}\n" + OPERATOR_WITHOUT_SERVING_EXTRA],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO)])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--liveness" in result.stdout


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution that installing `requirements` brings, read from what is installed here."""
    found: set[str] = set()
    seen: set[tuple[str, str]] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        found.add(name)
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            if name == "carpool":
                below = [*PROJECT["dependencies"], *PROJECT["optional-dependencies"].get(extra, [])]
            else:
                below = [
                    text
                    for text in importlib.metadata.requires(name) or []
                    if (marker := Requirement(text).marker) is None or marker.evaluate({"extra": extra})
                ]
            pending.extend(Requirement(text) for text in below)
    return found


def test_the_serving_image_installs_the_pod_without_the_tools() -> None:
    """`pip install '.[serving]'` pulls none of the tools' own requirements, and tools/ is not copied."""
    extras = PROJECT["optional-dependencies"]
    tools_own = {canonicalize_name(Requirement(text).name) for text in extras["tools"]} - {"carpool"}
    assert "carpool[serving]" in extras["tools"], "the tools import the pod, so their extra brings its own"
    serving = _installed_closure(["carpool[serving]"])
    assert {"torch", "fastapi", "onnxruntime"} <= serving  # the walk reaches through the extras
    assert "matplotlib" in tools_own and "matplotlib" in _installed_closure(["carpool[tools]"])
    # tqdm is transformers' own requirement too (its progress bars), so it is in the image anyway;
    # the tools declare it because they import it.
    assert tools_own & serving == {"tqdm"}
    for dockerfile in DOCKERFILES:
        _, found = stages(dockerfile)
        sources = {src.rstrip("/") for copy in found[0].all("COPY") for src in copy.split()[:-1]}
        assert "tools" not in sources and "." not in sources, (dockerfile, sources)
        assert not [run for run in found[0].all("RUN") if "tools" in run], dockerfile


def test_the_chart_tags_the_images_with_the_distribution_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert rendering.chart().metadata["appVersion"] == version

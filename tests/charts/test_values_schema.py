"""values.schema.json refuses what would install something else than the user meant.

Helm checks the coalesced values against the schema before it renders anything, on install,
upgrade, template and lint alike: a misspelt key or a wrong type fails loudly, naming the path,
instead of being ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.charts import rendering

pytestmark = pytest.mark.unit

REFUSED = [
    pytest.param({"replicaCount": 2}, "additional properties 'replicaCount'", id="unknown-top-level-key"),
    pytest.param(
        {"image": {"tagg": "1.0"}}, "'/image': additional properties 'tagg'", id="misspelt-nested-key"
    ),
    pytest.param(
        {"monitoring": {"podMonitor": {"enable": True}}},
        "'/monitoring/podMonitor': additional properties 'enable'",
        id="enable-for-enabled",
    ),
    pytest.param(
        {"operator": {"healthPort": "8080"}},
        "'/operator/healthPort': got string, want integer",
        id="port-as-string",
    ),
    pytest.param({"operator": {"healthPort": 70000}}, "'/operator/healthPort'", id="port-out-of-range"),
    pytest.param(
        {"networkPolicy": {"enabled": "yes"}},
        "'/networkPolicy/enabled': got string, want boolean",
        id="yes-for-true",
    ),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, "'/image/pullPolicy'", id="unknown-pull-policy"),
    pytest.param({"image": {"digest": "latest"}}, "'/image/digest'", id="digest-not-sha256"),
    pytest.param(
        {"examplePolicy": {"name": "Bad_Name"}}, "'/examplePolicy/name'", id="policy-name-not-dns-label"
    ),
    pytest.param(
        {"imagePullSecrets": ["regcred"]},
        "'/imagePullSecrets/0': got string, want object",
        id="secret-as-string",
    ),
    pytest.param(
        {"resources": {"limit": {"cpu": "1"}}}, "additional properties 'limit'", id="resources-typo"
    ),
    pytest.param(
        {"monitoring": {"podMonitor": {"interval": "15 seconds"}}},
        "'/monitoring/podMonitor/interval'",
        id="bad-duration",
    ),
    pytest.param(
        {"networkPolicy": {"clients": [{"podSelectr": {}}]}},
        "additional properties 'podSelectr'",
        id="peer-typo",
    ),
    pytest.param(
        {"monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}},
        "'/monitoring/serviceMonitor/enabled': value must be false",
        id="both-monitors-would-count-twice",
    ),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_install_refuses_bad_values_naming_the_path(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        rendering.render(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(("values", "message"), REFUSED[:3])
def test_lint_reports_bad_values_as_errors(values: dict[str, Any], message: str) -> None:
    report = helm.lint(rendering.CHART_DIR, values)
    assert any(message in error for error in report["errors"]), report["errors"]


def test_a_values_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    values_file = tmp_path / "my-values.yaml"
    values_file.write_text("networkPolicy:\n  enabled: true\n  namespace: [classifiers]\n")
    with pytest.raises(helm.HelmValuesError, match="additional properties 'namespace'"):
        rendering.render(helm.values_from_yaml(values_file.read_text()))


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_every_shipped_value_set_is_accepted(value_set: str) -> None:
    rendering.chart().validate_schema(rendering.chart().merge_values(rendering.load_values(value_set)))


def _schema_paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the keys the schema declares (objects it leaves open are Kubernetes data)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= _schema_paths(sub, root, path + ".")
    return paths


def _values_keys() -> list[tuple[str, int, list[str]]]:
    """(dotted path, line number, lines above it) of each key of values.yaml."""
    lines = (rendering.CHART_DIR / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    keys = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(key for _, key in stack), match.group(2)])
        stack.append((indent, match.group(2)))
        keys.append((path, number, lines[:number]))
    return keys


def test_every_value_has_a_comment() -> None:
    schema = rendering.chart().schema
    assert schema is not None
    declared = _schema_paths(schema, schema)
    uncommented = [
        path
        for path, _, above in _values_keys()
        if path in declared and not above[-1].lstrip().startswith("#")
    ]
    assert uncommented == []


def test_the_schema_and_the_values_describe_the_same_keys() -> None:
    schema = json.loads((rendering.CHART_DIR / "values.schema.json").read_text())
    declared = _schema_paths(schema, schema) - {"global"}
    paths = {path for path, _, _ in _values_keys()}
    # An optional key may be left out (resources.limits), but never with its parent, which then
    # documents it; keys inside Kubernetes objects (securityContext, probes, the example spec) are
    # data, not chart values.
    undocumented = {path for path in declared - paths if path.rpartition(".")[0] not in paths}
    assert undocumented == set(), "declared in values.schema.json but absent from values.yaml"
    top_level_in_values = {path for path in paths if "." not in path}
    assert top_level_in_values <= declared

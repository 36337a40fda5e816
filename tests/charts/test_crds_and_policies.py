"""The chart installs the one CRD of crds/, and every policy it ships or shows is one the CRD accepts.

Helm installs `charts/carpool/crds/` before the templates and never templates it, so that folder
must be a byte-for-byte copy of the single source, `crds/`. kubernetes-validate only warns on
custom resources, so BatchingPolicies are checked here against the CRD's own openAPIV3Schema
(with the API server's strict field validation: an unknown field is an error) and then parsed by
the operator, which applies the rules a schema cannot express.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from carpool_operator import spec
from tests.charts import rendering

pytestmark = pytest.mark.unit

SOURCE_CRDS = rendering.REPO / "crds"
CHART_CRDS = rendering.CHART_DIR / "crds"
EXAMPLES = rendering.REPO / "examples"


def crd_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.yaml"))}


def batching_policy_crd() -> dict[str, Any]:
    for text in crd_files(SOURCE_CRDS).values():
        crd = yaml.safe_load(text)
        if crd["spec"]["names"]["kind"] == spec.KIND:
            return dict(crd)
    raise AssertionError(f"no CRD for {spec.KIND} in {SOURCE_CRDS}")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural schema as the API server applies it with strict field validation."""
    schema = copy.copy(schema)
    if schema.get("properties") and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema.setdefault("additionalProperties", False)
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {name: strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    return schema


def policy_validator() -> jsonschema.Draft4Validator:
    (version,) = [v for v in batching_policy_crd()["spec"]["versions"] if v["name"] == spec.VERSION]
    # OpenAPI v3.0 keeps draft 4's boolean exclusiveMinimum: validate with draft 4's rules.
    return jsonschema.Draft4Validator(strict(version["schema"]["openAPIV3Schema"]))


def check_policy(policy: dict[str, Any]) -> None:
    assert policy["apiVersion"] == f"{spec.GROUP}/{spec.VERSION}"
    assert policy["kind"] == spec.KIND
    policy_validator().validate(policy)
    spec.parse(policy["spec"], name=policy["metadata"]["name"], namespace=rendering.NAMESPACE)


def shipped_policies() -> list[Any]:
    """Every BatchingPolicy a user is shown: the chart's example in each value set that renders it,
    the chart's default example switched on, the one in NOTES.txt, and examples/."""
    found = []
    for name in rendering.VALUE_SETS:
        for policy in rendering.of_kind(rendering.rendered(name), spec.KIND):
            found.append(pytest.param(policy, id=f"chart-{name}"))
    manifests = rendering.render({"examplePolicy": {"enabled": True}})
    (default_example,) = rendering.of_kind(list(rendering.objects_of(manifests)), spec.KIND)
    found.append(pytest.param(default_example, id="chart-default-example"))
    notes = rendering.notes(rendering.DEFAULT)
    lines = notes.splitlines()
    start = next(number for number, line in enumerate(lines) if "<<'YAML'" in line) + 1
    end = lines.index("     YAML", start)
    found.append(pytest.param(yaml.safe_load("\n".join(lines[start:end])), id="notes"))
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for number, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document and document.get("kind") == spec.KIND:
                found.append(pytest.param(document, id=f"examples-{path.stem}-{number}"))
    return found


def test_the_chart_carries_an_identical_copy_of_the_crds() -> None:
    source, chart_copy = crd_files(SOURCE_CRDS), crd_files(CHART_CRDS)
    assert source, "crds/ holds the CRD"
    assert sorted(chart_copy) == sorted(source)
    stale = [name for name in source if chart_copy[name] != source[name]]
    assert stale == [], (
        f"charts/carpool/crds/ differs from crds/ in {stale}: cp crds/*.yaml charts/carpool/crds/"
    )


def test_helm_installs_the_crds_from_the_chart() -> None:
    # Helm hands CRDs apart from the rendered templates: that is what it installs first.
    installed = {crd["name"]: crd["data"].encode() for crd in rendering.chart().crds}
    assert sorted(installed) == sorted(f"crds/{name}" for name in crd_files(CHART_CRDS))
    assert all(installed[f"crds/{name}"] == data for name, data in crd_files(CHART_CRDS).items())
    rendered_kinds = {obj["kind"] for name in rendering.VALUE_SETS for obj in rendering.rendered(name)}
    assert "CustomResourceDefinition" not in rendered_kinds


@pytest.mark.parametrize("kube_version", rendering.KUBE_VERSIONS)
def test_the_crds_match_the_kubernetes_schema(kube_version: str) -> None:
    for text in crd_files(CHART_CRDS).values():
        for crd in yaml.safe_load_all(text):
            kubernetes_validate.validate(crd, kube_version, strict=True)


@pytest.mark.parametrize("policy", shipped_policies())
def test_every_shipped_policy_is_accepted_by_the_crd_and_the_operator(policy: dict[str, Any]) -> None:
    check_policy(policy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"strategy": "fastest"}, "'fastest' is not one of", id="unknown-strategy"),
        pytest.param({"batching": {"maxBatchsize": 8}}, "'maxBatchsize' was unexpected", id="misspelt-field"),
        pytest.param(
            {"batching": {"maxBatchSize": "16"}}, "'16' is not of type 'integer'", id="string-number"
        ),
        pytest.param(
            {"adaptive": {"loadThreshold": 0}}, "less than or equal to the minimum", id="threshold-zero"
        ),
        pytest.param(
            {"models": [{"name": "a", "path": "embedded:minilm", "batching": {"maxBatchsize": 8}}]},
            "'maxBatchsize' was unexpected",
            id="misspelt-model-field",
        ),
        pytest.param(
            {"models": [{"name": "a", "path": "embedded:minilm", "batching": {"maxWaitTimeMs": -1}}]},
            "less than the minimum of 0",
            id="model-negative-wait",
        ),
    ],
)
def test_the_policy_check_refuses_what_the_api_server_would(change: dict[str, Any], message: str) -> None:
    manifests = rendering.render({"examplePolicy": {"enabled": True, "spec": change}})
    (policy,) = rendering.of_kind(list(rendering.objects_of(manifests)), spec.KIND)
    with pytest.raises(jsonschema.ValidationError, match=message):
        policy_validator().validate(policy)

"""The BatchingPolicy CRD: structural, documented, and refusing what cannot work.

Example policies are checked the way the API server checks them: defaults applied from the
schema, then the openAPIV3Schema (jsonschema, Draft 4: Kubernetes' dialect), then the CEL rules
of `x-kubernetes-validations`, evaluated by a real CEL implementation (cel-python).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from pydantic.fields import FieldInfo

from carpool_operator import spec as policy_spec
from serving import settings as serving_settings
from tests.support import kube

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
CRD = kube.crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def _nodes(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _defaulted(schema: Mapping[str, Any], value: Any) -> Any:
    """Apply the schema's defaults as the API server does before validating."""
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _defaulted(child, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_defaulted(schema["items"], item) for item in value]
    return value


def _cel_failures(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    failures = []
    environment = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or ():
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            failures.append(f"{path}: {rule['message']}")
    if isinstance(value, Mapping):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                failures += _cel_failures(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            failures += _cel_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def admission_errors(document: Mapping[str, Any]) -> list[str]:
    """What the API server would refuse in this document (empty: accepted)."""
    obj = _defaulted(SCHEMA, copy.deepcopy(dict(document)))
    validator = jsonschema.Draft4Validator(SCHEMA)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    return errors or _cel_failures(SCHEMA, obj)


def test_the_schema_is_structural_and_documented() -> None:
    assert CRD["spec"]["group"] == policy_spec.GROUP
    assert CRD["spec"]["names"]["plural"] == policy_spec.PLURAL
    assert CRD["spec"]["names"]["kind"] == policy_spec.KIND
    assert VERSION["name"] == policy_spec.VERSION and VERSION["served"] and VERSION["storage"]
    assert "bp" in CRD["spec"]["names"]["shortNames"]
    assert VERSION["subresources"] == {"status": {}}
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    assert "x-kubernetes-preserve-unknown-fields" not in SCHEMA["properties"]["spec"]
    for path, node in _nodes(SCHEMA):
        if path.startswith((".spec", ".status")):
            assert node.get("description"), f"{path} has no description"
        int_or_string = node.get("x-kubernetes-int-or-string")
        assert node.get("type") or int_or_string, f"{path} has no type (not structural)"


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    fields = set(conditions["items"]["properties"])
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= fields


def test_printer_columns_read_fields_the_schema_has() -> None:
    columns = {column["name"]: column["jsonPath"] for column in VERSION["additionalPrinterColumns"]}
    assert {"Strategy", "Replicas", "Ready", "Queue", "Age"} <= set(columns)
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    paths = {path for path, _ in _nodes(SCHEMA)}
    for name, json_path in columns.items():
        if name not in ("Ready", "Age"):
            assert json_path in paths, f"column {name} reads {json_path}, which the schema lacks"


def _knob_node(path: str) -> Mapping[str, Any]:
    node: Mapping[str, Any] = SCHEMA["properties"]["spec"]
    for name in path.split("."):
        assert name in (node.get("properties") or {}), f"the CRD has no spec.{path}"
        node = node["properties"][name]
    return node


def _bounds(info: FieldInfo) -> dict[str, Any]:
    """The JSON-Schema bounds (Kubernetes' Draft 4 dialect) of a BatchingConfig field."""
    bounds: dict[str, Any] = {}
    for rule in info.metadata:
        if getattr(rule, "ge", None) is not None:
            bounds["minimum"] = rule.ge
        if getattr(rule, "gt", None) is not None:
            bounds.update(minimum=rule.gt, exclusiveMinimum=True)
        if getattr(rule, "le", None) is not None:
            bounds["maximum"] = rule.le
    return bounds


@pytest.mark.parametrize("field", list(serving_settings.KNOBS))
def test_each_knob_is_in_the_crd_at_its_declared_path_with_its_type_bounds_and_default(field: str) -> None:
    info = serving_settings.BatchingConfig.model_fields[field]
    node = _knob_node(serving_settings.PATH_BY_FIELD[field])
    kind: dict[Any, str] = {
        bool: "boolean",
        int: "integer",
        float: "number",
        serving_settings.Strategy: "string",
    }
    assert node["type"] == kind[info.annotation]
    if info.annotation is serving_settings.Strategy:
        assert node["enum"] == [strategy.value for strategy in serving_settings.Strategy]
    assert {key: node[key] for key in ("minimum", "maximum", "exclusiveMinimum") if key in node} == _bounds(
        info
    )
    assert (
        node["default"] == serving_settings.BatchingConfig.model_validate({}).model_dump(mode="json")[field]
    )
    assert policy_spec.BATCHING_FIELD_PATHS[field] == f"spec.{serving_settings.PATH_BY_FIELD[field]}"


def test_the_crd_has_no_batching_knob_the_pod_lacks() -> None:
    spec_schema = SCHEMA["properties"]["spec"]["properties"]
    in_crd = {"strategy"} | {
        f"{section}.{name}"
        for section in ("batching", "adaptive")
        for name in spec_schema[section]["properties"]
    }
    assert in_crd == set(serving_settings.PATH_BY_FIELD.values())


def _model_knob_node(key: str) -> Mapping[str, Any]:
    models = SCHEMA["properties"]["spec"]["properties"]["models"]["items"]["properties"]
    node: Mapping[str, Any] = models["batching"]["properties"]
    assert key in node, f"the CRD has no spec.models[].batching.{key}"
    return node[key]


@pytest.mark.parametrize("field", list(policy_spec.MODEL_BATCHING_KEYS))
def test_each_per_model_knob_is_the_policys_without_its_default(field: str) -> None:
    """spec.models[].batching.<key>: the type, enum and bounds of the declaration, and no default
    (a model that leaves it out runs the policy's value)."""
    info = serving_settings.BatchingConfig.model_fields[field]
    node = _model_knob_node(policy_spec.MODEL_BATCHING_KEYS[field])
    policy_node = _knob_node(serving_settings.PATH_BY_FIELD[field])
    assert node["type"] == policy_node["type"]
    assert node.get("enum") == policy_node.get("enum")
    bounds = {key: node[key] for key in ("minimum", "maximum", "exclusiveMinimum") if key in node}
    assert bounds == _bounds(info)
    assert "default" not in node and node["description"]


def test_a_model_overrides_the_knobs_of_spec_batching_and_no_other() -> None:
    models = SCHEMA["properties"]["spec"]["properties"]["models"]["items"]["properties"]
    in_crd = {f"batching.{key}" for key in models["batching"]["properties"]}
    declared = {path for path in serving_settings.PATH_BY_FIELD.values() if path.startswith("batching.")}
    assert in_crd == declared
    assert "default" not in models["batching"]


@pytest.mark.parametrize(
    ("own", "policy"),
    [
        pytest.param({"minBatchSize": 64}, {}, id="own-min-above-policys-max"),
        pytest.param({"minBatchSize": 16}, {"maxBatchSize": 64}, id="own-min-under-policys-max"),
        pytest.param({"maxBatchSize": 2}, {"minBatchSize": 4}, id="own-max-under-policys-min"),
        pytest.param({"maxBatchSize": 4}, {"minBatchSize": 4}, id="own-max-at-policys-min"),
        pytest.param({"minBatchSize": 8, "maxBatchSize": 4}, {}, id="own-min-above-own-max"),
        pytest.param(
            {"minBatchSize": 48, "maxBatchSize": 64}, {"minBatchSize": 2}, id="own-both-above-policy"
        ),
        pytest.param({"maxWaitTimeMs": 3}, {"minBatchSize": 40, "maxBatchSize": 64}, id="others-policys"),
    ],
)
def test_the_crds_min_max_rule_holds_for_each_model_as_the_pods_does(
    own: dict[str, int], policy: dict[str, int]
) -> None:
    spec = {"batching": policy, "models": [{"name": "m", "path": "embedded:minilm", "batching": own}]}
    refused_by_crd = bool(admission_errors(_policy(**spec)))
    try:
        policy_spec.parse(spec, name="p", namespace="default")
        refused_by_operator = False
    except policy_spec.InvalidSpec:
        refused_by_operator = True
    assert refused_by_crd == refused_by_operator


def _variant_knob_node(path: str) -> Mapping[str, Any]:
    node: Mapping[str, Any] = SCHEMA["properties"]["spec"]["properties"]["experiment"]["properties"][
        "variants"
    ]
    node = node["items"]
    for name in path.split("."):
        assert name in (node.get("properties") or {}), f"the CRD has no spec.experiment.variants[].{path}"
        node = node["properties"][name]
    return node


@pytest.mark.parametrize("field", list(serving_settings.KNOBS))
def test_each_knob_of_a_variant_has_the_policys_type_and_bounds_and_no_default(field: str) -> None:
    # A variant's knob left out takes the policy's value: a schema default would hide that.
    path = serving_settings.PATH_BY_FIELD[field]
    node, policy_node = _variant_knob_node(path), _knob_node(path)
    assert {k: v for k, v in policy_node.items() if k not in ("default", "description")} == {
        k: v for k, v in node.items() if k != "description"
    }
    sections = [_variant_knob_node(section) for section in ("batching", "adaptive")]
    assert all("default" not in section for section in sections)


def test_a_variant_holds_every_knob_and_only_those() -> None:
    variant = SCHEMA["properties"]["spec"]["properties"]["experiment"]["properties"]["variants"]["items"]
    in_crd = {"strategy"} | {
        f"{section}.{name}"
        for section in ("batching", "adaptive")
        for name in variant["properties"][section]["properties"]
    }
    assert in_crd == set(serving_settings.PATH_BY_FIELD.values())


def test_an_experiment_with_defaults_gives_each_variant_the_policys_knobs() -> None:
    document = _policy(
        batching={"maxBatchSize": 12},
        serving={"replicas": 3},
        experiment={"variants": [{"name": "a"}, {"name": "b", "strategy": "single_request"}]},
    )
    assert admission_errors(document) == []
    obj = _defaulted(SCHEMA, document)
    parsed = policy_spec.parse(obj["spec"], name="p", namespace="default")
    assert parsed.experiment is not None
    a, b = parsed.experiment.variants
    assert (a.weight, b.weight, parsed.experiment.significance) == (1, 1, 0.05)
    assert a.batching == parsed.batching
    assert (b.batching.strategy, b.batching.max_batch_size) == ("single_request", 12)


@pytest.mark.parametrize(
    ("low", "high"), [(1, 1), (8, 16), (16, 8), (2, 1), (1024, 1024), (64, None), (None, 0)]
)
def test_the_crds_min_max_rule_is_the_pods(low: int | None, high: int | None) -> None:
    batching = {
        key: value for key, value in (("minBatchSize", low), ("maxBatchSize", high)) if value is not None
    }
    refused_by_crd = bool(admission_errors(_policy(batching=batching)))
    try:
        policy_spec.parse({"batching": batching}, name="p", namespace="default")
        refused_by_operator = False
    except policy_spec.InvalidSpec:
        refused_by_operator = True
    assert refused_by_crd == refused_by_operator


def test_the_operator_reads_each_knob_at_its_declared_path() -> None:
    wanted = {
        "enable": False,
        "strategy": "batch_optimized",
        "max_batch_size": 16,
        "max_wait_time_ms": 2.5,
        "min_batch_size": 4,
        "max_queue_size": 99,
        "load_threshold": 0.25,
        "latency_threshold_ms": 75.0,
    }
    spec: dict[str, Any] = {}
    for field, path in serving_settings.PATH_BY_FIELD.items():
        *objects, key = path.split(".")
        node = spec
        for name in objects:
            node = node.setdefault(name, {})
        node[key] = wanted[field]
    assert admission_errors(_policy(**spec)) == []
    parsed = policy_spec.parse(spec, name="p", namespace="default")
    assert parsed.batching.model_dump(mode="json") == wanted


def test_defaults_are_those_of_the_operator_and_the_pod() -> None:
    spec_schema = SCHEMA["properties"]["spec"]["properties"]
    serving = spec_schema["serving"]["properties"]
    assert serving["replicas"]["default"] == policy_spec.ServingSpec().replicas
    assert serving["port"]["default"] == policy_spec.ServingSpec().port
    autoscaling = {
        name: node.get("default") for name, node in spec_schema["autoscaling"]["properties"].items()
    }
    defaults = policy_spec.AutoscalingSpec()
    assert autoscaling["minReplicas"] == defaults.min_replicas
    assert autoscaling["maxReplicas"] == defaults.max_replicas
    assert autoscaling["targetQueueSize"] == defaults.target_queue_size
    assert autoscaling["scaleUpStabilizationSeconds"] == defaults.scale_up_stabilization_s
    assert autoscaling["scaleDownStabilizationSeconds"] == defaults.scale_down_stabilization_s
    assert spec_schema["ingress"]["properties"]["path"]["default"] == policy_spec.IngressSpec().path


def test_a_policy_with_defaults_only_parses_to_the_pods_defaults() -> None:
    obj = _defaulted(SCHEMA, {"apiVersion": "carpool.dev/v1alpha1", "kind": "BatchingPolicy", "spec": {}})
    parsed = policy_spec.parse(obj["spec"], name="defaults", namespace="default")
    assert parsed.batching == serving_settings.BatchingConfig.model_validate({})
    assert dataclasses.astuple(parsed.serving)[2:4] == (1, 8000)


def test_the_three_use_cases_have_an_example() -> None:
    strategies = {yaml.safe_load(path.read_text())["spec"]["strategy"] for path in EXAMPLES}
    assert strategies == {"single_request", "batch_optimized", "adaptive"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_is_accepted_by_the_schema_and_the_operator(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == f"{policy_spec.GROUP}/{policy_spec.VERSION}"
    assert document["kind"] == policy_spec.KIND
    assert admission_errors(document) == []
    policy_spec.parse(document["spec"], name=document["metadata"]["name"], namespace="default")


def _policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "carpool.dev/v1alpha1",
        "kind": "BatchingPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }


INVALID = [
    pytest.param(
        _policy(batching={"minBatchSize": 16, "maxBatchSize": 8}), "minBatchSize", True, id="min-above-max"
    ),
    pytest.param(_policy(batching={"minBatchSize": 64}), "minBatchSize", True, id="min-above-default-max"),
    pytest.param(_policy(strategy="turbo"), "turbo", True, id="unknown-strategy"),
    pytest.param(_policy(batching={"maxBatchSize": 0}), "maxBatchSize", True, id="zero-batch"),
    pytest.param(_policy(batching={"maxWaitTimeMs": -1}), "maxWaitTimeMs", True, id="negative-wait"),
    pytest.param(_policy(adaptive={"loadThreshold": 0}), "loadThreshold", True, id="zero-load-threshold"),
    pytest.param(_policy(adaptive={"loadThreshold": 1.5}), "loadThreshold", True, id="load-above-one"),
    pytest.param(
        _policy(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas",
        True,
        id="replicas-min-above-max",
    ),
    pytest.param(
        _policy(autoscaling={"enabled": True}), "prometheusUrl", True, id="autoscaling-without-prometheus"
    ),
    pytest.param(_policy(models=[{"name": "bert"}]), "path", True, id="model-without-path"),
    pytest.param(_policy(models=[{"name": "a=b", "path": "/m"}]), "name", True, id="model-name-with-equals"),
    pytest.param(
        _policy(
            models=[{"name": "a", "source": {"pvc": {"claimName": "m"}, "image": {"reference": "r/m:1"}}}]
        ),
        "pvc or image",
        True,
        id="model-with-two-sources",
    ),
    pytest.param(
        _policy(models=[{"name": "a", "source": {"image": {"reference": "r/m:1", "method": "copy"}}}]),
        "method",
        True,
        id="unknown-image-method",
    ),
    pytest.param(
        _policy(models=[{"name": "a", "path": "/m", "runtime": "tensorrt"}]),
        "runtime",
        True,
        id="unknown-runtime",
    ),
    pytest.param(
        _policy(models=[{"name": "a", "path": "embedded:minilm", "batching": {"maxBatchSize": 0}}]),
        "maxBatchSize",
        True,
        id="model-zero-batch",
    ),
    pytest.param(
        _policy(models=[{"name": "a", "path": "embedded:minilm", "batching": {"minBatchSize": 64}}]),
        "minBatchSize",
        True,
        id="model-min-above-policys-max",
    ),
    pytest.param(_policy(serving={"workers": "many"}), "workers", True, id="workers-not-auto"),
    pytest.param(_policy(serving={"workers": 0}), "workers", True, id="zero-workers"),
    pytest.param(_policy(serving={"gpu": {"count": 0}}), "count", True, id="zero-gpus"),
    pytest.param(_policy(serving={"port": 70000}), "port", True, id="port-out-of-range"),
    pytest.param(_policy(serving={"replicas": -1}), "replicas", True, id="negative-replicas"),
    pytest.param(_policy(ingress={"path": "predict"}), "path", True, id="relative-ingress-path"),
    pytest.param(
        _policy(serving={"replicas": 2}, experiment={"variants": [{"name": "a"}]}),
        "variants",
        True,
        id="experiment-of-one-variant",
    ),
    pytest.param(
        _policy(serving={"replicas": 2}, experiment={"variants": [{"name": "A"}, {"name": "b"}]}),
        "name",
        True,
        id="variant-name-not-a-dns-label",
    ),
    pytest.param(
        _policy(
            serving={"replicas": 2},
            experiment={
                "variants": [{"name": "a"}, {"name": "b", "batching": {"minBatchSize": 9, "maxBatchSize": 4}}]
            },
        ),
        "minBatchSize",
        True,
        id="variant-min-above-max",
    ),
    pytest.param(
        _policy(
            serving={"replicas": 2},
            experiment={"variants": [{"name": "a"}, {"name": "b", "strategy": "turbo"}]},
        ),
        "strategy",
        True,
        id="variant-unknown-strategy",
    ),
    pytest.param(
        _policy(
            serving={"replicas": 2},
            experiment={
                "prometheusUrl": "http://p:9090",
                "variants": [{"name": "a"}, {"name": "b"}],
                "promote": {"metric": "p50"},
            },
        ),
        "metric",
        True,
        id="promote-on-an-unknown-metric",
    ),
    pytest.param(
        _policy(
            serving={"replicas": 2},
            experiment={
                "prometheusUrl": "http://p:9090",
                "variants": [{"name": "a"}, {"name": "b"}],
                "promote": {"after": "two hours"},
            },
        ),
        "after",
        True,
        id="promote-after-not-a-duration",
    ),
    pytest.param(
        _policy(serving={"tolerations": [{"operator": "Maybe"}]}),
        "operator",
        False,
        id="unknown-toleration-operator",
    ),
]


@pytest.mark.parametrize(("document", "field", "operator_refuses"), INVALID)
def test_invalid_policies_are_refused_naming_the_field(
    document: dict[str, Any], field: str, operator_refuses: bool
) -> None:
    errors = admission_errors(document)
    assert errors, "the API server would accept it"
    assert field in " ".join(errors)
    if operator_refuses:  # the operator's own check, for clusters where validation was bypassed
        with pytest.raises(policy_spec.InvalidSpec, match=field):
            policy_spec.parse(document["spec"], name="p", namespace="default")

"""spec.parse: the CR's fields into dataclasses, with the pods' BatchingConfig and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest

from carpool_operator import spec
from serving import settings as serving_settings

pytestmark = pytest.mark.unit


def parse(raw: dict[str, Any], name: str = "demo") -> spec.PolicySpec:
    return spec.parse(raw, name=name, namespace="ml")


def test_an_empty_spec_means_the_pods_defaults() -> None:
    policy = parse({})
    assert policy.batching == serving_settings.BatchingConfig.model_validate({})
    assert policy.models == ()
    assert (policy.serving.replicas, policy.serving.port, policy.serving.image) == (1, 8000, None)
    assert not policy.ingress.enabled and not policy.autoscaling.enabled
    assert (policy.name, policy.namespace) == ("demo", "ml")


def test_the_batching_fields_become_the_pods_config() -> None:
    policy = parse(
        {
            "strategy": "batch_optimized",
            "batching": {
                "enabled": False,
                "maxBatchSize": 16,
                "maxWaitTimeMs": 100,
                "minBatchSize": 2,
                "maxQueueSize": 50,
            },
            "adaptive": {"loadThreshold": 0.5, "latencyThresholdMs": 120},
        }
    )
    assert policy.batching == serving_settings.BatchingConfig(
        enable=False,
        strategy=serving_settings.Strategy.BATCH_OPTIMIZED,
        max_batch_size=16,
        max_wait_time_ms=100,
        min_batch_size=2,
        max_queue_size=50,
        load_threshold=0.5,
        latency_threshold_ms=120,
    )


def test_models_serving_ingress_and_autoscaling() -> None:
    policy = parse(
        {
            "models": [
                {"name": "bert-base", "path": "/models/bert-base"},
                {"name": "b_trained", "path": "/m/b"},
            ],
            "serving": {
                "image": "reg/carpool:1",
                "replicas": 3,
                "port": 9000,
                "env": [{"name": "CARPOOL_DEVICE", "value": "cuda"}],
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "resources": {"limits": {"memory": "4Gi"}},
                "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
                "volumeMounts": [
                    {"name": "models", "mountPath": "/models"},
                    {"name": "models", "mountPath": "/m", "subPath": "m"},
                ],
            },
            "ingress": {
                "enabled": True,
                "host": "c.example.com",
                "className": "nginx",
                "tls": {"secretName": "t"},
            },
            "autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 4,
                "prometheusUrl": "http://p:9090",
            },
        }
    )
    assert [(m.name, m.path) for m in policy.models] == [
        ("bert-base", "/models/bert-base"),
        ("b_trained", "/m/b"),
    ]
    assert (policy.serving.image, policy.serving.replicas, policy.serving.port) == ("reg/carpool:1", 3, 9000)
    assert policy.serving.node_selector == {"pool": "gpu"}
    assert (policy.ingress.host, policy.ingress.class_name, policy.ingress.tls_secret_name) == (
        "c.example.com",
        "nginx",
        "t",
    )
    assert (policy.autoscaling.min_replicas, policy.autoscaling.max_replicas) == (2, 4)
    assert policy.initial_replicas == 3


@pytest.mark.parametrize(
    ("replicas", "low", "high", "initial"),
    [
        pytest.param(1, 2, 6, 2, id="raised-to-min"),
        pytest.param(9, 2, 6, 6, id="lowered-to-max"),
        pytest.param(4, 2, 6, 4, id="within"),
    ],
)
def test_an_autoscaled_deployment_starts_within_bounds(
    replicas: int, low: int, high: int, initial: int
) -> None:
    autoscaling = {"enabled": True, "minReplicas": low, "maxReplicas": high, "prometheusUrl": "http://p"}
    assert parse({"serving": {"replicas": replicas}, "autoscaling": autoscaling}).initial_replicas == initial


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        pytest.param(
            {"batching": {"minBatchSize": 8, "maxBatchSize": 4}},
            "demo",
            "spec.batching.minBatchSize (8) must be <= spec.batching.maxBatchSize (4)",
            id="min-above-max",
        ),
        pytest.param(
            {"strategy": "fastest"}, "demo", "spec.strategy: Input should be", id="unknown-strategy"
        ),
        pytest.param(
            {"batching": {"maxBatchSize": "16"}},
            "demo",
            "spec.batching.maxBatchSize must be a number or boolean, got '16'",
            id="string-number",
        ),
        pytest.param(
            {"adaptive": {"loadThreshold": 2}}, "demo", "spec.adaptive.loadThreshold:", id="threshold"
        ),
        pytest.param(
            {"serving": {"replicas": 1.5}}, "demo", "spec.serving.replicas must be an integer", id="float"
        ),
        pytest.param(
            {"serving": {"env": [{"name": "CARPOOL_ADMIN_TOKEN", "value": "x"}]}},
            "demo",
            "spec.serving.env[0] sets CARPOOL_ADMIN_TOKEN, which the operator manages",
            id="reserved-env",
        ),
        pytest.param(
            {"models": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]},
            "demo",
            "spec.models[1].name repeats the model name 'a'",
            id="duplicate-model",
        ),
        pytest.param(
            {"models": [{"name": "a", "path": "/a,b"}]},
            "demo",
            "spec.models[0].path may not contain",
            id="comma-in-path",
        ),
        pytest.param(
            {"autoscaling": {"enabled": True}},
            "demo",
            "spec.autoscaling.prometheusUrl is required",
            id="no-prometheus",
        ),
        pytest.param(
            {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
            "demo",
            "spec.autoscaling.minReplicas (3) must be <= spec.autoscaling.maxReplicas (2)",
            id="min-max",
        ),
        pytest.param(
            {"ingress": {"path": "api"}}, "demo", "spec.ingress.path must start with '/'", id="path"
        ),
        pytest.param({"serving": []}, "demo", "spec.serving must be an object", id="not-an-object"),
        pytest.param({}, "x" * 57, "metadata.name must be a DNS label of at most 56", id="long-name"),
        pytest.param({}, "1abc", "metadata.name must be a DNS label", id="name-starts-with-digit"),
    ],
)
def test_what_cannot_work_is_refused_naming_the_field(raw: dict[str, Any], name: str, message: str) -> None:
    with pytest.raises(spec.InvalidSpec) as caught:
        parse(raw, name=name)
    assert message in str(caught.value)


PVC = {"pvc": {"claimName": "models", "subPath": "phishing"}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            {"models": [{"name": "phishing", "path": "/models/phishing"}]},
            "spec.models[0].path /models/phishing of model 'phishing' is provided by no source or volume",
            id="path-from-nowhere",
        ),
        pytest.param(
            {
                "models": [{"name": "a", "path": "/data/a"}],
                "serving": {"volumeMounts": [{"name": "missing", "mountPath": "/data"}]},
            },
            "model 'a' is provided by no source or volume",
            id="mount-of-no-volume",
        ),
        pytest.param(
            {"models": [{"name": "a", "source": PVC, "path": "/elsewhere"}]},
            "spec.models[0].path '/elsewhere' of model 'a' must lie under /models/a",
            id="path-outside-its-source",
        ),
        pytest.param(
            {"models": [{"name": "a", "source": {**PVC, "image": {"reference": "r/m:1"}}}]},
            "spec.models[0].source must give one of pvc or image",
            id="two-sources",
        ),
        pytest.param(
            {"models": [{"name": "a", "source": {"pvc": {"claimName": "m", "subPath": "../x"}}}]},
            "spec.models[0].source.pvc.subPath must be a relative path",
            id="subpath-escapes",
        ),
        pytest.param(
            {"models": [{"name": "a", "source": {"image": {"reference": "r/m:1", "method": "copy"}}}]},
            "spec.models[0].source.image.method must be one of initContainer, imageVolume",
            id="image-method",
        ),
        pytest.param(
            {"models": [{"name": "a", "source": PVC, "runtime": "tensorrt"}]},
            "spec.models[0].runtime must be one of auto, torch, onnx, onnx-int8",
            id="runtime",
        ),
        pytest.param(
            {"serving": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
            "spec.serving.resources.limits asks for nvidia.com/gpu: ask for GPUs with spec.serving.gpu",
            id="gpu-in-resources",
        ),
        pytest.param(
            {"serving": {"gpu": {}, "env": [{"name": "CARPOOL_DEVICE", "value": "cpu"}]}},
            "spec.serving.env[0] sets CARPOOL_DEVICE, which spec.serving.gpu sets to cuda",
            id="gpu-device-override",
        ),
        pytest.param(
            {"serving": {"gpu": {"resourceName": "gpu"}}},
            "spec.serving.gpu.resourceName must be an extended resource",
            id="gpu-resource-name",
        ),
        pytest.param(
            {"serving": {"resources": {"requests": {"memory": "4 GB"}}}},
            "spec.serving.resources.requests.memory: not a quantity",
            id="bad-quantity",
        ),
        pytest.param(
            {"serving": {"workers": 0}}, "spec.serving.workers must be an integer from 1", id="workers-0"
        ),
        pytest.param({"serving": {"workers": "many"}}, "or \"auto\", got 'many'", id="workers-word"),
        pytest.param(
            {"serving": {"env": [{"name": "CARPOOL_WORKERS", "value": "4"}]}},
            "sets CARPOOL_WORKERS, which the operator manages",
            id="workers-env",
        ),
    ],
)
def test_model_sources_gpus_and_workers_refuse_what_cannot_work(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(spec.InvalidSpec) as caught:
        parse(raw)
    assert message in str(caught.value)


def test_model_sources_and_their_paths() -> None:
    policy = parse(
        {
            "models": [
                {"name": "phishing", "source": PVC, "runtime": "onnx"},
                {"name": "spam", "source": {"image": {"reference": "r/spam:1"}}, "path": "/models/spam/v1/"},
                {"name": "mini", "path": "embedded:minilm"},
                {"name": "local", "path": "/data/local"},
            ],
            "serving": {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
        }
    )
    assert [(m.name, m.path, m.runtime) for m in policy.models] == [
        ("phishing", "/models/phishing", "onnx"),
        ("spam", "/models/spam/v1", "auto"),
        ("mini", "embedded:minilm", "auto"),
        ("local", "/data/local", "auto"),
    ]
    assert policy.models[0].source == spec.PvcSource("models", "phishing")
    assert policy.models[1].source == spec.ImageSource("r/spam:1", "/model", None, "initContainer")


def test_a_serving_image_of_ones_own_may_hold_the_models() -> None:
    policy = parse({"models": [{"name": "m", "path": "/models/m"}], "serving": {"image": "reg/mine:1"}})
    assert policy.models[0].path == "/models/m"


def test_gpu_and_workers_defaults() -> None:
    serving = parse({"serving": {"gpu": {}, "resources": {"requests": {"cpu": 2.5}}}}).serving
    assert serving.gpu == spec.GpuSpec(count=1, resource_name="nvidia.com/gpu")
    assert serving.workers is None and serving.resources == {"requests": {"cpu": "2500m"}}
    assert parse({"serving": {"workers": 3}}).serving.workers == 3
    assert parse({"serving": {"workers": "auto"}}).serving.workers is None


@pytest.mark.parametrize(
    ("raw", "enabled"),
    [
        pytest.param({"autoscaling": {"enabled": True}}, True, id="on"),
        pytest.param({"autoscaling": {"enabled": False}}, False, id="off"),
        pytest.param({}, False, id="absent"),
        pytest.param(None, False, id="no-spec"),
        pytest.param({"autoscaling": {"enabled": "true"}}, False, id="not-a-boolean"),
        pytest.param({"autoscaling": True}, False, id="not-an-object"),
        pytest.param(
            {"autoscaling": {"enabled": True}, "serving": {"replicas": -1}}, True, id="rest-of-spec-invalid"
        ),
    ],
)
def test_the_autoscaling_switch_is_read_without_parsing_the_spec(raw: Any, enabled: bool) -> None:
    assert spec.autoscaling_enabled(raw) is enabled


def _tuned(own: dict[str, Any], /, **policy: Any) -> dict[str, Any]:
    models = [
        {"name": "phishing", "path": "embedded:minilm", "batching": own},
        {"name": "spam", "path": "embedded:minilm"},
    ]
    return {"models": models, **policy}


def test_a_models_batching_overrides_the_policys_for_that_model_only() -> None:
    policy = parse(
        _tuned(
            {"maxBatchSize": 8, "maxWaitTimeMs": 2, "enabled": False},
            strategy="batch_optimized",
            batching={"maxBatchSize": 64, "maxQueueSize": 500},
        )
    )
    own = policy.batching.updated({"max_batch_size": 8, "max_wait_time_ms": 2, "enable": False})
    assert policy.model_batching == {"phishing": own}
    assert policy.config_for("phishing") == own and policy.config_for("spam") == policy.batching
    assert own.max_queue_size == 500 and own.strategy == "batch_optimized"  # the rest is the policy's
    assert policy.model_overrides == {
        "phishing": {"max_batch_size": 8, "max_wait_time_ms": 2, "enable": False}
    }


def test_a_model_may_override_exactly_the_knobs_of_spec_batching() -> None:
    assert set(spec.MODEL_BATCHING_KEYS.values()) == {
        "enabled",
        "maxBatchSize",
        "maxWaitTimeMs",
        "minBatchSize",
        "maxQueueSize",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            _tuned({"minBatchSize": 64}),
            "spec.models[0].batching.minBatchSize (64) must be <= spec.batching.maxBatchSize (32)",
            id="own-min-above-policys-max",
        ),
        pytest.param(
            _tuned({"maxBatchSize": 2}, batching={"minBatchSize": 4}),
            "spec.batching.minBatchSize (4) must be <= spec.models[0].batching.maxBatchSize (2)",
            id="policys-min-above-own-max",
        ),
        pytest.param(
            _tuned({"maxBatchSize": 0}),
            "spec.models[0].batching.maxBatchSize: Input should be greater than or equal to 1 (got 0)",
            id="zero-batch",
        ),
        pytest.param(
            _tuned({"maxBatchSize": "8"}),
            "spec.models[0].batching.maxBatchSize must be a number or boolean, got '8'",
            id="string-number",
        ),
        pytest.param(
            _tuned({"strategy": "adaptive"}),
            "spec.models[0].batching has no field 'strategy'; it takes enabled, maxBatchSize",
            id="not-a-batching-knob",
        ),
    ],
)
def test_a_models_batching_refuses_what_cannot_work_naming_the_field(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(spec.InvalidSpec) as caught:
        parse(raw)
    assert message in str(caught.value)


def test_the_pods_cannot_be_told_model_batching_through_spec_serving_env() -> None:
    with pytest.raises(spec.InvalidSpec, match="CARPOOL_MODEL_BATCHING, which the operator manages"):
        parse({"serving": {"env": [{"name": "CARPOOL_MODEL_BATCHING", "value": "a:max_batch_size=1"}]}})

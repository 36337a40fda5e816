"""The child builders: what each child of a policy holds, and the drift check."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from carpool_operator import resources, spec
from serving import settings as serving_settings

pytestmark = pytest.mark.unit


def policy(**raw: Any) -> spec.PolicySpec:
    return spec.parse(raw, name="demo", namespace="ml")


def deployment(p: spec.PolicySpec, **kwargs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "image": "img:1",
        "token_digest": "abc",
        "replicas": p.initial_replicas,
        **kwargs,
    }
    return resources.build_deployment(p, **values)


def container(built: dict[str, Any]) -> dict[str, Any]:
    [only] = built["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_the_config_map_holds_the_guides_variables() -> None:
    p = policy(strategy="batch_optimized", batching={"maxBatchSize": 16, "maxWaitTimeMs": 100})
    built = resources.build_config_map(p)
    assert built["metadata"]["name"] == "demo-config" and built["metadata"]["namespace"] == "ml"
    assert built["data"] == {
        "ENABLE_DYNAMIC_BATCHING": "true",
        "BATCHING_STRATEGY": "batch_optimized",
        "MAX_BATCH_SIZE": "16",
        "MAX_WAIT_TIME_MS": "100.0",
        "MIN_BATCH_SIZE": "1",
        "MAX_QUEUE_SIZE": "256",
        "LOAD_THRESHOLD": "0.7",
        "LATENCY_THRESHOLD_MS": "200.0",
        "CARPOOL_MODEL_BATCHING": "",
        "ENABLE_METRICS": "true",
        "ENABLE_LOGGING": "true",
    }
    assert serving_settings.BatchingConfig.from_env(built["data"]) == p.batching
    assert built["metadata"]["annotations"]["carpool.dev/config-hash"] == p.batching.config_hash()


def test_the_config_map_gives_tuned_models_their_own_config_at_start() -> None:
    p = policy(
        strategy="batch_optimized",
        batching={"maxBatchSize": 16},
        models=[
            {
                "name": "phishing",
                "path": "embedded:minilm",
                "batching": {"maxBatchSize": 4, "enabled": False},
            },
            {"name": "spam", "path": "embedded:minilm", "batching": {"maxWaitTimeMs": 2.5}},
            {"name": "plain", "path": "embedded:minilm"},
        ],
    )
    data = resources.build_config_map(p)["data"]
    assert (
        data["CARPOOL_MODEL_BATCHING"] == "phishing:max_batch_size=4,enable=false;spam:max_wait_time_ms=2.5"
    )
    # What a pod restarted from this ConfigMap runs: the pod's settings read it as the operator meant.
    settings = serving_settings.ServerSettings.from_env(data)
    assert settings.batching == p.batching
    assert {
        name: settings.batching.updated(fields) for name, fields in settings.model_batching.items()
    } == p.model_batching
    # Tuning a model changes the ConfigMap only: the pods' template, and so the pods, stay.
    plain = policy(
        strategy="batch_optimized",
        batching={"maxBatchSize": 16},
        models=[{"name": name, "path": "embedded:minilm"} for name in ("phishing", "spam", "plain")],
    )
    assert deployment(p) == deployment(plain)


def test_the_secret_round_trips_its_token() -> None:
    built = resources.build_secret(policy(), "t0k3n")
    assert built["metadata"]["name"] == "demo-admin" and built["type"] == "Opaque"
    assert base64.b64decode(built["data"]["token"]) == b"t0k3n"
    assert resources.token_from_secret(built) == "t0k3n"


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param({}, id="no-data"),
        pytest.param({"data": {}}, id="no-token"),
        pytest.param({"data": {"token": ""}}, id="empty"),
        pytest.param({"data": {"token": "!!not base64!!"}}, id="garbage"),
    ],
)
def test_a_secret_without_a_usable_token_has_none(secret: dict[str, Any]) -> None:
    assert resources.token_from_secret(secret) is None


MODELS_VOLUME = {
    "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "m"}}],
    "volumeMounts": [{"name": "m", "mountPath": "/m"}],
}


def test_the_deployment_runs_carpool_serve_as_the_guide_configures_it() -> None:
    p = policy(
        models=[{"name": "a", "path": "/m/a"}, {"name": "b", "path": "/m/b"}],
        serving={"port": 9000, **MODELS_VOLUME},
    )
    built = deployment(p, image_pull_secrets=["regcred"])
    template = built["spec"]["template"]
    assert built["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "carpool-serving",
        "carpool.dev/policy": "demo",
    }
    assert built["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "carpool-operator"
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9000",
        "prometheus.io/path": "/metrics",
        "carpool.dev/admin-token-digest": "abc",
    }
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    serving = container(built)
    assert serving["image"] == "img:1"
    assert serving["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert serving["envFrom"] == [{"configMapRef": {"name": "demo-config"}}]
    env = {item["name"]: item for item in serving["env"]}
    assert env["CARPOOL_MODELS"]["value"] == "a=/m/a,b=/m/b"
    assert serving_settings.parse_model_specs([env["CARPOOL_MODELS"]["value"]]) == {
        "a": serving_settings.Path("/m/a"),
        "b": serving_settings.Path("/m/b"),
    }
    assert env["CARPOOL_PORT"]["value"] == "9000" and env["CARPOOL_HOST"]["value"] == "0.0.0.0"
    assert env["CARPOOL_ADMIN_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "demo-admin", "key": "token"}}
    assert serving["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    for probe in ("startupProbe", "livenessProbe"):  # a pod whose model failed stays up to say so
        assert serving[probe]["httpGet"] == {"path": "/livez", "port": "http"}


def test_a_serving_pod_is_taken_out_of_its_service_before_it_drains_within_its_grace_period() -> None:
    built = deployment(policy(models=[{"name": "a", "path": "/m/a"}], serving=MODELS_VOLUME))
    pause = serving_settings.PRESTOP_PAUSE_S
    assert container(built)["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", str(pause)]}}
    grace = built["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The pause, then SIGTERM: held batches leave at once, stalled bodies end at their idle timeout,
    # and whatever a worker still holds is cut at the drain bound, all before Kubernetes' SIGKILL.
    assert grace > pause + serving_settings.DRAIN_BOUND_S
    assert serving_settings.BODY_IDLE_TIMEOUT_S < serving_settings.DRAIN_BOUND_S


def test_the_batching_config_is_not_in_the_pod_template() -> None:
    """A change to strategy, batching or adaptive must not roll the pods."""
    before = deployment(policy(strategy="adaptive"))
    after = deployment(
        policy(strategy="batch_optimized", batching={"maxBatchSize": 4}, adaptive={"loadThreshold": 0.2})
    )
    assert before == after


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        pytest.param({}, "nodeSelector", None, id="no-node-selector"),
        pytest.param(
            {"serving": {"nodeSelector": {"gpu": "yes"}}}, "nodeSelector", {"gpu": "yes"}, id="node-selector"
        ),
        pytest.param(
            {"serving": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}},
            "tolerations",
            [{"key": "gpu", "operator": "Exists"}],
            id="tolerations",
        ),
        pytest.param(
            {"serving": {"volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "m"}}]}},
            "volumes",
            [{"name": "models", "persistentVolumeClaim": {"claimName": "m"}}],
            id="volumes",
        ),
    ],
)
def test_pod_placement_and_volumes(raw: dict[str, Any], field: str, expected: Any) -> None:
    assert deployment(policy(**raw))["spec"]["template"]["spec"].get(field) == expected


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        pytest.param({}, "resources", {}, id="no-resources"),
        pytest.param(
            {"serving": {"resources": {"requests": {"cpu": 0.5, "memory": "1024Mi"}, "limits": {"cpu": 2}}}},
            "resources",
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2"}},
            id="canonical-quantities",
        ),
        pytest.param({}, "imagePullPolicy", None, id="default-pull-policy"),
        pytest.param(
            {"serving": {"imagePullPolicy": "Always"}}, "imagePullPolicy", "Always", id="pull-policy"
        ),
        pytest.param(
            {"serving": {"volumeMounts": [{"name": "models", "mountPath": "/models"}]}},
            "volumeMounts",
            [{"name": "models", "mountPath": "/models"}],
            id="mounts",
        ),
    ],
)
def test_container_options(raw: dict[str, Any], key: str, expected: Any) -> None:
    assert container(deployment(policy(**raw))).get(key) == expected


def test_user_env_comes_after_the_operators() -> None:
    env = container(deployment(policy(serving={"env": [{"name": "CARPOOL_DEVICE", "value": "cuda"}]})))["env"]
    assert env[-1] == {"name": "CARPOOL_DEVICE", "value": "cuda"}


def test_the_service_selects_the_pods() -> None:
    p = policy(serving={"port": 8080})
    built = resources.build_service(p)
    assert built["spec"]["selector"] == deployment(p)["spec"]["selector"]["matchLabels"]
    assert built["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("ingress", "paths"),
    [
        pytest.param(
            {"enabled": True}, ["/predict", "/v2", "/models/status", "/batching/stats", "/health"], id="root"
        ),
        pytest.param(
            {"enabled": True, "path": "/classify/"},
            [
                "/classify/predict",
                "/classify/v2",
                "/classify/models/status",
                "/classify/batching/stats",
                "/classify/health",
            ],
            id="prefix",
        ),
    ],
)
def test_the_ingress_exposes_inference_never_configure(ingress: dict[str, Any], paths: list[str]) -> None:
    built = resources.build_ingress(policy(ingress=ingress))
    assert built is not None
    [rule] = built["spec"]["rules"]
    assert [path["path"] for path in rule["http"]["paths"]] == paths
    assert all(path["backend"]["service"]["name"] == "demo" for path in rule["http"]["paths"])
    assert not any("configure" in path for path in paths)


def test_the_ingress_host_class_and_tls() -> None:
    ingress = {"enabled": True, "host": "c.example.com", "className": "nginx", "tls": {"secretName": "c-tls"}}
    built = resources.build_ingress(policy(ingress=ingress))
    assert built is not None
    assert built["spec"]["ingressClassName"] == "nginx"
    assert built["spec"]["rules"][0]["host"] == "c.example.com"
    assert built["spec"]["tls"] == [{"secretName": "c-tls", "hosts": ["c.example.com"]}]


def test_no_ingress_unless_enabled() -> None:
    assert resources.build_ingress(policy(ingress={"host": "x.example.com"})) is None


def _pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "labels": {"carpool.dev/policy": "demo"}}, "status": status}


READY = [{"type": "Ready", "status": "True"}]


@pytest.mark.parametrize(
    ("pod", "address"),
    [
        pytest.param(_pod(podIP="10.0.0.5", conditions=READY), "10.0.0.5", id="ready"),
        pytest.param(
            _pod(podIP="10.0.0.5", conditions=[{"type": "Ready", "status": "False"}]), None, id="unready"
        ),
        pytest.param(_pod(conditions=READY), None, id="no-ip"),
        pytest.param(_pod(podIP="10.0.0.5"), None, id="no-conditions"),
    ],
)
def test_only_ready_pods_with_an_ip_get_pushes(pod: dict[str, Any], address: str | None) -> None:
    assert resources.pod_address(pod) == address


def test_policy_pods_are_found_by_label_and_not_terminating() -> None:
    assert resources.is_policy_pod(_pod(), "demo")
    assert not resources.is_policy_pod(_pod(), "other")
    leaving = _pod()
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not resources.is_policy_pod(leaving, "demo")


@pytest.mark.parametrize(
    ("live", "desired", "contained"),
    [
        pytest.param({"a": 1, "b": 2}, {"a": 1}, True, id="extra-live-fields"),
        pytest.param({"a": 1}, {"a": 2}, False, id="changed-value"),
        pytest.param({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, True, id="nested-defaults"),
        pytest.param({}, {"a": 1}, False, id="missing-field"),
        pytest.param({"l": [{"n": 1, "d": 0}]}, {"l": [{"n": 1}]}, True, id="list-items-with-defaults"),
        pytest.param({"l": [{"n": 1}, {"n": 2}]}, {"l": [{"n": 1}]}, False, id="list-longer"),
        pytest.param({"l": [{"n": 2}]}, {"l": [{"n": 1}]}, False, id="list-item-changed"),
        pytest.param({"a": 10}, {"a": 10.0}, True, id="int-float"),
    ],
)
def test_drift_check(live: dict[str, Any], desired: dict[str, Any], contained: bool) -> None:
    assert resources.contains(live, desired) is contained


def test_model_sources_become_volumes_mounts_and_init_containers() -> None:
    p = policy(
        models=[
            {"name": "phishing", "source": {"pvc": {"claimName": "models", "subPath": "phishing"}}},
            {"name": "spam_v2", "source": {"pvc": {"claimName": "models"}}, "runtime": "onnx-int8"},
            {"name": "pi", "source": {"image": {"reference": "r/pi:1", "pullPolicy": "Always"}}},
            {
                "name": "tox",
                "source": {"image": {"reference": "r/tox:1", "method": "imageVolume", "path": "/"}},
            },
        ]
    )
    pod = deployment(p)["spec"]["template"]["spec"]
    serving = container(deployment(p))
    assert pod["volumes"] == [
        {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
        {"name": "model-pi", "emptyDir": {}},
        {"name": "model-tox", "image": {"reference": "r/tox:1"}},
    ]
    assert serving["volumeMounts"] == [
        {"name": "pvc-models", "mountPath": "/models/phishing", "readOnly": True, "subPath": "phishing"},
        {"name": "pvc-models", "mountPath": "/models/spam_v2", "readOnly": True},
        {"name": "model-pi", "mountPath": "/models/pi", "readOnly": True},
        {"name": "model-tox", "mountPath": "/models/tox", "readOnly": True},
    ]
    [init] = pod["initContainers"]
    assert init == {
        "name": "copy-model-pi",
        "image": "r/pi:1",
        "command": ["cp", "-R", "/model/.", "/carpool-model/"],
        "volumeMounts": [{"name": "model-pi", "mountPath": "/carpool-model"}],
        "securityContext": {"allowPrivilegeEscalation": False},
        "imagePullPolicy": "Always",
    }
    env = {item["name"]: item["value"] for item in serving["env"] if "value" in item}
    assert (
        env["CARPOOL_MODELS"]
        == "phishing=/models/phishing,spam_v2=/models/spam_v2,pi=/models/pi,tox=/models/tox"
    )
    assert env["CARPOOL_MODEL_RUNTIMES"] == "spam_v2=onnx-int8"


def test_an_image_volume_mounts_the_models_directory_with_a_sub_path() -> None:
    p = policy(models=[{"name": "m", "source": {"image": {"reference": "r/m:1", "method": "imageVolume"}}}])
    [mount] = container(deployment(p))["volumeMounts"]
    assert mount == {"name": "model-m", "mountPath": "/models/m", "readOnly": True, "subPath": "model"}
    assert "initContainers" not in deployment(p)["spec"]["template"]["spec"]


def test_a_gpu_policy_gets_the_gpu_its_toleration_and_cuda() -> None:
    gpu = {
        "count": 2,
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    }
    p = policy(
        serving={"gpu": gpu, "nodeSelector": {"zone": "a"}, "resources": {"limits": {"memory": "8Gi"}}}
    )
    pod = deployment(p)["spec"]["template"]["spec"]
    serving = container(deployment(p))
    assert serving["resources"] == {"limits": {"memory": "8Gi", "nvidia.com/gpu": "2"}}
    assert pod["nodeSelector"] == {"zone": "a", "pool": "a100"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert {"name": "CARPOOL_DEVICE", "value": "cuda"} in serving["env"]
    assert not any(item["name"] == "CARPOOL_DEVICE" for item in container(deployment(policy()))["env"])


@pytest.mark.parametrize(
    ("serving", "expected"),
    [
        pytest.param({}, None, id="auto-without-cpu-request"),
        pytest.param({"resources": {"requests": {"cpu": "2500m"}}}, "2", id="auto-rounds-down"),
        pytest.param({"resources": {"requests": {"cpu": "500m"}}}, "1", id="auto-at-least-one"),
        pytest.param({"resources": {"limits": {"cpu": 4}}}, None, id="auto-limit-only"),
        pytest.param({"workers": 3, "resources": {"requests": {"cpu": 8}}}, "3", id="explicit"),
    ],
)
def test_workers(serving: dict[str, Any], expected: str | None) -> None:
    env = {item["name"]: item.get("value") for item in container(deployment(policy(serving=serving)))["env"]}
    assert env.get("CARPOOL_WORKERS") == expected

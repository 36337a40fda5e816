"""The chart renders, lints clean, and every object it renders is one the API server accepts.

Runs over the default values and every ci/*-values.yaml, as chart-testing would.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from carpool_operator import command as operator_command
from carpool_operator import settings as operator_settings
from tests.charts import rendering

pytestmark = pytest.mark.unit

CUSTOM_KINDS = {"BatchingPolicy", "PodMonitor", "ServiceMonitor"}
"""Kinds with no schema in kubernetes-validate; their own tests check them."""

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_lint_reports_no_warning_or_error(value_set: str) -> None:
    for kube_version in rendering.KUBE_VERSIONS:
        report = helm.lint(
            rendering.CHART_DIR,
            rendering.load_values(value_set),
            strict=True,
            namespace=rendering.NAMESPACE,
            kube_version=f"v{kube_version}.0",
        )
        problems = [message for message in report["messages"] if message["severity"] >= 2]
        assert report["errors"] == []
        assert problems == []


@pytest.mark.parametrize("value_set", rendering.value_set_params())
@pytest.mark.parametrize("kube_version", rendering.KUBE_VERSIONS)
def test_every_built_in_object_matches_the_kubernetes_schema(value_set: str, kube_version: str) -> None:
    objects = rendering.rendered(value_set)
    built_in = [obj for obj in objects if obj["kind"] not in CUSTOM_KINDS]
    assert built_in, "the chart rendered no Kubernetes object"
    for obj in built_in:
        # strict: a field the API server would drop (a typo, a wrong nesting) is an error here.
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_the_default_install_holds_the_operator_its_account_and_its_rights() -> None:
    kinds = sorted(obj["kind"] for obj in rendering.rendered(rendering.DEFAULT))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_objects_carry_the_recommended_labels(value_set: str) -> None:
    for obj in rendering.rendered(value_set):
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in RECOMMENDED_LABELS if label not in labels]
        assert missing == [], f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == rendering.RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "carpool"


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_selectors_are_stable_across_upgrades_and_select_the_pods(value_set: str) -> None:
    deployment = rendering.one(rendering.rendered(value_set), "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    # A selector is immutable: a label that changes with each chart release would block upgrades.
    assert "helm.sh/chart" not in selector
    assert "app.kubernetes.io/version" not in selector
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_the_operator_runs_non_root_on_a_read_only_filesystem(value_set: str) -> None:
    objects = rendering.rendered(value_set)
    pod = rendering.one(objects, "Deployment")["spec"]["template"]["spec"]
    container = rendering.operator_container(objects)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Python and Kopf may write temporary files: /tmp is the one writable place.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_probes_call_the_kopf_health_endpoint_the_operator_is_started_with(value_set: str) -> None:
    container = rendering.operator_container(rendering.rendered(value_set))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    liveness = [arg for arg in container["args"] if arg.startswith("--liveness=")]
    assert liveness == [f"--liveness=http://0.0.0.0:{ports['health']}/healthz"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_the_operator_pauses_before_sigterm_within_its_grace_period() -> None:
    deployment = rendering.one(rendering.rendered(rendering.DEFAULT), "Deployment")
    container = rendering.operator_container(rendering.rendered(rendering.DEFAULT))
    assert container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45


def test_one_operator_runs_at_a_time() -> None:
    deployment = rendering.one(rendering.rendered(rendering.DEFAULT), "Deployment")
    # Two operators would push configs and scale the same policies against each other.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("values", "gpu_image"),
    [
        pytest.param({}, "ghcr.io/carpool-dev/carpool-serving:{app}-cuda", id="cuda-tag-by-default"),
        pytest.param(
            {"serving": {"gpuImage": {"repository": "reg/serving", "tag": "2-cu128"}}},
            "reg/serving:2-cu128",
            id="tag",
        ),
        pytest.param(
            {"serving": {"gpuImage": {"digest": "sha256:" + "b" * 64}}},
            "ghcr.io/carpool-dev/carpool-serving@sha256:" + "b" * 64,
            id="digest",
        ),
    ],
)
def test_the_gpu_serving_image_reaches_the_operator(values: dict[str, Any], gpu_image: str) -> None:
    app_version = rendering.chart().metadata["appVersion"]
    container = rendering.operator_container(list(rendering.objects_of(rendering.render(values))))
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["CARPOOL_SERVING_GPU_IMAGE"] == gpu_image.format(app=app_version)


@pytest.mark.parametrize(
    ("values", "operator_image", "serving_image"),
    [
        pytest.param(
            {},
            "ghcr.io/carpool-dev/carpool-operator:{app}",
            "ghcr.io/carpool-dev/carpool-serving:{app}",
            id="tags-default-to-app-version",
        ),
        pytest.param(
            {"image": {"tag": "1.2.3"}, "serving": {"image": {"tag": "1.2.3-cuda"}}},
            "ghcr.io/carpool-dev/carpool-operator:1.2.3",
            "ghcr.io/carpool-dev/carpool-serving:1.2.3-cuda",
            id="explicit-tags",
        ),
        pytest.param(
            {"image": {"tag": "1.2.3", "digest": "sha256:" + "a" * 64}},
            "ghcr.io/carpool-dev/carpool-operator@sha256:" + "a" * 64,
            "ghcr.io/carpool-dev/carpool-serving:{app}",
            id="digest-wins-over-tag",
        ),
    ],
)
def test_image_references(values: dict[str, Any], operator_image: str, serving_image: str) -> None:
    app_version = rendering.chart().metadata["appVersion"]
    container = rendering.operator_container(list(rendering.objects_of(rendering.render(values))))
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["image"] == operator_image.format(app=app_version)
    assert env["CARPOOL_SERVING_IMAGE"] == serving_image.format(app=app_version)


def test_extra_args_and_env_reach_the_operator() -> None:
    values = {
        "operator": {
            "verbose": True,
            "extraArgs": ["--resync-seconds=60"],
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
        }
    }
    container = rendering.operator_container(list(rendering.objects_of(rendering.render(values))))
    assert container["args"][0] == "operator"
    assert {"--verbose", "--resync-seconds=60"} <= set(container["args"])
    assert {"name": "TZ", "value": "UTC"} in container["env"]


def test_an_existing_service_account_is_used_without_creating_rights() -> None:
    objects = rendering.rendered("existing-serviceaccount")
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    pod = rendering.one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "carpool-operator"


def test_names_are_cut_to_a_dns_label() -> None:
    release = "a-very-long-release-name-that-goes-on-and-on-for-ever"
    manifests = rendering.chart().render({}, name=release, namespace=rendering.NAMESPACE)
    for obj in rendering.objects_of(manifests):
        assert len(obj["metadata"]["name"]) <= 63
        assert not obj["metadata"]["name"].endswith("-")


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_notes_tell_the_user_what_to_do_next(value_set: str) -> None:
    notes = rendering.notes(value_set)
    deployment = rendering.one(rendering.rendered(value_set), "Deployment")
    assert f"rollout status deployment/{deployment['metadata']['name']}" in notes
    assert "BatchingPolicy" in notes or "batchingpolicies" in notes
    assert "/predict" in notes
    assert "carpool_queue_size" in notes or "/metrics" in notes


def test_the_operator_reads_the_serving_image_and_pull_secrets_the_chart_sets() -> None:
    container = rendering.operator_container(rendering.rendered("production"))
    environ = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    config = operator_settings.OperatorConfig.from_env(environ)
    assert config.serving_image == "registry.example.com/carpool/carpool-serving:0.1.0-cuda"
    assert config.image_pull_secrets == ("registry-credentials",)
    pod = rendering.one(rendering.rendered("production"), "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]


def test_by_default_the_operator_runs_the_serving_image_of_the_same_release() -> None:
    container = rendering.operator_container(rendering.rendered(rendering.DEFAULT))
    environ = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert "CARPOOL_IMAGE_PULL_SECRETS" not in environ
    # The operator's built-in default names the same image, for runs outside the chart.
    assert (
        operator_settings.OperatorConfig.from_env(environ).serving_image
        == operator_settings.DEFAULT_SERVING_IMAGE
    )


@pytest.mark.parametrize("value_set", rendering.value_set_params())
def test_the_operator_accepts_every_argument_the_chart_passes(value_set: str) -> None:
    container = rendering.operator_container(rendering.rendered(value_set))
    assert container["args"][0] == "operator"
    args = operator_command.parser().parse_args(container["args"][1:])
    values = rendering.chart().merge_values(rendering.load_values(value_set))
    assert args.namespace == values["operator"]["watchNamespaces"]
    assert args.liveness == f"http://0.0.0.0:{values['operator']['healthPort']}/healthz"
    assert args.verbose is values["operator"]["verbose"]

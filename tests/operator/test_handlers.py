"""The operator running for real under Kopf against an emulated API server (kmock).

Each test starts the API server and `carpool operator` (as command.build() assembles it, with a
1 s periodic pass) and acts as a user or another controller would: through the API.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from carpool_operator import kube, rbac, resources
from serving import settings as serving_settings
from tests.support import kube as k8s

pytestmark = pytest.mark.integration

NS = "default"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[k8s.ApiServer]:
    async with k8s.api_server() as api:
        # The autoscaler's own passes are tested elsewhere; here it must not race the hand-written status.
        config = k8s.fast_config(
            k8s.write_kubeconfig(tmp_path / "kubeconfig", str(api.url)), autoscale_interval_s=3600.0
        )
        async with k8s.running_operator(api, config):
            yield api


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def _condition(server: k8s.ApiServer, name: str, type_: str) -> dict[str, Any] | None:
    policy = server.get(kube.POLICIES, NS, name) or {}
    for condition in (policy.get("status") or {}).get("conditions") or ():
        if condition["type"] == type_:
            return dict(condition)
    return None


def _token(secret: dict[str, Any]) -> str:
    return base64.b64decode(secret["data"]["token"]).decode()


async def test_a_policy_gets_owned_children(server: k8s.ApiServer) -> None:
    spec = {
        "models": [{"name": "phishing", "source": {"pvc": {"claimName": "models", "subPath": "phishing"}}}],
        "strategy": "batch_optimized",
        "batching": {"maxBatchSize": 16, "maxWaitTimeMs": 40},
        "serving": {"replicas": 2, "port": 8080},
        "ingress": {"enabled": True, "host": "classify.example.com"},
    }
    policy = await server.create(kube.POLICIES, NS, _policy("demo", **spec))

    kinds = [kube.DEPLOYMENTS, kube.SERVICES, kube.INGRESSES]
    deployment, service, ingress = [
        await k8s.eventually(lambda kind=kind: server.get(kind, NS, "demo"), what=kind.kind) for kind in kinds
    ]
    config_map = server.get(kube.CONFIG_MAPS, NS, "demo-config")
    secret = server.get(kube.SECRETS, NS, "demo-admin")
    assert config_map is not None and secret is not None

    owner = {"kind": "BatchingPolicy", "name": "demo", "uid": policy["metadata"]["uid"], "controller": True}
    for child in (deployment, service, ingress, config_map, secret):
        [reference] = child["metadata"]["ownerReferences"]
        assert {key: reference[key] for key in owner} == owner

    config = serving_settings.BatchingConfig(
        strategy=serving_settings.Strategy.BATCH_OPTIMIZED, max_batch_size=16, max_wait_time_ms=40
    )
    assert config_map["data"] == {
        **config.to_env(),
        "CARPOOL_MODEL_BATCHING": "",  # no model tuned
        "ENABLE_METRICS": "true",
        "ENABLE_LOGGING": "true",
    }
    assert len(_token(secret)) >= 32

    template = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    assert template["metadata"]["labels"][resources.POLICY_LABEL] == "demo"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    [container] = template["spec"]["containers"]
    assert container["image"] == "carpool-serving:test"
    assert container["envFrom"] == [{"configMapRef": {"name": "demo-config"}}]
    env = {item["name"]: item for item in container["env"]}
    assert env["CARPOOL_MODELS"]["value"] == "phishing=/models/phishing"
    [volume] = template["spec"]["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert container["volumeMounts"] == [
        {"name": volume["name"], "mountPath": "/models/phishing", "readOnly": True, "subPath": "phishing"}
    ]
    assert env["CARPOOL_ADMIN_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "demo-admin", "key": "token"}}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    paths = [path["path"] for path in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert "/predict" in paths and not any(path.startswith("/batching/configure") for path in paths)

    ready = await k8s.eventually(lambda: _condition(server, "demo", "Ready"), what="Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "ReplicasNotReady",
        "0 of 2 replicas ready",
    )
    applied = _condition(server, "demo", "ConfigApplied")
    assert applied is not None and (applied["status"], applied["reason"]) == ("True", "NoReadyPods")
    status = server.get(kube.POLICIES, NS, "demo")["status"]  # type: ignore[index]
    assert status["observedGeneration"] == 1 and status["configHash"] == config.config_hash()
    reasons = {event["reason"] for event in server.events(NS, "demo")}
    assert {
        "DeploymentCreated",
        "ServiceCreated",
        "ConfigMapCreated",
        "SecretCreated",
        "IngressCreated",
    } <= reasons


async def test_deleted_or_edited_children_are_restored_and_the_token_kept(server: k8s.ApiServer) -> None:
    await server.create(kube.POLICIES, NS, _policy("heal", strategy="adaptive"))
    await k8s.eventually(lambda: _condition(server, "heal", "Ready"), what="a first pass")
    deployment = server.get(kube.DEPLOYMENTS, NS, "heal")
    secret = server.get(kube.SECRETS, NS, "heal-admin")
    assert deployment is not None
    assert secret is not None
    token = _token(secret)

    await server.delete_object(kube.SERVICES, NS, "heal")
    await server.delete_object(kube.CONFIG_MAPS, NS, "heal-config")
    image_patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "serving", "image": "evil:latest"}]}}}
    }
    await server.patch_object(kube.DEPLOYMENTS, NS, "heal", image_patch)

    await k8s.eventually(lambda: server.get(kube.SERVICES, NS, "heal"), what="Service restored")
    await k8s.eventually(lambda: server.get(kube.CONFIG_MAPS, NS, "heal-config"), what="ConfigMap restored")
    restored = await k8s.eventually(
        lambda: (
            (d := server.get(kube.DEPLOYMENTS, NS, "heal"))
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == "carpool-serving:test"
            and d
        ),
        what="Deployment image restored",
    )
    assert restored["spec"]["template"] == deployment["spec"]["template"]
    assert _token(server.get(kube.SECRETS, NS, "heal-admin")) == token  # type: ignore[arg-type]

    # A deleted Secret comes back with a new token, and the pods roll to pick it up.
    digest = deployment["spec"]["template"]["metadata"]["annotations"]["carpool.dev/admin-token-digest"]
    await server.delete_object(kube.SECRETS, NS, "heal-admin")
    new_secret = await k8s.eventually(
        lambda: server.get(kube.SECRETS, NS, "heal-admin"), what="Secret restored"
    )
    assert _token(new_secret) != token
    rolled = await k8s.eventually(
        lambda: (
            (d := server.get(kube.DEPLOYMENTS, NS, "heal"))
            and d["spec"]["template"]["metadata"]["annotations"]["carpool.dev/admin-token-digest"] != digest
        ),
        what="pod template carrying the new token's digest",
    )
    assert rolled


async def test_a_spec_the_schema_let_through_gets_a_clear_condition(server: k8s.ApiServer) -> None:
    env = [{"name": "BATCHING_STRATEGY", "value": "single_request"}]
    await server.create(kube.POLICIES, NS, _policy("broken", serving={"env": env}))

    ready = await k8s.eventually(lambda: _condition(server, "broken", "Ready"), what="Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.serving.env[0] sets BATCHING_STRATEGY" in ready["message"]
    assert server.get(kube.DEPLOYMENTS, NS, "broken") is None
    warnings = [
        e for e in server.events(NS, "broken") if e["type"] == "Warning" and e["reason"] == "InvalidSpec"
    ]
    assert warnings and "BATCHING_STRATEGY" in warnings[0]["message"]

    await server.patch_object(kube.POLICIES, NS, "broken", {"spec": {"serving": {"env": []}}})

    await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, "broken"), what="Deployment once fixed")
    fixed = await k8s.eventually(
        lambda: (c := _condition(server, "broken", "Ready")) and c["reason"] != "InvalidSpec" and c,
        what="Ready past InvalidSpec",
    )
    assert fixed["observedGeneration"] == 2


async def test_the_autoscalers_replicas_and_conditions_are_left_alone(server: k8s.ApiServer) -> None:
    autoscaling = {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "prometheusUrl": "http://127.0.0.1:9"}
    await server.create(
        kube.POLICIES, NS, _policy("scaled", serving={"replicas": 1}, autoscaling=autoscaling)
    )
    deployment = await k8s.eventually(lambda: server.get(kube.DEPLOYMENTS, NS, "scaled"), what="Deployment")
    assert deployment["spec"]["replicas"] == 2  # serving.replicas, raised to minReplicas
    await k8s.eventually(lambda: _condition(server, "scaled", "Ready"), what="Ready")

    await server.patch_object(kube.DEPLOYMENTS, NS, "scaled", {"spec": {"replicas": 5}})
    scaling = {"type": "Scaling", "status": "True", "reason": "ScaledUp", "message": "2 -> 5"}
    policy = server.get(kube.POLICIES, NS, "scaled")
    conditions = [*policy["status"]["conditions"], scaling]  # type: ignore[index]
    await server.patch_object(kube.POLICIES, NS, "scaled", {"status": {"conditions": conditions}}, "status")

    await k8s.eventually(
        lambda: (c := _condition(server, "scaled", "Ready")) and c["message"] == "0 of 5 replicas ready",
        what="Ready counting the autoscaler's replicas",
    )
    assert server.get(kube.DEPLOYMENTS, NS, "scaled")["spec"]["replicas"] == 5  # type: ignore[index]
    assert _condition(server, "scaled", "Scaling") == scaling


async def test_a_full_life_calls_only_what_rbac_grants(server: k8s.ApiServer) -> None:
    ingress = {"enabled": True, "host": "a.example.com"}
    await server.create(kube.POLICIES, NS, _policy("life", ingress=ingress))
    await server.create(kube.PODS, NS, k8s.ready_pod("life-abc", "life", "127.0.0.9"))
    await k8s.eventually(lambda: server.get(kube.INGRESSES, NS, "life"), what="Ingress")
    await k8s.eventually(
        lambda: (c := _condition(server, "life", "ConfigApplied")) and c["status"] == "False" and c,
        what="ConfigApplied=False for an unreachable pod",
    )
    await server.patch_object(kube.POLICIES, NS, "life", {"spec": {"ingress": {"enabled": False}}})
    await k8s.eventually(lambda: server.get(kube.INGRESSES, NS, "life") is None, what="Ingress removed")

    await server.delete_object(kube.POLICIES, NS, "life")

    await k8s.eventually(lambda: server.get(kube.POLICIES, NS, "life") is None, what="policy gone")
    for kind, name in [
        (kube.DEPLOYMENTS, "life"),
        (kube.SERVICES, "life"),
        (kube.CONFIG_MAPS, "life-config"),
        (kube.SECRETS, "life-admin"),
    ]:
        assert server.get(kind, NS, name) is None, f"{kind.kind} {name} left behind"

    calls = server.api_calls()
    operator_requests = [r for r in server if not r.headers.get("User-Agent", "").startswith("kmock")]
    assert operator_requests  # Kopf and the reconciler log in with the kubeconfig's credentials
    assert {r.headers.get("Authorization") for r in operator_requests} == {"Bearer emulated-token"}
    assert ("", "pods", "list") in calls and ("networking.k8s.io", "ingresses", "delete") in calls
    assert [call for call in calls if not rbac.allows(*call)] == []

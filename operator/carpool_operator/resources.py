"""The children of a BatchingPolicy, built as plain dicts: no I/O, no Kopf.

A policy `<name>` owns:

- ConfigMap `<name>-config`: the guide's batching variables (`BatchingConfig.to_env()`), which the
  pods read at start through `envFrom`. A live change updates it and is pushed to running pods;
  the pod template does not change, so nothing rolls.
- Secret `<name>-admin`: the bearer token of `POST /batching/configure`, generated once and kept.
- Deployment `<name>`: `carpool serve` pods labelled `carpool.dev/policy: <name>`, probed on
  /health, annotated for Prometheus scraping. The template carries a digest of the admin token:
  a re-created Secret (new token) rolls the pods so that they accept the operator's token again.
- Service `<name>`: the pods' HTTP port.
- Ingress `<name>` when spec.ingress.enabled: the inference endpoints, never /batching/configure.

Ownership (`kopf.adopt`) is added by the caller. `contains()` is the drift check: a live object
"contains" the desired one when every field the operator sets has the value it wants, whatever
the API server added (defaults, status, other managers' fields).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from carpool_operator import spec

__all__ = [
    "POLICY_LABEL",
    "TOKEN_KEY",
    "build_config_map",
    "build_deployment",
    "build_ingress",
    "build_secret",
    "build_service",
    "config_map_name",
    "contains",
    "is_policy_pod",
    "pod_address",
    "secret_name",
    "selector_labels",
    "token_digest",
    "token_from_secret",
]

POLICY_LABEL = "carpool.dev/policy"
"""The label that ties a serving pod to its policy; the operator finds pods by it."""

TOKEN_KEY = "token"
"""Key of the admin token in the Secret's data."""

TOKEN_DIGEST_ANNOTATION = "carpool.dev/admin-token-digest"
CONFIG_HASH_ANNOTATION = "carpool.dev/config-hash"

CONTAINER_NAME = "serving"
PORT_NAME = "http"
INFERENCE_PATHS: tuple[tuple[str, str], ...] = (
    ("/predict", "Prefix"),  # /predict, /predict/trained, /predict/batch
    ("/models/status", "Exact"),
    ("/batching/stats", "Exact"),
    ("/health", "Exact"),
)
"""What an Ingress exposes: everything a client needs, nothing that changes the pods."""


def config_map_name(policy_name: str) -> str:
    return f"{policy_name}-config"


def secret_name(policy_name: str) -> str:
    return f"{policy_name}-admin"


def selector_labels(policy: spec.PolicySpec) -> dict[str, str]:
    """Labels that select the policy's pods (immutable once the Deployment exists)."""
    return {"app.kubernetes.io/name": "carpool-serving", POLICY_LABEL: policy.name}


def _labels(policy: spec.PolicySpec) -> dict[str, str]:
    return {
        **selector_labels(policy),
        "app.kubernetes.io/instance": policy.name,
        "app.kubernetes.io/component": "serving",
        "app.kubernetes.io/part-of": "carpool",
        "app.kubernetes.io/managed-by": "carpool-operator",
    }


def _metadata(policy: spec.PolicySpec, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": policy.namespace, "labels": _labels(policy)}


def build_config_map(policy: spec.PolicySpec) -> dict[str, Any]:
    """The batching config new pods start with, as the guide's environment variables."""
    metadata = _metadata(policy, config_map_name(policy.name))
    metadata["annotations"] = {CONFIG_HASH_ANNOTATION: policy.batching.config_hash()}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {**policy.batching.to_env(), "ENABLE_METRICS": "true", "ENABLE_LOGGING": "true"},
    }


def build_secret(policy: spec.PolicySpec, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(policy, secret_name(policy.name)),
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def token_from_secret(secret: Mapping[str, Any]) -> str | None:
    """The admin token a Secret holds, or None when it holds none."""
    encoded = (secret.get("data") or {}).get(TOKEN_KEY)
    if not encoded:
        return None
    try:
        token = base64.b64decode(encoded, validate=True).decode()
    except ValueError:
        return None
    return token or None


def token_digest(token: str) -> str:
    """A short digest of the token for the pod template: it changes when the token does."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _probe(period_s: int, timeout_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": PORT_NAME},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def build_deployment(
    policy: spec.PolicySpec,
    *,
    image: str,
    token_digest: str,
    replicas: int,
    image_pull_secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """The serving pods. `image` is spec.serving.image or the operator's default."""
    serving = policy.serving
    env: list[dict[str, Any]] = [
        {"name": "CARPOOL_HOST", "value": "0.0.0.0"},
        {"name": "CARPOOL_PORT", "value": str(serving.port)},
        {
            "name": "CARPOOL_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name(policy.name), "key": TOKEN_KEY}},
        },
    ]
    if policy.models:
        models = ",".join(f"{model.name}={model.path}" for model in policy.models)
        env.append({"name": "CARPOOL_MODELS", "value": models})
    env.extend(dict(item) for item in serving.env)

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "ports": [{"name": PORT_NAME, "containerPort": serving.port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": config_map_name(policy.name)}}],
        "env": env,
        "resources": dict(serving.resources),
        # Loading and warming the models may take minutes: the startup probe allows 10.
        "startupProbe": _probe(period_s=5, timeout_s=3, failures=120),
        "readinessProbe": _probe(period_s=5, timeout_s=3, failures=3),
        "livenessProbe": _probe(period_s=10, timeout_s=5, failures=6),
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if serving.image_pull_policy:
        container["imagePullPolicy"] = serving.image_pull_policy
    if serving.volume_mounts:
        container["volumeMounts"] = [dict(mount) for mount in serving.volume_mounts]

    pod_spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 30}
    if serving.volumes:
        pod_spec["volumes"] = [dict(volume) for volume in serving.volumes]
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(serving.node_selector)
    if serving.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in serving.tolerations]
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in image_pull_secrets]

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(policy, policy.name),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(policy)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _labels(policy),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(serving.port),
                        "prometheus.io/path": "/metrics",
                        TOKEN_DIGEST_ANNOTATION: token_digest,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_service(policy: spec.PolicySpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(policy, policy.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(policy),
            "ports": [
                {"name": PORT_NAME, "port": policy.serving.port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def build_ingress(policy: spec.PolicySpec) -> dict[str, Any] | None:
    """The Ingress, or None when spec.ingress is disabled."""
    ingress = policy.ingress
    if not ingress.enabled:
        return None
    base = ingress.path.rstrip("/")
    backend = {"service": {"name": policy.name, "port": {"name": PORT_NAME}}}
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {"path": f"{base}{path}", "pathType": kind, "backend": backend}
                for path, kind in INFERENCE_PATHS
            ]
        }
    }
    if ingress.host:
        rule["host"] = ingress.host
    result: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(policy, policy.name),
        "spec": {"rules": [rule]},
    }
    if ingress.class_name:
        result["spec"]["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        tls: dict[str, Any] = {"secretName": ingress.tls_secret_name}
        if ingress.host:
            tls["hosts"] = [ingress.host]
        result["spec"]["tls"] = [tls]
    return result


def is_policy_pod(pod: Mapping[str, Any], policy_name: str) -> bool:
    """Whether a pod serves that policy and is not on its way out."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    return labels.get(POLICY_LABEL) == policy_name and not metadata.get("deletionTimestamp")


def pod_address(pod: Mapping[str, Any]) -> str | None:
    """The pod's IP when it is Ready and has one (the only pods a push goes to), else None."""
    status = pod.get("status") or {}
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or ()
    )
    ip = status.get("podIP")
    return ip if ready and isinstance(ip, str) and ip else None


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` has every field of `desired` with the same value (lists item by item)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list | tuple):
        return (
            isinstance(live, list | tuple)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)

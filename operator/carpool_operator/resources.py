"""The children of a BatchingPolicy, built as plain dicts: no I/O, no Kopf.

A policy `<name>` owns:

- ConfigMap `<name>-config`: the guide's batching variables (`BatchingConfig.to_env()`) and the
  tuned models' own fields (`CARPOOL_MODEL_BATCHING`), which the pods read at start through
  `envFrom`. A live change updates it and is pushed to running pods; the pod template does not
  change, so nothing rolls.
- Secret `<name>-admin`: the bearer token of `POST /batching/configure`, generated once and kept.
- Deployment `<name>`: `carpool serve` pods labelled `carpool.dev/policy: <name>`, ready on
  /health and live on /livez, annotated for Prometheus scraping. The template carries a digest of
  the admin token: a re-created Secret (new token) rolls the pods so that they accept the
  operator's token again.
- Service `<name>`: the pods' HTTP port.
- Ingress `<name>` when spec.ingress.enabled: the inference endpoints, never /batching/configure.

Ownership (`kopf.adopt`) is added by the caller. `contains()` is the drift check: a live object
"contains" the desired one when every field the operator sets has the value it wants, whatever
the API server added (defaults, status, other managers' fields).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from carpool_operator import quantity, spec
from serving import settings as serving_settings

__all__ = [
    "POLICY_LABEL",
    "TOKEN_KEY",
    "VARIANT_LABEL",
    "build_config_map",
    "build_deployment",
    "build_ingress",
    "build_secret",
    "build_service",
    "config_map_name",
    "contains",
    "deployment_name",
    "is_policy_pod",
    "model_volumes",
    "pod_address",
    "pod_ip",
    "secret_name",
    "selector_labels",
    "token_digest",
    "token_from_secret",
    "variant_of",
    "workers",
]

POLICY_LABEL = "carpool.dev/policy"
VARIANT_LABEL = "carpool.dev/variant"
"""On an experiment's pods: the variant they run (its Deployment selects on it, the Service does not)."""
"""The label that ties a serving pod to its policy; the operator finds pods by it."""

TOKEN_KEY = "token"
"""Key of the admin token in the Secret's data."""

TOKEN_DIGEST_ANNOTATION = "carpool.dev/admin-token-digest"
CONFIG_HASH_ANNOTATION = "carpool.dev/config-hash"

CONTAINER_NAME = "serving"
PORT_NAME = "http"
INFERENCE_PATHS: tuple[tuple[str, str], ...] = (
    ("/predict", "Prefix"),  # /predict, /predict/trained, /predict/batch
    ("/v2", "Prefix"),  # the Open Inference Protocol: /v2, /v2/health/*, /v2/models/...
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
    """The batching config new pods start with, as the guide's environment variables, and each
    tuned model's own fields as CARPOOL_MODEL_BATCHING (always present, empty when no model is
    tuned: a merge patch that left the key out would keep an old value)."""
    metadata = _metadata(policy, config_map_name(policy.name))
    metadata["annotations"] = {CONFIG_HASH_ANNOTATION: policy.batching.config_hash()}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {
            **policy.batching.to_env(),
            "CARPOOL_MODEL_BATCHING": serving_settings.format_model_batching(policy.model_overrides),
            "ENABLE_METRICS": "true",
            "ENABLE_LOGGING": "true",
        },
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


def _probe(path: str, period_s: int, timeout_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


MODEL_COPY_MOUNT = "/carpool-model"
"""Where a model image's init container sees the emptyDir it copies the model into."""


@dataclasses.dataclass(frozen=True, slots=True)
class ModelVolumes:
    """What the pod needs to see its models' sources: volumes, mounts, copying init containers."""

    volumes: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()


def _dns_label(text: str, taken: set[str]) -> str:
    """A volume or container name from `text`: a DNS label of at most 63 characters, unique."""
    base = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:56].strip("-") or "x"
    name, counter = base, 1
    while name in taken:
        counter += 1
        name = f"{base}-{counter}"
    taken.add(name)
    return name


def model_volumes(policy: spec.PolicySpec) -> ModelVolumes:
    """The volumes, mounts and init containers that bring each model's source to /models/<name>.

    - pvc: the claim as a read-only volume (one per claim), mounted with the model's subPath;
    - image, initContainer: an emptyDir the image's own `cp` fills before the server starts;
    - image, imageVolume: a Kubernetes image volume (read-only), with the path as subPath.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    inits: list[dict[str, Any]] = []
    taken = {str(volume.get("name")) for volume in policy.serving.volumes}
    claims: dict[str, str] = {}
    init_names: set[str] = set()
    for model in policy.models:
        source = model.source
        mount: dict[str, Any] = {"mountPath": model.mount_path, "readOnly": True}
        if isinstance(source, spec.PvcSource):
            if source.claim_name not in claims:
                claims[source.claim_name] = _dns_label(f"pvc-{source.claim_name}", taken)
                volumes.append(
                    {
                        "name": claims[source.claim_name],
                        "persistentVolumeClaim": {"claimName": source.claim_name, "readOnly": True},
                    }
                )
            mount["name"] = claims[source.claim_name]
            if source.sub_path:
                mount["subPath"] = source.sub_path
        elif isinstance(source, spec.ImageSource) and source.method == "imageVolume":
            image: dict[str, Any] = {"reference": source.reference}
            if source.pull_policy:
                image["pullPolicy"] = source.pull_policy
            mount["name"] = _dns_label(f"model-{model.name}", taken)
            volumes.append({"name": mount["name"], "image": image})
            if source.path != "/":
                mount["subPath"] = source.path.lstrip("/")
        elif isinstance(source, spec.ImageSource):
            mount["name"] = _dns_label(f"model-{model.name}", taken)
            volumes.append({"name": mount["name"], "emptyDir": {}})
            init: dict[str, Any] = {
                "name": _dns_label(f"copy-model-{model.name}", init_names),
                "image": source.reference,
                "command": ["cp", "-R", f"{source.path.rstrip('/')}/.", f"{MODEL_COPY_MOUNT}/"],
                "volumeMounts": [{"name": mount["name"], "mountPath": MODEL_COPY_MOUNT}],
                "securityContext": {"allowPrivilegeEscalation": False},
            }
            if source.pull_policy:
                init["imagePullPolicy"] = source.pull_policy
            inits.append(init)
        else:
            continue
        mounts.append({"name": mount.pop("name"), **mount})
    return ModelVolumes(tuple(volumes), tuple(mounts), tuple(inits))


def workers(policy: spec.PolicySpec) -> int | None:
    """CARPOOL_WORKERS for the pods: spec.serving.workers, or for `auto` the CPU request rounded
    down (at least 1); None when auto and no CPU request (the pod then goes by its CPU limit)."""
    if policy.serving.workers is not None:
        return policy.serving.workers
    request = (policy.serving.resources.get("requests") or {}).get("cpu")
    if request is None:
        return None
    return max(1, int(quantity.parse(request)))


def _container_resources(serving: spec.ServingSpec) -> dict[str, Any]:
    """spec.serving.resources (canonical already) plus the GPUs of spec.serving.gpu."""
    result = {section: dict(values) for section, values in serving.resources.items()}
    if serving.gpu is not None:
        result.setdefault("limits", {})[serving.gpu.resource_name] = quantity.canonical(serving.gpu.count)
    return result


def _tolerations(serving: spec.ServingSpec) -> list[dict[str, Any]]:
    """spec.serving.tolerations, then the GPU's: its own and the taint GPU node pools carry."""
    result = [dict(toleration) for toleration in serving.tolerations]
    if serving.gpu is not None:
        usual = {"key": serving.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
        for toleration in (*serving.gpu.tolerations, usual):
            if dict(toleration) not in result:
                result.append(dict(toleration))
    return result


def deployment_name(policy_name: str, variant: spec.Variant | None = None) -> str:
    """The policy's Deployment, or during an experiment one variant's (`<policy>-<variant>`)."""
    return policy_name if variant is None else f"{policy_name}-{variant.name}"


def variant_of(obj: Mapping[str, Any]) -> str | None:
    """The experiment variant a pod or Deployment belongs to (its label), if any."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(VARIANT_LABEL)
    return value if isinstance(value, str) and value else None


def build_deployment(
    policy: spec.PolicySpec,
    *,
    image: str,
    token_digest: str,
    replicas: int,
    image_pull_secrets: Sequence[str] = (),
    variant: spec.Variant | None = None,
) -> dict[str, Any]:
    """The serving pods. `image` is spec.serving.image or the operator's default (its GPU image
    for a policy with spec.serving.gpu). With `variant`, one experiment variant's pods: its own
    name and selector, the label `carpool.dev/variant`, CARPOOL_VARIANT, and the variant's batching
    config as environment variables (they win over the ConfigMap's, which holds the policy's)."""
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
        runtimes = ",".join(f"{m.name}={m.runtime}" for m in policy.models if m.runtime != "auto")
        if runtimes:
            env.append({"name": "CARPOOL_MODEL_RUNTIMES", "value": runtimes})
    worker_count = workers(policy)
    if worker_count is not None:
        env.append({"name": "CARPOOL_WORKERS", "value": str(worker_count)})
    if serving.gpu is not None:
        env.append({"name": "CARPOOL_DEVICE", "value": "cuda"})
    if variant is not None:
        env.append({"name": "CARPOOL_VARIANT", "value": variant.name})
        env.extend({"name": key, "value": value} for key, value in variant.batching.to_env().items())
    env.extend(dict(item) for item in serving.env)
    sources = model_volumes(policy)

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "ports": [{"name": PORT_NAME, "containerPort": serving.port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": config_map_name(policy.name)}}],
        "env": env,
        "resources": _container_resources(serving),
        # Liveness asks only whether the pod's processes answer (/livez): a pod whose model failed to
        # load stays up and says why on /health and /models/status, instead of restarting for ever.
        # Readiness (/health) waits for every model to be loaded and warm, which may take minutes.
        "startupProbe": _probe("/livez", period_s=2, timeout_s=3, failures=60),
        "readinessProbe": _probe("/health", period_s=5, timeout_s=3, failures=3),
        "livenessProbe": _probe("/livez", period_s=10, timeout_s=5, failures=6),
        # On delete or rollout: a pause first, so Services stop routing new connections here before
        # the pod's listener closes; then SIGTERM, on which the pod sends every held batch at once,
        # answers all it accepted and exits. The grace period covers the pause and the whole drain.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(serving_settings.PRESTOP_PAUSE_S)]}}},
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if serving.image_pull_policy:
        container["imagePullPolicy"] = serving.image_pull_policy
    mounts = [*sources.mounts, *(dict(mount) for mount in serving.volume_mounts)]
    if mounts:
        container["volumeMounts"] = mounts

    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": serving_settings.termination_grace_s(),
    }
    if sources.init_containers:
        pod_spec["initContainers"] = list(sources.init_containers)
    volumes = [*sources.volumes, *(dict(volume) for volume in serving.volumes)]
    if volumes:
        pod_spec["volumes"] = volumes
    node_selector = {**serving.node_selector, **(serving.gpu.node_selector if serving.gpu else {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(serving)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in image_pull_secrets]

    extra = {} if variant is None else {VARIANT_LABEL: variant.name}
    metadata = _metadata(policy, deployment_name(policy.name, variant))
    metadata["labels"].update(extra)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": {**selector_labels(policy), **extra}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**_labels(policy), **extra},
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


def pod_ip(pod: Mapping[str, Any]) -> str | None:
    """The pod's IP, ready or not (a pod whose model failed answers /models/status unready)."""
    ip = (pod.get("status") or {}).get("podIP")
    return ip if isinstance(ip, str) and ip else None


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

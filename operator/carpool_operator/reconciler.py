"""One reconcile pass of a BatchingPolicy: children, live config push, status.

Every pass does the whole job, whoever calls it (the create/update/resume handlers or the
periodic timer), so the result never depends on which events were seen:

1. parse the spec (an invalid one stops here, with Ready=False/InvalidSpec);
2. Secret, ConfigMap, Deployment, Service, Ingress: created when missing, patched back when a
   field the operator sets has drifted (a deleted or hand-edited child is restored); during an
   experiment (spec.experiment) one Deployment per variant instead of the policy's one, handed
   over both ways only once the new side's pods are ready (`_hand_over`);
3. the policy's ready pods (label `carpool.dev/policy`, filtered here as well) are brought to the
   batching config, each tuned model (spec.models[].batching) to its own (`configpush.converge`),
   and every pod with an IP, ready or not, is asked for its models (`configpush.read_models`):
   which failed to load and why, and on which device;
4. the status (with each pod's device) and the conditions that say what happened (Ready,
   ConfigApplied, ModelsReady), and Events for each change, push and failure (a failure repeated
   unchanged on the next pass is not posted again).

Passes of one policy never overlap: they take the lock of the policy's `PolicyState`, which the
handlers keep in Kopf's per-object memo.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from typing import Any

import kopf

from carpool_operator import conditions, configpush, experiment, kube, resources, settings, spec
from serving import settings as serving_settings

__all__ = [
    "Outcome",
    "PolicyState",
    "reconcile",
    "remove_children",
]


@dataclasses.dataclass
class PolicyState:
    """What the operator remembers about one policy between passes (in memory only)."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    reported: dict[str, str] = dataclasses.field(default_factory=dict)
    """The last failure posted as an Event, per subject (a pod, the spec), to post changes only."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What a pass found: status fields to merge, conditions to set, whether to retry soon."""

    status: dict[str, Any]
    conditions: tuple[conditions.Condition, ...]
    pods_behind: int = 0
    invalid: str | None = None


def _report_once(state: PolicyState, body: kopf.Body, subject: str, reason: str, message: str) -> None:
    if state.reported.get(subject) != message:
        state.reported[subject] = message
        kube.post_event(body, reason=reason, message=message, warning=True)


def _note_event(body: kopf.Body, kind: str, name: str, change: kube.Change) -> None:
    if change in (kube.Change.CREATED, kube.Change.UPDATED, kube.Change.DELETED):
        kube.post_event(body, reason=f"{kind}{change}", message=f"{kind} {name} {change.lower()}")


async def _ensure_token(api: kube.Api, policy: spec.PolicySpec, body: kopf.Body) -> str:
    live = await kube.read(api, kube.SECRETS, policy.namespace, resources.secret_name(policy.name))
    token = resources.token_from_secret(live) if live is not None else None
    desired = resources.build_secret(policy, token or secrets.token_urlsafe(32))
    kopf.adopt(desired, owner=body)
    change, stored = await kube.apply_over(api, kube.SECRETS, desired, live)
    _note_event(body, "Secret", desired["metadata"]["name"], change)
    stored_token = resources.token_from_secret(stored)
    if stored_token is None:
        raise kube.ApiError(500, f"Secret {desired['metadata']['name']} holds no {resources.TOKEN_KEY!r}")
    return stored_token


async def _ensure_children(
    api: kube.Api, config: settings.OperatorConfig, policy: spec.PolicySpec, body: kopf.Body, token: str
) -> int:
    """Create or restore every child; return the replicas the Deployments ask for."""
    default_image = config.serving_gpu_image if policy.serving.gpu is not None else config.serving_image
    deployments = []
    if policy.experiment is None:
        deployments.append(
            resources.build_deployment(
                policy,
                image=policy.serving.image or default_image,
                token_digest=resources.token_digest(token),
                replicas=policy.initial_replicas,
                image_pull_secrets=config.image_pull_secrets,
            )
        )
    else:
        shares = experiment.variant_replicas(policy)
        deployments.extend(
            resources.build_deployment(
                policy,
                image=policy.serving.image or default_image,
                token_digest=resources.token_digest(token),
                replicas=shares[variant.name],
                image_pull_secrets=config.image_pull_secrets,
                variant=variant,
            )
            for variant in policy.experiment.variants
        )
    children: list[tuple[kube.Kind, dict[str, Any]]] = [
        (kube.CONFIG_MAPS, resources.build_config_map(policy)),
        *((kube.DEPLOYMENTS, deployment) for deployment in deployments),
        (kube.SERVICES, resources.build_service(policy)),
    ]
    ingress = resources.build_ingress(policy)
    if ingress is not None:
        children.append((kube.INGRESSES, ingress))
    wanted_replicas = 0
    for kind, desired in children:
        kopf.adopt(desired, owner=body)
        # The autoscaler owns the replicas of an autoscaled Deployment once it exists (it holds
        # still during an experiment, whose replicas follow the variants' weights).
        autoscaled = policy.autoscaling.enabled and policy.experiment is None
        create_only = [("spec", "replicas")] if kind is kube.DEPLOYMENTS and autoscaled else []
        change, live = await kube.apply(api, kind, desired, create_only=create_only)
        _note_event(body, kind.kind, desired["metadata"]["name"], change)
        if kind is kube.DEPLOYMENTS:
            wanted_replicas += int((live.get("spec") or {}).get("replicas", desired["spec"]["replicas"]))
    if ingress is None:
        change = await kube.delete_if_exists(api, kube.INGRESSES, policy.namespace, policy.name)
        _note_event(body, "Ingress", policy.name, change)
    return wanted_replicas


async def reconcile(
    api: kube.Api, config: settings.OperatorConfig, body: kopf.Body, state: PolicyState
) -> Outcome:
    """One full pass over a policy. Kubernetes API failures raise kube.ApiError or httpx.HTTPError."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    generation = body["metadata"].get("generation")
    async with state.lock:
        try:
            policy = spec.parse(body.get("spec") or {}, name=name, namespace=namespace)
        except spec.InvalidSpec as exc:
            _report_once(state, body, "spec", conditions.Reason.INVALID_SPEC, str(exc))
            return Outcome(
                status={"observedGeneration": generation},
                conditions=conditions.invalid_spec(str(exc), generation),
                invalid=str(exc),
            )
        state.reported.pop("spec", None)

        token = await _ensure_token(api, policy, body)
        wanted_replicas = await _ensure_children(api, config, policy, body, token)

        selector = f"{resources.POLICY_LABEL}={policy.name}"
        pods = [
            pod
            for pod in await api.list(kube.PODS, namespace, label_selector=selector)
            if resources.is_policy_pod(pod, policy.name)
        ]
        targets = [
            configpush.PodTarget(pod["metadata"]["name"], address, policy.serving.port)
            for pod in pods
            if (address := resources.pod_address(pod)) is not None
        ]
        running = [
            configpush.PodTarget(pod["metadata"]["name"], ip, policy.serving.port)
            for pod in pods
            if (ip := resources.pod_ip(pod)) is not None
        ]
        await _hand_over(api, policy, body, pods)
        groups = _push_groups(policy, pods, targets)
        pushed, reports = await asyncio.gather(
            asyncio.gather(
                *(
                    configpush.converge(
                        group,
                        batching,
                        token,
                        models=policy.model_configs(batching),
                        timeout_s=config.push_timeout_s,
                    )
                    for batching, group in groups
                )
            ),
            configpush.read_models(running, timeout_s=config.push_timeout_s),
        )
        results = [result for group_results in pushed for result in group_results]

    wanted_hash = policy.batching.config_hash()
    model_hashes = {name: own.config_hash() for name, own in policy.model_batching.items()}
    pushed_config = {target.name: batching for batching, group in groups for target in group}
    behind: list[tuple[str, str]] = []
    for result in results:
        where = f"pod {result.pod.name} ({result.pod.ip}:{result.pod.port})"
        if result.ok:
            state.reported.pop(result.pod.name, None)
            if result.pushed:
                batching = pushed_config[result.pod.name]
                kube.post_event(
                    body,
                    reason="ConfigPushed",
                    message=f"{where} now runs config {batching.config_hash()} "
                    f"(strategy {batching.strategy}, max batch {batching.max_batch_size})"
                    + "".join(
                        f"; model {name} config {own.config_hash()}"
                        for name, own in policy.model_configs(batching).items()
                    ),
                )
        else:
            error = result.error or "unknown error"
            behind.append((result.pod.name, error))
            _report_once(state, body, result.pod.name, "ConfigPushFailed", f"{where}: {error}")
    models_condition, pod_status = _models(state, body, reports, generation)
    live_names = {target.name for target in running}
    for subject in [s for s in state.reported if s != "spec" and s.split("/")[0] not in live_names]:
        del state.reported[subject]

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": len(pods),
        "readyReplicas": len(targets),
        "configuredReplicas": len(targets) - len(behind),
        "configHash": wanted_hash,
        "modelConfigs": [{"name": name, "configHash": own} for name, own in model_hashes.items()],
        "pods": pod_status,
    }
    if not behind:
        status["appliedConfigHash"] = wanted_hash
    return Outcome(
        status=status,
        conditions=(
            conditions.ready(wanted=wanted_replicas, ready=len(targets), generation=generation),
            conditions.config_applied(
                config_hash=wanted_hash,
                model_hashes=model_hashes,
                ready=len(targets),
                behind=behind,
                config_map=resources.config_map_name(policy.name),
                generation=generation,
            ),
            models_condition,
        ),
        pods_behind=len(behind),
    )


def _push_groups(
    policy: spec.PolicySpec, pods: list[dict[str, Any]], targets: list[configpush.PodTarget]
) -> list[tuple[serving_settings.BatchingConfig, list[configpush.PodTarget]]]:
    """The ready pods by the config each must run: its variant's during an experiment, the
    policy's otherwise (also for pods of a variant that no longer runs, until they go)."""
    variants = {v.name: v for v in policy.experiment.variants} if policy.experiment else {}
    variant_by_pod = {pod["metadata"]["name"]: resources.variant_of(pod) for pod in pods}
    groups: dict[str, list[configpush.PodTarget]] = {}
    for target in targets:
        name = variant_by_pod.get(target.name)
        groups.setdefault(name if name in variants else "", []).append(target)
    return [(variants[name].batching if name else policy.batching, group) for name, group in groups.items()]


def _ready_by_variant(pods: list[dict[str, Any]]) -> dict[str | None, int]:
    ready: dict[str | None, int] = {}
    for pod in pods:
        if resources.pod_address(pod) is not None:
            variant = resources.variant_of(pod)
            ready[variant] = ready.get(variant, 0) + 1
    return ready


async def _hand_over(
    api: kube.Api, policy: spec.PolicySpec, body: kopf.Body, pods: list[dict[str, Any]]
) -> None:
    """Remove the Deployments the spec no longer wants, once the ones it wants can serve.

    Starting an experiment, the policy's Deployment goes when every variant has its share of
    ready pods; ending one, the variants' Deployments go when the policy's Deployment has all its
    ready pods. Either way the Service never runs out of ready pods for the switch. A Deployment of
    a variant that was renamed or removed while the experiment runs goes at once."""
    ready = _ready_by_variant(pods)
    live = [
        deployment
        for deployment in await api.list(
            kube.DEPLOYMENTS, policy.namespace, label_selector=f"{resources.POLICY_LABEL}={policy.name}"
        )
        if ((deployment.get("metadata") or {}).get("labels") or {}).get(resources.POLICY_LABEL) == policy.name
    ]
    live_variants = {
        variant: deployment["metadata"]["name"]
        for deployment in live
        if (variant := resources.variant_of(deployment)) is not None
    }
    doomed: list[str] = []
    if policy.experiment is not None:
        shares = experiment.variant_replicas(policy)
        doomed.extend(name for variant, name in live_variants.items() if variant not in shares)
        main_live = any(d["metadata"]["name"] == policy.name for d in live)
        if main_live and (
            all(ready.get(v, 0) >= count for v, count in shares.items()) or not ready.get(None)
        ):
            doomed.append(policy.name)
    elif live_variants and (
        ready.get(None, 0) >= policy.initial_replicas or not any(ready.get(v) for v in live_variants)
    ):
        doomed.extend(live_variants.values())
    for name in doomed:
        change = await kube.delete_if_exists(api, kube.DEPLOYMENTS, policy.namespace, name)
        _note_event(body, "Deployment", name, change)


MAX_PODS_IN_STATUS = 50


def _models(
    state: PolicyState, body: kopf.Body, reports: list[configpush.PodModels], generation: int | None
) -> tuple[conditions.Condition, list[dict[str, Any]]]:
    """ModelsReady, a Warning Event per pod whose model failed (once per error), and status.pods."""
    failed: list[tuple[str, str, str]] = []
    loading: list[tuple[str, str]] = []
    devices: list[str] = []
    loaded = 0
    pod_status: list[dict[str, Any]] = []
    for report in sorted(reports, key=lambda r: r.pod.name):
        entry: dict[str, Any] = {"name": report.pod.name}
        if report.error is not None:
            entry["error"] = report.error[:300]
        else:
            pod_devices = sorted({model.device for model in report.models if model.device})
            devices.extend(pod_devices)
            if pod_devices:
                entry["device"] = ",".join(pod_devices)
            entry["models"] = len(report.models)
            entry["modelsLoaded"] = sum(model.state in ("ready", "draining") for model in report.models)
            loaded += entry["modelsLoaded"]
            pod_failures = [
                (report.pod.name, model.name, model.error or f"state {model.state}")
                for model in report.models
                if model.state == "failed" or (model.error and model.state != "ready")
            ]
            failed.extend(pod_failures)
            loading.extend(
                (report.pod.name, model.name) for model in report.models if model.state in ("new", "loading")
            )
            subject = f"{report.pod.name}/models"
            if pod_failures:
                message = "; ".join(f"model {m} failed to load: {e}" for _, m, e in pod_failures)
                _report_once(state, body, subject, "ModelLoadFailed", f"pod {report.pod.name}: {message}")
            else:
                state.reported.pop(subject, None)
        pod_status.append(entry)
    condition = conditions.models_ready(
        pods=len(reports),
        answered=sum(report.error is None for report in reports),
        failed=failed,
        loading=loading,
        models=loaded,
        devices=devices,
        generation=generation,
    )
    return condition, pod_status[:MAX_PODS_IN_STATUS]


async def remove_children(api: kube.Api, body: kopf.Body) -> list[str]:
    """Delete every child a policy may have (the API server's garbage collector would too,
    through the owner references); return what was deleted."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    names = [
        (kube.INGRESSES, name),
        (kube.SERVICES, name),
        (kube.DEPLOYMENTS, name),
        (kube.CONFIG_MAPS, resources.config_map_name(name)),
        (kube.SECRETS, resources.secret_name(name)),
    ]
    for deployment in await api.list(
        kube.DEPLOYMENTS, namespace, label_selector=f"{resources.POLICY_LABEL}={name}"
    ):
        metadata = deployment.get("metadata") or {}
        if (metadata.get("labels") or {}).get(resources.POLICY_LABEL) == name and resources.variant_of(
            deployment
        ):
            names.append((kube.DEPLOYMENTS, metadata["name"]))
    deleted = []
    for kind, child in names:
        if await kube.delete_if_exists(api, kind, namespace, child) is kube.Change.DELETED:
            deleted.append(f"{kind.kind} {child}")
    return deleted

"""The BatchingPolicy custom resource, parsed: the only module that knows the CR's field names.

`parse()` turns `spec` (a plain mapping, as Kopf hands it over) into frozen dataclasses, applying
the same defaults as the CRD (pinned against crds/ by a test), and raises `InvalidSpec` naming
the offending field path for anything that cannot work. The API server's schema refuses most of
that already; the checks here cover what a schema cannot see (names the pods' environment
reserves, child names that would exceed Kubernetes' limits) and clusters where the CRD's
validation was bypassed.

The pods' batching knobs are not redefined here: `spec.strategy`, `spec.batching` and
`spec.adaptive` become a `serving.settings.BatchingConfig`, the one definition the pod, its
`POST /batching/configure` and this operator share; each of its fields names its path in the CR.
A model's `spec.models[].batching` takes the knobs of `spec.batching` (those whose path lies
there), each overriding the policy's for that model: `PolicySpec.model_batching`.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from carpool_operator import quantity
from serving import settings as serving_settings
from serving import validation

__all__ = [
    "AUTOSCALING_SWITCH",
    "DEFAULT_GPU_RESOURCE",
    "EMBEDDED_PREFIX",
    "GROUP",
    "KIND",
    "MAX_NAME_LENGTH",
    "MODELS_ROOT",
    "MODEL_BATCHING_KEYS",
    "PLURAL",
    "RESERVED_ENV",
    "RESOURCE",
    "RUNTIMES",
    "VERSION",
    "AutoscalingSpec",
    "ExperimentSpec",
    "GpuSpec",
    "ImageSource",
    "IngressSpec",
    "InvalidSpec",
    "ModelRef",
    "PolicySpec",
    "PromoteRule",
    "PvcSource",
    "ServingSpec",
    "Variant",
    "autoscaling_enabled",
    "parse",
]

GROUP = "carpool.dev"
VERSION = "v1alpha1"
PLURAL = "batchingpolicies"
KIND = "BatchingPolicy"
RESOURCE = (GROUP, VERSION, PLURAL)
"""The resource as Kopf's handler decorators name it."""

MAX_NAME_LENGTH = 56
"""A policy's children are named `<name>`, `<name>-config`, `<name>-admin`; Services need <= 63."""

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

BATCHING_FIELD_PATHS: dict[str, str] = {
    field: f"spec.{path}" for field, path in serving_settings.PATH_BY_FIELD.items()
}
"""Where each BatchingConfig field lives in the custom resource (declared on BatchingConfig)."""

MODEL_BATCHING_KEYS: dict[str, str] = {
    field: path.removeprefix("batching.")
    for field, path in serving_settings.PATH_BY_FIELD.items()
    if path.startswith("batching.")
}
"""The BatchingConfig fields a model may override in spec.models[].batching, and their keys there."""

RESERVED_ENV = frozenset(
    {
        "CARPOOL_ADMIN_TOKEN",
        "CARPOOL_MODELS",
        "CARPOOL_MODEL_RUNTIMES",
        "CARPOOL_MODEL_BATCHING",
        "CARPOOL_WORKERS",
        "CARPOOL_HOST",
        "CARPOOL_PORT",
        "CARPOOL_VARIANT",
    }
    | set(serving_settings.ENV_BY_FIELD.values())
)
"""Variables the operator sets on the pods; spec.serving.env may not override them (nor
CARPOOL_DEVICE when spec.serving.gpu is set: a GPU pod always runs with CARPOOL_DEVICE=cuda)."""

MODELS_ROOT = "/models"
"""Where a model with a source is mounted in the serving container: /models/<name>."""

EMBEDDED_PREFIX = "embedded:"
"""A model path the serving image provides itself (`embedded:minilm`), needing no volume."""

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
"""spec.models[].runtime; `auto` lets the pod choose (CARPOOL_MODEL_RUNTIMES omits it)."""

IMAGE_METHODS = ("initContainer", "imageVolume")
"""How a model image reaches the pod: copied by an init container, or mounted as an image volume."""

DEFAULT_IMAGE_PATH = "/model"
"""Where a model image holds the model files unless spec.models[].source.image.path says."""

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
GPU_RESOURCES = frozenset({"nvidia.com/gpu", "amd.com/gpu"})
"""Extended resources that mean a GPU: asked for in spec.serving.resources they would give the
pod a GPU without CUDA in its image or CARPOOL_DEVICE=cuda, so spec.serving.gpu must say so."""

_MAX_WORKERS = 256


class InvalidSpec(ValueError):
    """A spec that cannot work; the message names the field and the bad value."""


@dataclasses.dataclass(frozen=True, slots=True)
class PvcSource:
    """spec.models[].source.pvc: a PersistentVolumeClaim mounted read-only."""

    claim_name: str
    sub_path: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ImageSource:
    """spec.models[].source.image: an OCI image holding the model files under `path`."""

    reference: str
    path: str = DEFAULT_IMAGE_PATH
    pull_policy: str | None = None
    method: str = "initContainer"


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    path: str
    """The model's directory in the serving container (or `embedded:NAME`)."""
    source: PvcSource | ImageSource | None = None
    runtime: str = "auto"
    batching: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """spec.models[].batching as BatchingConfig fields (`max_batch_size`), the ones given only."""

    @property
    def mount_path(self) -> str:
        """Where the model's source is mounted (meaningful when it has one)."""
        return f"{MODELS_ROOT}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class GpuSpec:
    """spec.serving.gpu: GPUs per pod, the extended resource that counts them, where they are."""

    count: int = 1
    resource_name: str = DEFAULT_GPU_RESOURCE
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ServingSpec:
    image: str | None = None
    image_pull_policy: str | None = None
    replicas: int = 1
    port: int = 8000
    resources: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    gpu: GpuSpec | None = None
    workers: int | None = None
    """HTTP worker processes per pod; None means auto (from the CPU request)."""


@dataclasses.dataclass(frozen=True, slots=True)
class IngressSpec:
    enabled: bool = False
    host: str | None = None
    class_name: str | None = None
    path: str = "/"
    tls_secret_name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AutoscalingSpec:
    enabled: bool = False
    min_replicas: int = 1
    max_replicas: int = 8
    target_queue_size: float = 8.0
    prometheus_url: str | None = None
    query: str | None = None
    """PromQL for the policy's total waiting requests; None means prometheus.DEFAULT_QUERY."""
    scale_up_stabilization_s: int = 0
    scale_down_stabilization_s: int = 300


AUTOSCALING_SWITCH = "spec.autoscaling.enabled"
"""The field that turns the autoscaler on and off (Kopf watches it for the switch-off)."""


def autoscaling_enabled(spec: Mapping[str, Any] | None) -> bool:
    """Whether spec.autoscaling.enabled is true, read without parsing the rest of the spec.

    The autoscaler's timer and its status follow this switch alone, on whatever body Kopf holds
    (even the freshest one inside a patch function, or a spec that `parse()` refuses)."""
    autoscaling = (spec or {}).get("autoscaling")
    return isinstance(autoscaling, Mapping) and autoscaling.get("enabled") is True


MAX_VARIANTS = 8
MAX_VARIANT_NAME = 20
PROMOTE_METRICS = ("p99", "throughput", "errors")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """spec.experiment.variants[]: a batching config, and the share of the traffic it serves."""

    name: str
    weight: int
    batching: serving_settings.BatchingConfig


@dataclasses.dataclass(frozen=True, slots=True)
class PromoteRule:
    """spec.experiment.promote: when the experiment may end by making its winner the policy's config."""

    after_s: int
    metric: str = "p99"
    min_samples: int = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """spec.experiment: a live A/B test; the first variant is the control."""

    variants: tuple[Variant, ...]
    prometheus_url: str | None = None
    significance: float = 0.05
    promote: PromoteRule | None = None

    @property
    def control(self) -> Variant:
        return self.variants[0]


@dataclasses.dataclass(frozen=True, slots=True)
class PolicySpec:
    """One BatchingPolicy, parsed and checked."""

    name: str
    namespace: str
    batching: serving_settings.BatchingConfig
    models: tuple[ModelRef, ...] = ()
    serving: ServingSpec = dataclasses.field(default_factory=ServingSpec)
    ingress: IngressSpec = dataclasses.field(default_factory=IngressSpec)
    autoscaling: AutoscalingSpec = dataclasses.field(default_factory=AutoscalingSpec)
    model_batching: Mapping[str, serving_settings.BatchingConfig] = dataclasses.field(default_factory=dict)
    """Each model with spec.models[].batching: its own config (the policy's with the overrides)."""
    experiment: ExperimentSpec | None = None

    @property
    def model_overrides(self) -> dict[str, dict[str, Any]]:
        """Each tuned model's own fields, as the pods' CARPOOL_MODEL_BATCHING carries them."""
        return {model.name: dict(model.batching) for model in self.models if model.batching}

    def config_for(self, model: str) -> serving_settings.BatchingConfig:
        """The config `model` should run: its own, or the policy's."""
        return self.model_batching.get(model, self.batching)

    def model_configs(
        self, batching: serving_settings.BatchingConfig
    ) -> dict[str, serving_settings.BatchingConfig]:
        """Each tuned model's config over `batching`: the policy's, or during an experiment a
        variant's (its pods apply CARPOOL_MODEL_BATCHING over the variant's variables, as here;
        `parse` has checked every such pair)."""
        if batching == self.batching:
            return dict(self.model_batching)
        return {name: batching.updated(fields) for name, fields in self.model_overrides.items()}

    @property
    def initial_replicas(self) -> int:
        """Replicas a new Deployment starts with: spec.serving.replicas, within the autoscaling bounds."""
        if not self.autoscaling.enabled:
            return self.serving.replicas
        return max(self.autoscaling.min_replicas, min(self.serving.replicas, self.autoscaling.max_replicas))


def parse(spec: Mapping[str, Any], *, name: str, namespace: str) -> PolicySpec:
    """Parse a BatchingPolicy's spec; raise InvalidSpec naming the first field that cannot work."""
    if len(name) > MAX_NAME_LENGTH or not _DNS_LABEL.match(name):
        raise InvalidSpec(
            f"metadata.name must be a DNS label of at most {MAX_NAME_LENGTH} characters "
            f"(it names the policy's Service), got {name!r}"
        )
    _mapping(spec, "spec")
    serving = _serving(_mapping(spec.get("serving"), "spec.serving"))
    models = _models(spec.get("models"), "spec.models")
    _check_model_paths(models, serving)
    batching = _batching(spec)
    autoscaling = _autoscaling(_mapping(spec.get("autoscaling"), "spec.autoscaling"))
    experiment = None
    if spec.get("experiment") is not None:
        experiment = _experiment(
            _mapping(spec.get("experiment"), "spec.experiment"), batching, autoscaling, serving
        )
        _check_variants_with_models(experiment, models)
    return PolicySpec(
        name=name,
        namespace=namespace,
        batching=batching,
        model_batching=_model_batching(models, batching),
        models=models,
        serving=serving,
        ingress=_ingress(_mapping(spec.get("ingress"), "spec.ingress")),
        autoscaling=autoscaling,
        experiment=experiment,
    )


def _batching(
    spec: Mapping[str, Any],
    where: str = "spec",
    base: serving_settings.BatchingConfig | None = None,
) -> serving_settings.BatchingConfig:
    """The knobs at their paths under `where` (the spec, or a variant), over `base`'s values."""
    given = {field: _at(spec, path, where) for field, path in serving_settings.PATH_BY_FIELD.items()}

    def field_path(field: str) -> str:
        return f"{where}.{serving_settings.PATH_BY_FIELD[field]}"

    for field, value in given.items():
        if isinstance(value, str) and field != "strategy":
            raise InvalidSpec(f"{field_path(field)} must be a number or boolean, got {value!r}")
    values = base.model_dump() if base is not None else {}
    values.update({field: value for field, value in given.items() if value is not None})
    try:
        return serving_settings.BatchingConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[:1]  # like every check here, name the first field that cannot work
        raise InvalidSpec(validation.message(first, field_path)) from None


def _model_overrides(raw: Any, where: str) -> dict[str, Any]:
    """spec.models[i].batching as BatchingConfig fields; its types checked (ranges: `_model_batching`)."""
    given = _mapping(raw, where)
    keys = {key: field for field, key in MODEL_BATCHING_KEYS.items()}
    fields: dict[str, Any] = {}
    for key, value in given.items():
        if key not in keys:
            raise InvalidSpec(f"{where} has no field {key!r}; it takes {', '.join(keys)}")
        if value is None:
            continue
        if isinstance(value, str):
            raise InvalidSpec(f"{where}.{key} must be a number or boolean, got {value!r}")
        fields[keys[key]] = value
    return fields


def _model_batching(
    models: Sequence[ModelRef], batching: serving_settings.BatchingConfig
) -> dict[str, serving_settings.BatchingConfig]:
    """Each tuned model's config: the policy's with its overrides, checked like the policy's (a
    rule over both names each field where it was set: `spec.models[0].batching.minBatchSize (64)
    must be <= spec.batching.maxBatchSize (32)`)."""
    configs = {}
    for index, model in enumerate(models):
        if not model.batching:
            continue
        where = f"spec.models[{index}].batching"

        def path(field: str, own: Mapping[str, Any] = model.batching, where: str = where) -> str:
            if field in own:
                return f"{where}.{MODEL_BATCHING_KEYS[field]}"
            return BATCHING_FIELD_PATHS.get(field, field)

        try:
            configs[model.name] = batching.updated(model.batching)
        except ValidationError as exc:
            raise InvalidSpec(validation.message(exc.errors()[:1], path)) from None
    return configs


def _check_variants_with_models(experiment: ExperimentSpec, models: Sequence[ModelRef]) -> None:
    """A tuned model runs its overrides over each variant's config too: every pair must hold."""
    for v_index, variant in enumerate(experiment.variants):
        for m_index, model in enumerate(models):
            if not model.batching:
                continue
            try:
                variant.batching.updated(model.batching)
            except ValidationError as exc:
                problem = validation.message(exc.errors()[:1], str)
                raise InvalidSpec(
                    f"spec.models[{m_index}].batching over spec.experiment.variants[{v_index}] "
                    f"({variant.name}): {problem}"
                ) from None


def _at(spec: Mapping[str, Any], path: str, where: str = "spec") -> Any:
    """The value at `path` (`batching.maxBatchSize`) under spec; every object on the way checked."""
    *objects, key = path.split(".")
    node = spec
    for depth, name in enumerate(objects, start=1):
        node = _mapping(node.get(name), ".".join((where, *objects[:depth])))
    return node.get(key)


def parse_duration(raw: Any, path: str) -> int:
    """`90s`, `30m`, `1h30m` (or a number of seconds) as whole seconds."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    match = _DURATION.match(raw) if isinstance(raw, str) and raw else None
    if match is None or not any(match.groups()):
        raise InvalidSpec(f"{path} must be a duration such as 90s, 30m or 1h30m, got {raw!r}")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _experiment(
    raw: Mapping[str, Any],
    base: serving_settings.BatchingConfig,
    autoscaling: AutoscalingSpec,
    serving: ServingSpec,
) -> ExperimentSpec:
    items = _list(raw.get("variants"), "spec.experiment.variants")
    if not 2 <= len(items) <= MAX_VARIANTS:
        raise InvalidSpec(
            f"spec.experiment.variants must name 2 to {MAX_VARIANTS} variants, got {len(items)}"
        )
    variants: list[Variant] = []
    for index, item in enumerate(items):
        where = f"spec.experiment.variants[{index}]"
        item = _mapping(item, where)
        variant_name = _str(item.get("name"), f"{where}.name", required=True)
        assert variant_name is not None
        if len(variant_name) > MAX_VARIANT_NAME or not _DNS_LABEL.match(variant_name):
            raise InvalidSpec(
                f"{where}.name must be a DNS label of at most {MAX_VARIANT_NAME} characters "
                f"(it names the variant's Deployment), got {variant_name!r}"
            )
        if any(variant.name == variant_name for variant in variants):
            raise InvalidSpec(f"{where}.name repeats the variant name {variant_name!r}")
        weight = _int(item.get("weight"), f"{where}.weight", 1, 1, 1000)
        variants.append(Variant(variant_name, weight, _batching(item, where, base)))
    if serving.replicas < len(variants):
        raise InvalidSpec(
            f"spec.serving.replicas ({serving.replicas}) must be at least the number of "
            f"spec.experiment.variants ({len(variants)}): each variant runs at least one pod"
        )
    url = _str(raw.get("prometheusUrl"), "spec.experiment.prometheusUrl") or autoscaling.prometheus_url
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise InvalidSpec(f"spec.experiment.prometheusUrl must be an http(s) URL, got {url!r}")
    significance = _number(raw.get("significance"), "spec.experiment.significance", 0.05)
    if not 0 < significance < 0.5:
        raise InvalidSpec(f"spec.experiment.significance must be between 0 and 0.5, got {significance!r}")
    promote = None
    if raw.get("promote") is not None:
        rule = _mapping(raw.get("promote"), "spec.experiment.promote")
        metric = _str(rule.get("metric"), "spec.experiment.promote.metric") or "p99"
        if metric not in PROMOTE_METRICS:
            raise InvalidSpec(
                f"spec.experiment.promote.metric must be one of {', '.join(PROMOTE_METRICS)}, got {metric!r}"
            )
        if url is None:
            raise InvalidSpec(
                "spec.experiment.promote needs Prometheus: set spec.experiment.prometheusUrl "
                "(or spec.autoscaling.prometheusUrl)"
            )
        promote = PromoteRule(
            after_s=parse_duration(rule.get("after", "1h"), "spec.experiment.promote.after"),
            metric=metric,
            min_samples=_int(rule.get("minSamples"), "spec.experiment.promote.minSamples", 1000, 1, 10**9),
        )
    return ExperimentSpec(tuple(variants), url, significance, promote)


def _models(raw: Any, path: str) -> tuple[ModelRef, ...]:
    models: list[ModelRef] = []
    for index, item in enumerate(_list(raw, path)):
        where = f"{path}[{index}]"
        item = _mapping(item, where)
        model_name = _str(item.get("name"), f"{where}.name", required=True)
        assert model_name is not None
        if not _MODEL_NAME.match(model_name) or len(model_name) > 63:
            raise InvalidSpec(f"{where}.name must match {_MODEL_NAME.pattern}, got {model_name!r}")
        if any(model.name == model_name for model in models):
            raise InvalidSpec(f"{where}.name repeats the model name {model_name!r}")
        source = _source(_mapping(item.get("source"), f"{where}.source"), f"{where}.source")
        mount = f"{MODELS_ROOT}/{model_name}"
        model_path = _str(item.get("path"), f"{where}.path", required=source is None) or mount
        if "," in model_path or "=" in model_path:
            raise InvalidSpec(f"{where}.path may not contain ',' or '=', got {model_path!r}")
        if not model_path.startswith(EMBEDDED_PREFIX):
            if not model_path.startswith("/"):
                raise InvalidSpec(f"{where}.path must be an absolute path in the pod, got {model_path!r}")
            model_path = posixpath.normpath(model_path)
        if source is not None and not _under(model_path, mount):
            raise InvalidSpec(
                f"{where}.path {model_path!r} of model {model_name!r} must lie under {mount}, "
                "where its source is mounted (or be left out)"
            )
        runtime = _str(item.get("runtime"), f"{where}.runtime") or "auto"
        if runtime not in RUNTIMES:
            raise InvalidSpec(f"{where}.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        batching = _model_overrides(item.get("batching"), f"{where}.batching")
        models.append(ModelRef(model_name, model_path, source, runtime, batching))
    return tuple(models)


def _source(raw: Mapping[str, Any], path: str) -> PvcSource | ImageSource | None:
    kinds = [key for key in ("pvc", "image") if raw.get(key) is not None]
    if len(kinds) > 1:
        raise InvalidSpec(f"{path} must give one of pvc or image, got both")
    if not kinds:
        return None
    if kinds == ["pvc"]:
        pvc = _mapping(raw["pvc"], f"{path}.pvc")
        claim = _str(pvc.get("claimName"), f"{path}.pvc.claimName", required=True)
        assert claim is not None
        sub_path = _str(pvc.get("subPath"), f"{path}.pvc.subPath")
        if sub_path is not None and (sub_path.startswith("/") or ".." in sub_path.split("/")):
            raise InvalidSpec(f"{path}.pvc.subPath must be a relative path without '..', got {sub_path!r}")
        return PvcSource(claim, sub_path)
    image = _mapping(raw["image"], f"{path}.image")
    reference = _str(image.get("reference"), f"{path}.image.reference", required=True)
    assert reference is not None
    inside = _str(image.get("path"), f"{path}.image.path") or DEFAULT_IMAGE_PATH
    if not inside.startswith("/") or ".." in inside.split("/"):
        raise InvalidSpec(f"{path}.image.path must be an absolute path without '..', got {inside!r}")
    method = _str(image.get("method"), f"{path}.image.method") or IMAGE_METHODS[0]
    if method not in IMAGE_METHODS:
        raise InvalidSpec(f"{path}.image.method must be one of {', '.join(IMAGE_METHODS)}, got {method!r}")
    pull_policy = _str(image.get("pullPolicy"), f"{path}.image.pullPolicy")
    if pull_policy is not None and pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise InvalidSpec(
            f"{path}.image.pullPolicy must be Always, IfNotPresent or Never, got {pull_policy!r}"
        )
    return ImageSource(reference, posixpath.normpath(inside), pull_policy, method)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_model_paths(models: Sequence[ModelRef], serving: ServingSpec) -> None:
    """Every model's path must come from somewhere: its source, a mounted volume, the embedded
    model, or a serving image of the user's own (spec.serving.image)."""
    volumes = {volume.get("name") for volume in serving.volumes}
    mounts = [
        posixpath.normpath(str(mount.get("mountPath")))
        for mount in serving.volume_mounts
        if mount.get("name") in volumes and isinstance(mount.get("mountPath"), str)
    ]
    for index, model in enumerate(models):
        where = f"spec.models[{index}]"
        if model.source is not None:
            for mount in mounts:
                if _under(mount, model.mount_path):
                    raise InvalidSpec(
                        f"spec.serving.volumeMounts mounts {mount}, where model {model.name!r} "
                        f"({where}.source) is mounted at {model.mount_path}"
                    )
            continue
        if model.path.startswith(EMBEDDED_PREFIX) or any(_under(model.path, mount) for mount in mounts):
            continue
        if serving.image is not None:
            continue  # a serving image of the user's own may hold the model; nothing to check it by
        raise InvalidSpec(
            f"{where}.path {model.path} of model {model.name!r} is provided by no source or volume: "
            f"give {where}.source (pvc or image), or mount a volume of spec.serving.volumes there "
            "with spec.serving.volumeMounts"
        )


def _serving(raw: Mapping[str, Any]) -> ServingSpec:
    defaults = ServingSpec()
    env = _mappings(raw.get("env"), "spec.serving.env")
    for index, item in enumerate(env):
        env_name = item.get("name")
        if env_name in RESERVED_ENV:
            raise InvalidSpec(
                f"spec.serving.env[{index}] sets {env_name}, which the operator manages "
                "(use spec.strategy, spec.batching, spec.adaptive or spec.models instead)"
            )
    node_selector = _mapping(raw.get("nodeSelector"), "spec.serving.nodeSelector")
    resources = _resources(_mapping(raw.get("resources"), "spec.serving.resources"))
    gpu = None if raw.get("gpu") is None else _gpu(_mapping(raw.get("gpu"), "spec.serving.gpu"))
    for section in ("limits", "requests"):
        for resource in resources.get(section, {}):
            named = resource in GPU_RESOURCES or (gpu is not None and resource == gpu.resource_name)
            if named:
                raise InvalidSpec(
                    f"spec.serving.resources.{section} asks for {resource}: ask for GPUs with "
                    "spec.serving.gpu, which also gives the pods the GPU image and CARPOOL_DEVICE=cuda"
                )
    if gpu is not None:
        for index, item in enumerate(env):
            if item.get("name") == "CARPOOL_DEVICE":
                raise InvalidSpec(
                    f"spec.serving.env[{index}] sets CARPOOL_DEVICE, which spec.serving.gpu sets to cuda"
                )
    return ServingSpec(
        image=_str(raw.get("image"), "spec.serving.image") or None,
        image_pull_policy=_str(raw.get("imagePullPolicy"), "spec.serving.imagePullPolicy") or None,
        replicas=_int(raw.get("replicas"), "spec.serving.replicas", defaults.replicas, 0, 1000),
        port=_int(raw.get("port"), "spec.serving.port", defaults.port, 1, 65535),
        resources=resources,
        env=env,
        node_selector={str(key): str(value) for key, value in node_selector.items()},
        tolerations=_mappings(raw.get("tolerations"), "spec.serving.tolerations"),
        volumes=_mappings(raw.get("volumes"), "spec.serving.volumes"),
        volume_mounts=_mappings(raw.get("volumeMounts"), "spec.serving.volumeMounts"),
        gpu=gpu,
        workers=_workers(raw.get("workers")),
    )


def _resources(raw: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """spec.serving.resources with every quantity in canonical form (as the API server stores it)."""
    result: dict[str, dict[str, str]] = {}
    for section in ("limits", "requests"):
        values = _mapping(raw.get(section), f"spec.serving.resources.{section}")
        canonical = {}
        for resource, value in values.items():
            try:
                canonical[str(resource)] = quantity.canonical(value)
            except quantity.InvalidQuantity as exc:
                raise InvalidSpec(f"spec.serving.resources.{section}.{resource}: {exc}") from None
        if canonical:
            result[section] = canonical
    return result


def _gpu(raw: Mapping[str, Any]) -> GpuSpec:
    count = _int(raw.get("count"), "spec.serving.gpu.count", 1, 1, 64)
    resource_name = _str(raw.get("resourceName"), "spec.serving.gpu.resourceName") or DEFAULT_GPU_RESOURCE
    if not re.match(
        r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", resource_name
    ):
        raise InvalidSpec(
            f"spec.serving.gpu.resourceName must be an extended resource such as nvidia.com/gpu, "
            f"got {resource_name!r}"
        )
    node_selector = _mapping(raw.get("nodeSelector"), "spec.serving.gpu.nodeSelector")
    return GpuSpec(
        count=count,
        resource_name=resource_name,
        node_selector={str(key): str(value) for key, value in node_selector.items()},
        tolerations=_mappings(raw.get("tolerations"), "spec.serving.gpu.tolerations"),
    )


def _workers(raw: Any) -> int | None:
    if raw is None or raw == "auto":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= _MAX_WORKERS:
        raise InvalidSpec(
            f'spec.serving.workers must be an integer from 1 to {_MAX_WORKERS} or "auto", got {raw!r}'
        )
    return raw


def _ingress(raw: Mapping[str, Any]) -> IngressSpec:
    path = _str(raw.get("path"), "spec.ingress.path") or "/"
    if not path.startswith("/"):
        raise InvalidSpec(f"spec.ingress.path must start with '/', got {path!r}")
    tls = _mapping(raw.get("tls"), "spec.ingress.tls")
    return IngressSpec(
        enabled=_bool(raw.get("enabled"), "spec.ingress.enabled", False),
        host=_str(raw.get("host"), "spec.ingress.host") or None,
        class_name=_str(raw.get("className"), "spec.ingress.className") or None,
        path=path,
        tls_secret_name=_str(tls.get("secretName"), "spec.ingress.tls.secretName") or None,
    )


def _autoscaling(raw: Mapping[str, Any]) -> AutoscalingSpec:
    defaults = AutoscalingSpec()
    low = _int(raw.get("minReplicas"), "spec.autoscaling.minReplicas", defaults.min_replicas, 1, 1000)
    high = _int(raw.get("maxReplicas"), "spec.autoscaling.maxReplicas", defaults.max_replicas, 1, 1000)
    if low > high:
        raise InvalidSpec(
            f"spec.autoscaling.minReplicas ({low}) must be <= spec.autoscaling.maxReplicas ({high})"
        )
    enabled = _bool(raw.get("enabled"), "spec.autoscaling.enabled", defaults.enabled)
    url = _str(raw.get("prometheusUrl"), "spec.autoscaling.prometheusUrl") or None
    if enabled and url is None:
        raise InvalidSpec("spec.autoscaling.prometheusUrl is required when autoscaling is enabled")
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise InvalidSpec(f"spec.autoscaling.prometheusUrl must be an http(s) URL, got {url!r}")
    target = _number(
        raw.get("targetQueueSize"), "spec.autoscaling.targetQueueSize", defaults.target_queue_size
    )
    if not target > 0:
        raise InvalidSpec(f"spec.autoscaling.targetQueueSize must be > 0, got {target!r}")
    return AutoscalingSpec(
        enabled=enabled,
        min_replicas=low,
        max_replicas=high,
        target_queue_size=target,
        prometheus_url=url,
        query=_str(raw.get("query"), "spec.autoscaling.query") or None,
        scale_up_stabilization_s=_int(
            raw.get("scaleUpStabilizationSeconds"),
            "spec.autoscaling.scaleUpStabilizationSeconds",
            defaults.scale_up_stabilization_s,
            0,
            3600,
        ),
        scale_down_stabilization_s=_int(
            raw.get("scaleDownStabilizationSeconds"),
            "spec.autoscaling.scaleDownStabilizationSeconds",
            defaults.scale_down_stabilization_s,
            0,
            3600,
        ),
    )


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{path} must be an object, got {raw!r}")
    return raw


def _list(raw: Any, path: str) -> Sequence[Any]:
    if raw is None:
        return ()
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise InvalidSpec(f"{path} must be a list, got {raw!r}")
    return raw


def _mappings(raw: Any, path: str) -> tuple[Mapping[str, Any], ...]:
    return tuple(_mapping(item, f"{path}[{index}]") for index, item in enumerate(_list(raw, path)))


def _str(raw: Any, path: str, *, required: bool = False) -> str | None:
    if raw is None or raw == "":
        if required:
            raise InvalidSpec(f"{path} is required")
        return None
    if not isinstance(raw, str):
        raise InvalidSpec(f"{path} must be a string, got {raw!r}")
    return raw


def _bool(raw: Any, path: str, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise InvalidSpec(f"{path} must be true or false, got {raw!r}")
    return raw


def _int(raw: Any, path: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidSpec(f"{path} must be an integer, got {raw!r}")
    if not low <= raw <= high:
        raise InvalidSpec(f"{path} must be between {low} and {high}, got {raw!r}")
    return raw


def _number(raw: Any, path: str, default: float) -> float:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidSpec(f"{path} must be a number, got {raw!r}")
    return float(raw)

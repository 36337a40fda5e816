"""What a real API server does to the objects it stores, as small pure functions for the emulator.

A real kube-apiserver does not store what it is sent: it writes resource quantities in canonical
form, fills in defaults, and filters lists by label selector. An operator that compares what it
wants with what it reads back, field by field, must survive all of it; kmock does none of it, so
`tests.support.kube.ApiServer` applies these to every write and list.

- `canonical_quantity()`: apimachinery's `Quantity` canonical form (`1` -> `"1"`, `1000m` ->
  `"1"`, `0.5` -> `"500m"`, `1024Mi` -> `"1Gi"`, `1000` -> `"1k"`). Written independently of the
  operator's `carpool_operator.quantity` on purpose: the tests compare the two.
- `normalise()`: the quantities of a pod template (containers, init containers, emptyDir sizes).
- `fill_defaults()`: the defaults the API server's defaulting adds to Deployments, Pods, Services
  and Secrets (a subset: the ones a Deployment or Service of the operator would get).
- `selects()`: equality-based label selectors (`a=b,c!=d,e`), as `kubectl get -l` sends them.
"""

from __future__ import annotations

import base64
import decimal
import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["canonical_quantity", "fill_defaults", "normalise", "selects"]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_BINARY_POWERS = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_DECIMAL_SUFFIXES = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_DECIMAL_EXPONENTS = {suffix: exponent for exponent, suffix in _DECIMAL_SUFFIXES.items()}


def canonical_quantity(value: Any) -> str:
    """The string a real API server stores for a quantity (raises ValueError for a bad one)."""
    text = repr(value) if isinstance(value, float) else str(value)
    match = _QUANTITY.match(text)
    if isinstance(value, bool) or match is None:
        raise ValueError(f"quantities must match the regular expression of Kubernetes, got {value!r}")
    digits, suffix = match.group(1), match.group(2) or ""
    context = decimal.Context(prec=80)
    number = context.create_decimal(digits)
    if suffix in _BINARY_POWERS:
        amount, family = number * 1024 ** _BINARY_POWERS.index(suffix), "binary" if suffix else "decimal"
    elif suffix[:1] in "eE":
        amount, family = number.scaleb(int(suffix[1:]), context), "exponent"
    else:
        amount, family = number.scaleb(_DECIMAL_EXPONENTS[suffix], context), "decimal"
    nanos = (amount * 10**9).to_integral_value(rounding=decimal.ROUND_CEILING)
    if nanos == 0:
        return "0"
    if family == "binary" and (abs(amount) < 1024 or nanos % 10**9 != 0):
        family = "decimal"
    if family == "binary":
        whole = int(nanos) // 10**9
        power = 0
        while power < 6 and whole % 1024 == 0:
            whole //= 1024
            power += 1
        return f"{whole}{_BINARY_POWERS[power]}"
    exponent, mantissa = -9, int(nanos)
    while exponent < 18 and mantissa % 1000 == 0:
        mantissa //= 1000
        exponent += 3
    if family == "exponent":
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIXES[exponent]}"


def _pod_specs(kind: str, obj: Mapping[str, Any]) -> list[MutableMapping[str, Any]]:
    spec = obj.get("spec")
    if not isinstance(spec, MutableMapping):
        return []
    if kind == "Pod":
        return [spec]
    template = spec.get("template")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job") and isinstance(
        template, MutableMapping
    ):
        pod_spec = template.get("spec")
        return [pod_spec] if isinstance(pod_spec, MutableMapping) else []
    return []


def _containers(pod_spec: Mapping[str, Any]) -> list[MutableMapping[str, Any]]:
    found = []
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or ():
            if isinstance(container, MutableMapping):
                found.append(container)
    return found


def normalise(kind: str, obj: MutableMapping[str, Any]) -> None:
    """Write every quantity of a pod template (or a merge patch of one) in canonical form."""
    for pod_spec in _pod_specs(kind, obj):
        for container in _containers(pod_spec):
            resources = container.get("resources")
            for section in ("limits", "requests"):
                values = resources.get(section) if isinstance(resources, Mapping) else None
                if isinstance(values, MutableMapping):
                    for name, value in values.items():
                        if value is not None:
                            values[name] = canonical_quantity(value)
        for volume in pod_spec.get("volumes") or ():
            empty_dir = volume.get("emptyDir") if isinstance(volume, Mapping) else None
            if isinstance(empty_dir, MutableMapping) and empty_dir.get("sizeLimit") is not None:
                empty_dir["sizeLimit"] = canonical_quantity(empty_dir["sizeLimit"])


def _default(target: MutableMapping[str, Any], key: str, value: Any) -> None:
    if key not in target:
        target[key] = value


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, MutableMapping):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1)):
        _default(probe, key, value)
    _default(probe, "failureThreshold", 3)
    if isinstance(probe.get("httpGet"), MutableMapping):
        _default(probe["httpGet"], "scheme", "HTTP")


def _default_container(container: MutableMapping[str, Any]) -> None:
    image = str(container.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    pull = "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"
    if "@" in image:
        pull = "IfNotPresent"
    _default(container, "imagePullPolicy", pull)
    _default(container, "terminationMessagePath", "/dev/termination-log")
    _default(container, "terminationMessagePolicy", "File")
    _default(container, "resources", {})
    for port in container.get("ports") or ():
        if isinstance(port, MutableMapping):
            _default(port, "protocol", "TCP")
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        _default_probe(container.get(name))
    for item in container.get("env") or ():
        field_ref = (item.get("valueFrom") or {}).get("fieldRef") if isinstance(item, Mapping) else None
        if isinstance(field_ref, MutableMapping):
            _default(field_ref, "apiVersion", "v1")


def _default_pod_spec(pod_spec: MutableMapping[str, Any], whole: bool) -> None:
    if whole:
        for key, value in (
            ("restartPolicy", "Always"),
            ("dnsPolicy", "ClusterFirst"),
            ("schedulerName", "default-scheduler"),
            ("securityContext", {}),
            ("terminationGracePeriodSeconds", 30),
        ):
            _default(pod_spec, key, value)
    for container in _containers(pod_spec):
        _default_container(container)
    for volume in pod_spec.get("volumes") or ():
        if not isinstance(volume, Mapping):
            continue
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), MutableMapping):
                _default(volume[source], "defaultMode", 420)


def _default_deployment(obj: MutableMapping[str, Any], whole: bool) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, MutableMapping):
        return
    if whole:
        _default(spec, "replicas", 1)
        _default(spec, "progressDeadlineSeconds", 600)
        _default(spec, "revisionHistoryLimit", 10)
        _default(spec, "strategy", {"type": "RollingUpdate"})
        strategy = spec["strategy"]
        if isinstance(strategy, MutableMapping) and strategy.get("type") == "RollingUpdate":
            _default(strategy, "rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    for pod_spec in _pod_specs("Deployment", obj):
        _default_pod_spec(pod_spec, whole)


def _default_service(obj: MutableMapping[str, Any], whole: bool) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, MutableMapping):
        return
    if whole:
        _default(spec, "type", "ClusterIP")
        _default(spec, "sessionAffinity", "None")
        _default(spec, "internalTrafficPolicy", "Cluster")
        _default(spec, "ipFamilies", ["IPv4"])
        _default(spec, "ipFamilyPolicy", "SingleStack")
        if spec["type"] != "ExternalName":
            octets = sum(map(ord, str((obj.get("metadata") or {}).get("name")))) % 250
            _default(spec, "clusterIP", f"10.96.{octets}.{len(str(obj)) % 250 + 1}")
            _default(spec, "clusterIPs", [spec["clusterIP"]])
    for port in spec.get("ports") or ():
        if isinstance(port, MutableMapping):
            _default(port, "protocol", "TCP")
            _default(port, "targetPort", port.get("port"))


def _default_secret(obj: MutableMapping[str, Any], whole: bool) -> None:
    if whole:
        _default(obj, "type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, Mapping):
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


_DEFAULTERS: dict[str, Callable[[MutableMapping[str, Any], bool], None]] = {
    "Deployment": _default_deployment,
    "Service": _default_service,
    "Secret": _default_secret,
}


def fill_defaults(kind: str, obj: MutableMapping[str, Any], *, whole: bool) -> None:
    """Add the API server's defaults to an object being created (`whole`) or to the parts a merge
    patch replaces wholesale (lists: containers, ports, volumes), where the server re-defaults."""
    if kind == "Pod":
        for pod_spec in _pod_specs("Pod", obj):
            _default_pod_spec(pod_spec, whole)
        return
    defaulter = _DEFAULTERS.get(kind)
    if defaulter is not None:
        defaulter(obj, whole)


def selects(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    """Whether an equality-based label selector (`a=b,c!=d,e,!f`) matches these labels."""
    labels = labels or {}
    for term in filter(None, (part.strip() for part in (selector or "").split(","))):
        if "!=" in term:
            key, value = (side.strip() for side in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (side.strip() for side in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True

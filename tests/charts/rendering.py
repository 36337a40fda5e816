"""The chart as Helm renders it: one place that loads it, renders it and splits the output.

Rendering goes through Helm's own engine (helm-python-sdk, Helm 4), so what these tests see is
what `helm install` would send to the API server: the same value coalescing, schema check,
template functions and YAML output. Each value set renders once per test session.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "carpool"
CI_DIR = CHART_DIR / "ci"

RELEASE = "demo"
NAMESPACE = "carpool-system"

KUBE_VERSIONS = ("1.29", "1.37")
"""The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest whose
schemas kubernetes-validate ships."""

DEFAULT = "default"
VALUE_SETS = (
    DEFAULT,
    *sorted(path.name.removesuffix("-values.yaml") for path in CI_DIR.glob("*-values.yaml")),
)
"""The default values and one set per ci/*-values.yaml file, each named after its file."""


def value_set_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in VALUE_SETS]


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def load_values(name: str) -> dict[str, Any]:
    """The user values of a value set (empty for the defaults), parsed as Helm parses `-f`."""
    if name == DEFAULT:
        return {}
    return helm.values_from_yaml((CI_DIR / f"{name}-values.yaml").read_text())


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, as `helm template demo charts/carpool -n carpool-system`."""
    return chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@functools.cache
def _rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(objects_of(render(load_values(name))))


def rendered(name: str) -> list[dict[str, Any]]:
    """The Kubernetes objects a value set renders to (templates only: Helm keeps CRDs apart)."""
    return list(_rendered(name))


@functools.cache
def notes(name: str) -> str:
    return render(load_values(name))[f"{CHART_DIR.name}/templates/NOTES.txt"]


def objects_of(manifests: dict[str, str]) -> Iterator[dict[str, Any]]:
    for path, text in sorted(manifests.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                yield document


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[obj['metadata']['name'] for obj in found]}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])

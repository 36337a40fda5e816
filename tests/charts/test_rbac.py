"""The operator's rights are exactly what its code calls: carpool_operator.rbac.RULES.

RULES is the operator's own list of (apiGroup, resource, verb) it calls, which its tests check
against every request it makes. The chart's ClusterRole must grant each of them (or the operator
fails with 403 in a real cluster) and nothing more (least privilege).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from carpool_operator import rbac
from tests.charts import rendering

pytestmark = pytest.mark.unit

Grant = tuple[str, str, str]


def grants(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    """Every (apiGroup, resource, verb) a list of PolicyRules allows."""
    found = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected fields in {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    found.add((group, resource, verb))
    return found


def value_sets_with_rbac() -> list[Any]:
    return [
        pytest.param(name, id=name)
        for name in rendering.VALUE_SETS
        if rendering.chart().merge_values(rendering.load_values(name))["rbac"]["create"]
    ]


@pytest.mark.parametrize("value_set", value_sets_with_rbac())
def test_the_cluster_role_grants_exactly_what_the_operator_calls(value_set: str) -> None:
    role = rendering.one(rendering.rendered(value_set), "ClusterRole")
    granted = grants(role["rules"])
    needed = grants(rule.as_dict() for rule in rbac.RULES)
    assert needed - granted == set(), "the operator would be refused these calls"
    assert granted - needed == set(), "granted but never called: remove them"
    assert not any("*" in grant for grant in granted)


def test_watching_every_namespace_binds_the_role_cluster_wide() -> None:
    objects = rendering.rendered(rendering.DEFAULT)
    binding = rendering.one(objects, "ClusterRoleBinding")
    account = rendering.one(objects, "ServiceAccount")
    pod = rendering.one(objects, "Deployment")["spec"]["template"]["spec"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": rendering.one(objects, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": rendering.NAMESPACE}
    ]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert rendering.of_kind(objects, "RoleBinding") == []


def test_watching_some_namespaces_grants_the_rights_there_only() -> None:
    objects = rendering.rendered("watch-namespaces")
    assert rendering.of_kind(objects, "ClusterRoleBinding") == []
    bindings = rendering.of_kind(objects, "RoleBinding")
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == ["classifiers", "staging"]
    role_name = rendering.one(objects, "ClusterRole")["metadata"]["name"]
    account = rendering.one(objects, "ServiceAccount")["metadata"]["name"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] == role_name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": rendering.NAMESPACE}
        ]

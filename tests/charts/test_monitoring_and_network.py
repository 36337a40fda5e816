"""The chart's PodMonitor, ServiceMonitor and NetworkPolicies select what the operator creates.

The serving pods and Services are not the chart's: the operator builds them. So each selector
here is matched against the objects the operator's own builders return, and the labels the
autoscaler's query needs against the relabelling the monitors carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from carpool_operator import prometheus, resources, spec
from tests.charts import rendering

pytestmark = pytest.mark.unit

POLICY = spec.parse({}, name="phishing", namespace="classifiers")
SERVING_DEPLOYMENT = resources.build_deployment(
    POLICY, image="carpool-serving:test", token_digest="0", replicas=1
)
SERVING_POD_LABELS = SERVING_DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
SERVING_SERVICE = resources.build_service(POLICY)

LABELS_THE_PROMETHEUS_OPERATOR_ADDS = {
    "namespace",
    "pod",
    "container",
    "service",
    "endpoint",
    "job",
    "instance",
}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes' label selector semantics (matchLabels and matchExpressions, ANDed)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
        }[operator]
        if not matched:
            return False
    return True


def test_monitors_are_off_by_default() -> None:
    kinds = {obj["kind"] for obj in rendering.rendered(rendering.DEFAULT)}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "NetworkPolicy"}


def test_the_pod_monitor_scrapes_every_serving_pod_on_its_metrics_port() -> None:
    monitor = rendering.one(rendering.rendered("podmonitor"), "PodMonitor")
    assert selects(monitor["spec"]["selector"], SERVING_POD_LABELS)
    assert not selects(
        monitor["spec"]["selector"],
        rendering.one(rendering.rendered("podmonitor"), "Deployment")["spec"]["template"]["metadata"][
            "labels"
        ],
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    container_ports = SERVING_DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert endpoint["port"] in {port["name"] for port in container_ports}
    annotations = SERVING_DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("10s", "5s")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["classifiers"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_service_monitor_scrapes_every_policy_service_on_its_http_port() -> None:
    monitor = rendering.one(rendering.rendered("servicemonitor"), "ServiceMonitor")
    assert selects(monitor["spec"]["selector"], SERVING_SERVICE["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in SERVING_SERVICE["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert "scrapeTimeout" not in endpoint


@pytest.mark.parametrize(
    ("value_set", "kind", "endpoints"),
    [
        pytest.param("podmonitor", "PodMonitor", "podMetricsEndpoints", id="pod-monitor"),
        pytest.param("servicemonitor", "ServiceMonitor", "endpoints", id="service-monitor"),
    ],
)
def test_series_carry_the_labels_the_autoscaler_queries_by(value_set: str, kind: str, endpoints: str) -> None:
    monitor = rendering.one(rendering.rendered(value_set), kind)
    (endpoint,) = monitor["spec"][endpoints]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_carpool_dev_policy"],
        "targetLabel": "policy",
        "action": "replace",
    } in endpoint["relabelings"]
    # The pod label the relabelling reads, in Prometheus' sanitised form, is the operator's.
    assert re.sub(r"[^a-zA-Z0-9_]", "_", resources.POLICY_LABEL) == "carpool_dev_policy"
    queried = set(re.findall(r"(\w+)\s*=~?\s*\"", prometheus.DEFAULT_QUERY))
    assert "policy" in queried
    produced = {relabeling["targetLabel"] for relabeling in endpoint["relabelings"]}
    assert queried <= produced | LABELS_THE_PROMETHEUS_OPERATOR_ADDS


def test_network_policies_are_created_only_when_enabled() -> None:
    assert rendering.of_kind(rendering.rendered(rendering.DEFAULT), "NetworkPolicy") == []
    policies = rendering.of_kind(rendering.rendered("networkpolicy"), "NetworkPolicy")
    namespaces = sorted(policy["metadata"]["namespace"] for policy in policies)
    assert namespaces == sorted(["classifiers", "staging", rendering.NAMESPACE])


def test_without_namespaces_the_serving_policy_guards_the_release_namespace() -> None:
    manifests = rendering.render({"networkPolicy": {"enabled": True}})
    policies = rendering.of_kind(list(rendering.objects_of(manifests)), "NetworkPolicy")
    assert sorted(policy["metadata"]["namespace"] for policy in policies) == [rendering.NAMESPACE] * 2


def serving_policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p
        for p in rendering.of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], SERVING_POD_LABELS)
    ]


def test_serving_pods_admit_the_operator_prometheus_and_the_listed_clients_only() -> None:
    objects = rendering.rendered("networkpolicy")
    operator_pod = rendering.one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    values = rendering.chart().merge_values(rendering.load_values("networkpolicy"))["networkPolicy"]
    found = serving_policies(objects)
    assert len(found) == 2
    for policy in found:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        rules = policy["spec"]["ingress"]
        # A rule without `from` would admit every source: there must be none.
        assert all(rule.get("from") for rule in rules)
        operator_rule, prometheus_rule, clients_rule = rules
        (operator_peer,) = operator_rule["from"]
        assert operator_peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": rendering.NAMESPACE}
        }
        assert selects(operator_peer["podSelector"], operator_pod)
        assert not selects(operator_peer["podSelector"], SERVING_POD_LABELS)
        assert prometheus_rule["from"] == values["prometheus"]
        assert clients_rule["from"] == values["clients"]


def test_empty_peer_lists_admit_nobody_rather_than_everybody() -> None:
    manifests = rendering.render({"networkPolicy": {"enabled": True, "clients": [], "prometheus": []}})
    (policy,) = serving_policies(list(rendering.objects_of(manifests)))
    assert len(policy["spec"]["ingress"]) == 1
    assert all(rule.get("from") for rule in policy["spec"]["ingress"])


def test_the_operator_pod_admits_only_its_health_probe() -> None:
    objects = rendering.rendered("networkpolicy")
    operator_pod = rendering.one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    (policy,) = [
        p
        for p in rendering.of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], operator_pod)
    ]
    assert policy["metadata"]["namespace"] == rendering.NAMESPACE
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "health", "protocol": "TCP"}]}]

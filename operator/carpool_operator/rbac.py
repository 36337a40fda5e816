"""What the operator calls on the Kubernetes API, as data: the chart's ClusterRole must grant
exactly these rules (a chart test compares them), and the operator's tests check that every call
it made against the emulated API server is covered by one of them.

Who needs what:

- Kopf: watch and list policies cluster-wide, patch them (its finalizer and progress
  annotations) and their status (the operator's status and conditions), create Events.
- The reconciler (kube.py): get/create/patch/delete each child kind, list pods (to push configs).
- The autoscaler patches the Deployment's replicas (covered by the deployments rule).
- During an experiment the reconciler lists the policy's Deployments (one per variant) to remove
  those the spec no longer wants; an experiment's promotion patches the policy's spec (covered by
  the policies' patch rule).

Discovery (/api, /apis) needs no rule. Nothing is updated with PUT and nothing is watched but
the policies.
"""

from __future__ import annotations

import dataclasses

__all__ = ["RULES", "Rule", "allows"]


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule of a ClusterRole."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


RULES: tuple[Rule, ...] = (
    Rule(("carpool.dev",), ("batchingpolicies",), ("list", "watch", "patch")),
    Rule(("carpool.dev",), ("batchingpolicies/status",), ("patch",)),
    Rule(("apps",), ("deployments",), ("get", "list", "create", "patch", "delete")),
    Rule(("",), ("services", "configmaps", "secrets"), ("get", "create", "patch", "delete")),
    Rule(("networking.k8s.io",), ("ingresses",), ("get", "create", "patch", "delete")),
    Rule(("",), ("pods",), ("list",)),
    Rule(("",), ("events",), ("create",)),
)


def allows(api_group: str, resource: str, verb: str) -> bool:
    """Whether RULES grant `verb` on `resource` (plural, with /subresource) of `api_group`."""
    return any(
        api_group in rule.api_groups and resource in rule.resources and verb in rule.verbs for rule in RULES
    )

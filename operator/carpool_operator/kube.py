"""The operator's own Kubernetes API calls: the only module that talks to the API server.

Why not the `kubernetes` client's typed APIs: the builders produce plain dicts, and every call
here is one of five verbs on a handful of kinds, so a small async client over httpx keeps the
calls visible (rbac.RULES lists exactly these) and never blocks Kopf's event loop. The
`kubernetes` package is used for what it does best, reading credentials: in-cluster service
account, or a kubeconfig. Kopf logs in with the same credentials (`connection_info()`), so the two
never disagree about the cluster.

Patches are JSON merge patches (RFC 7386): custom resources accept nothing else but JSON patches,
and for the children every field the operator sets is written whole.
"""

from __future__ import annotations

import dataclasses
import enum
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import kopf
import kubernetes.client
import kubernetes.config

from carpool_operator import resources

__all__ = [
    "CONFIG_MAPS",
    "DEPLOYMENTS",
    "INGRESSES",
    "PODS",
    "POLICIES",
    "SECRETS",
    "SERVICES",
    "Api",
    "ApiError",
    "Change",
    "Conflict",
    "Kind",
    "NotFound",
    "apply",
    "apply_over",
    "delete_if_exists",
    "post_event",
    "read",
    "scale_deployment",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """A namespaced resource the operator calls."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path


DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment")
SERVICES = Kind("", "v1", "services", "Service")
CONFIG_MAPS = Kind("", "v1", "configmaps", "ConfigMap")
SECRETS = Kind("", "v1", "secrets", "Secret")
PODS = Kind("", "v1", "pods", "Pod")
INGRESSES = Kind("networking.k8s.io", "v1", "ingresses", "Ingress")
POLICIES = Kind("carpool.dev", "v1alpha1", "batchingpolicies", "BatchingPolicy")


class ApiError(Exception):
    """The API server refused a call; `status` is its HTTP status, the message is its own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Change(enum.StrEnum):
    CREATED = "Created"
    UPDATED = "Updated"
    UNCHANGED = "Unchanged"
    DELETED = "Deleted"


class Api:
    """An async client of the Kubernetes API with the operator's credentials."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, timeout_s: float = 30.0) -> None:
        self._configuration = configuration
        verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if not configuration.verify_ssl:
            verify.check_hostname = False
            verify.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            verify.load_cert_chain(configuration.cert_file, configuration.key_file)
        self._client = httpx.AsyncClient(
            base_url=configuration.host, verify=verify, timeout=timeout_s, trust_env=False
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None = None, *, timeout_s: float = 30.0) -> Api:
        """In-cluster credentials first (unless a kubeconfig is named), then the kubeconfig."""
        configuration = kubernetes.client.Configuration()
        if kubeconfig is None:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                return cls(configuration, timeout_s=timeout_s)
            except kubernetes.config.ConfigException:
                pass
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
        )
        return cls(configuration, timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _authorization(self) -> str | None:
        configuration = self._configuration
        if configuration.refresh_api_key_hook is not None:
            configuration.refresh_api_key_hook(configuration)
        header: str | None = configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or configuration.get_api_key_with_prefix("authorization")
        if not header:
            return None
        return header if " " in header else f"Bearer {header}"

    def connection_info(self) -> kopf.ConnectionInfo:
        """The same credentials, for Kopf's login handler."""
        configuration = self._configuration
        scheme, _, token = (self._authorization() or "").partition(" ")
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert or None,
            insecure=not configuration.verify_ssl,
            username=configuration.username or None,
            password=configuration.password or None,
            scheme=scheme or None,
            token=token or None,
            certificate_path=configuration.cert_file or None,
            private_key_path=configuration.key_file or None,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = content_type
        response = await self._client.request(method, path, json=body, params=params, headers=headers)
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message") or response.text)
            except ValueError:
                message = response.text
            error = {404: NotFound, 409: Conflict}.get(response.status_code, ApiError)
            raise error(response.status_code, f"{method} {path}: {message[:500]}")
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", kind.path(namespace, name))

    async def list(
        self, kind: Kind, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace. The selector narrows the answer on a real API server;
        callers still filter what they get, as not every server applies it."""
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[dict[str, Any]] = (await self._call("GET", kind.path(namespace), params=params)).get(
            "items"
        ) or []
        return items

    async def create(self, kind: Kind, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", kind.path(obj["metadata"]["namespace"]), body=dict(obj))

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        return await self._call(
            "PATCH",
            kind.path(namespace, name, subresource),
            body=dict(patch),
            content_type="application/merge-patch+json",
        )

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        await self._call("DELETE", kind.path(namespace, name))


def _without(obj: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    result = dict(obj)
    for path in paths:
        node: dict[str, Any] = result
        for key in path[:-1]:
            if not isinstance(node.get(key), Mapping):
                break
            node[key] = dict(node[key])
            node = node[key]
        else:
            node.pop(path[-1], None)
    return result


async def read(api: Api, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        return await api.get(kind, namespace, name)
    except NotFound:
        return None


async def apply(
    api: Api,
    kind: Kind,
    desired: Mapping[str, Any],
    *,
    create_only: Sequence[tuple[str, ...]] = (),
) -> tuple[Change, dict[str, Any]]:
    """Create the object, or merge-patch it back to `desired` when a field it sets has drifted.

    Fields under `create_only` paths are written at creation only (e.g. the replicas of an
    autoscaled Deployment, which the autoscaler owns afterwards).
    """
    metadata = desired["metadata"]
    live = await read(api, kind, metadata["namespace"], metadata["name"])
    return await apply_over(api, kind, desired, live, create_only=create_only)


async def apply_over(
    api: Api,
    kind: Kind,
    desired: Mapping[str, Any],
    live: dict[str, Any] | None,
    *,
    create_only: Sequence[tuple[str, ...]] = (),
) -> tuple[Change, dict[str, Any]]:
    """`apply()` over the object as the caller has just read it (None: it does not exist)."""
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    if live is None:
        try:
            return Change.CREATED, await api.create(kind, desired)
        except Conflict:  # created meanwhile by a concurrent pass: converge on it below
            live = await api.get(kind, namespace, name)
    wanted = _without(desired, create_only)
    if resources.contains(live, wanted):
        return Change.UNCHANGED, live
    return Change.UPDATED, await api.patch(kind, namespace, name, wanted)


async def delete_if_exists(api: Api, kind: Kind, namespace: str, name: str) -> Change:
    try:
        await api.delete(kind, namespace, name)
    except NotFound:
        return Change.UNCHANGED
    return Change.DELETED


async def scale_deployment(api: Api, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """Set a Deployment's replicas (the autoscaler's only write to it)."""
    return await api.patch(DEPLOYMENTS, namespace, name, {"spec": {"replicas": replicas}})


def post_event(body: kopf.Body, *, reason: str, message: str, warning: bool = False) -> None:
    """Queue a Kubernetes Event about a policy; Kopf posts it in the background."""
    kopf.event(body, type="Warning" if warning else "Normal", reason=reason, message=message[:1000])

"""Kubernetes for tests: kmock's API emulator behaving like an API server where Kopf needs it,
and the real operator running under Kopf in a thread of its own.

Use it as:

    async with kube.api_server() as server, kube.running_operator(server, config):
        await server.create(kube.POLICIES, "default", policy)
        await kube.eventually(lambda: server.get(kube.DEPLOYMENTS, "default", "demo"))

`ApiServer` (a `kmock.KubernetesEmulator`) adds what a real API server does and kmock does not:

- uid, resourceVersion, creationTimestamp, generation (bumped on spec changes), namespace from
  the URL, names from generateName (Kopf names its Events so);
- 422 instead of 500 when a JSON patch's `test` fails (Kopf then retries with a fresh body), and
  409 Conflict for a merge patch carrying a stale metadata.resourceVersion;
- quantities stored in canonical form and the API server's defaults filled in (`habits`), so an
  operator that compares naively sees the drift a real cluster shows it;
- equality-based label selectors on lists, and the namespace collection (GET
  /api/v1/namespaces, with watch), which namespace-restricted Kopf asks for;
- injected faults (`Fault`): an error status or a delay (a timeout for a client that waits less)
  on chosen calls of the operator, before or after the write takes effect.

It knows the built-in kinds (kmock's bundled discovery) and BatchingPolicy as crds/ declares it.

Not emulated, by kmock or here: field selectors, set-based label selectors (`in`, `notin`), PUT,
server-side apply and dry-run, strategic-merge patches, CRD schema validation and defaulting
(tests/crds checks the schema itself), admission (quota, limit ranges, pod security), the
garbage collector (tests assert ownerReferences), watch bookmarks and `410 Gone` on old
resourceVersions, and every controller: no ReplicaSets, no Pods, no Deployment status, no
scheduling (nodeSelector, tolerations and GPU limits are only stored). Tests create Pod objects
themselves, with status.podIP where a real `carpool serve` listens.

Kopf runs in its own thread and event loop (`OperatorThread`): on exit it cancels the tasks it
did not start, which in the test's loop would include pytest's own, and the emulator must keep
serving from the test's loop while Kopf starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import itertools
import json
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
import kopf
import yaml
from kopf._core.engines import posting

from carpool_operator import command, kube, settings
from tests.support import habits

__all__ = [
    "CRD_PATH",
    "DEPLOYMENTS",
    "POLICIES",
    "ApiServer",
    "Fault",
    "OperatorThread",
    "PostedEvents",
    "api_server",
    "crd",
    "eventually",
    "fast_config",
    "posted_events",
    "ready_pod",
    "running_operator",
    "write_kubeconfig",
]

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "batchingpolicies.carpool.dev.yaml"

POLICIES = kube.POLICIES
DEPLOYMENTS = kube.DEPLOYMENTS

T = TypeVar("T")


def crd() -> dict[str, Any]:
    """The BatchingPolicy CRD, as the repository ships it."""
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def _declare(server: kmock.KubernetesEmulator, definition: Mapping[str, Any]) -> None:
    """Declare a CRD's kind for discovery; POSTing the CRD to kmock would not register it."""
    crd_spec = definition["spec"]
    names = crd_spec["names"]
    for version in crd_spec["versions"]:
        key = f"{crd_spec['group']}/{version['name']}/{names['plural']}"
        server.resources[key] = kmock.ResourceInfo(
            kind=names["kind"],
            singular=names.get("singular"),
            namespaced=crd_spec["scope"] == "Namespaced",
            verbs={"get", "list", "watch", "create", "patch", "delete"},
            shortnames=set(names.get("shortNames", ())),
            categories=set(names.get("categories", ())),
            subresources=set(version.get("subresources") or {}),
        )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_KINDS = {"deployments": "Deployment", "pods": "Pod", "services": "Service", "secrets": "Secret"}
"""Built-in kinds whose stored form the emulator normalises and defaults."""


@dataclasses.dataclass
class Fault:
    """A failure the emulator injects into the operator's calls (never the test's own).

    It matches `method` (GET, POST, PATCH, DELETE) on `plural` (and `name`, when given), `times`
    times. It answers `status` (None: the normal answer) after `delay_s` seconds; with `after_write`
    the write takes effect first, as when a server commits and the answer is lost.
    """

    method: str
    plural: str
    status: int | None = 500
    delay_s: float = 0.0
    times: int = 1
    name: str | None = None
    after_write: bool = False
    hits: int = 0

    def matches(self, request: kmock.Request) -> bool:
        return (
            self.times > 0
            and str(getattr(request.method, "value", request.method)).upper() == self.method
            and request.resource is not None
            and request.resource.plural == self.plural
            and (self.name is None or request.name == self.name)
        )


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus the server-side habits and errors the operator meets in a cluster."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1000)
        self._write_lock = asyncio.Lock()
        self.faults: list[Fault] = []
        self.namespaces: set[str] = {"default", "kube-system"}

    def inject(self, fault: Fault) -> Fault:
        """Fail the operator's matching calls as `fault` says; returns it (see `fault.hits`)."""
        self.faults.append(fault)
        return fault

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock cannot parse the namespace collection's path (it reads "namespaces" as the
        # namespace prefix of a namespaced path) and answers 500.
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.method == "GET":
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    def _namespace_objects(self) -> list[dict[str, Any]]:
        names = self.namespaces | {namespace for (_, namespace, _) in self.objects if namespace}
        return [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "status": {"phase": "Active"},
            }
            for name in sorted(names)
        ]

    async def _serve_namespaces(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        items = self._namespace_objects()
        if raw_request.query.get("watch") != "true":
            body = {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}}
            return aiohttp.web.json_response({**body, "items": items})
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        for item in items:
            await response.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
        timeout = float(raw_request.query.get("timeoutSeconds") or 60)
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await asyncio.sleep(timeout)
        return response

    async def _serve_list(self, request: kmock.Request) -> Any:
        listed = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector and isinstance(listed, dict):
            listed["items"] = [
                item
                for item in listed["items"]
                if habits.selects(selector, (item.get("metadata") or {}).get("labels"))
            ]
        return listed

    def _fault(self, request: kmock.Request) -> Fault | None:
        if request.headers.get("User-Agent", "").startswith("kmock"):
            return None  # the test acting as a user
        for fault in self.faults:
            if fault.matches(request):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        fault = self._fault(request) if request.resource is not None else None
        if fault is None:
            return await self._handle_normally(request)
        if fault.after_write:
            response = await self._handle_normally(request)
            await asyncio.sleep(fault.delay_s)
            if fault.status is None:
                return response
        else:
            await asyncio.sleep(fault.delay_s)
            if fault.status is None:
                return await self._handle_normally(request)
        raise kmock.KubernetesError(
            status=fault.status,
            reason="InternalError",
            message=f"injected: {fault.status} on {request.method}",
        )

    async def _handle_normally(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        writes = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
        if request.resource is None or request.action not in writes:
            return await super()._handle(request)
        async with self._write_lock:
            kind = _KINDS.get(request.resource.plural or "") if not request.subresource else None
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._stamp_new(request)
                if kind is not None:
                    habits.normalise(kind, request.data)
                    habits.fill_defaults(kind, request.data, whole=True)
            elif request.action == kmock.action.UPDATE:
                self._stamp_patch(request)
                if kind is not None and isinstance(request.data, dict):
                    habits.normalise(kind, request.data)
                    habits.fill_defaults(kind, request.data, whole=False)
            return await super()._handle(request)

    def _stamp_new(self, request: kmock.Request) -> None:
        metadata = request.data.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            metadata["name"] = metadata["generateName"] + "".join(secrets.choice(alphabet) for _ in range(5))
        if request.namespace:
            metadata["namespace"] = request.namespace
        metadata["uid"] = str(uuid.uuid4())
        metadata["resourceVersion"] = str(next(self._versions))
        metadata["creationTimestamp"] = _now()
        metadata["generation"] = 1

    def _stamp_patch(self, request: kmock.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        current = copy.deepcopy(self.objects[key].raw)
        version = str(next(self._versions))
        main = not request.subresource
        if isinstance(request.data, list):
            try:
                patched = jsonpatch.apply_patch(current, request.data, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                # A real API server answers 422 (Unprocessable Entity) when a `test` fails.
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            if main and patched.get("spec") != current.get("spec"):
                generation = current["metadata"].get("generation", 1) + 1
                request.data.append({"op": "add", "path": "/metadata/generation", "value": generation})
        elif isinstance(request.data, dict):
            metadata_patch = request.data.get("metadata")
            if not isinstance(metadata_patch, dict):
                metadata_patch = request.data["metadata"] = {}
            sent = metadata_patch.get("resourceVersion")
            if sent is not None and sent != current["metadata"].get("resourceVersion"):
                # Optimistic concurrency: a write based on an older version is refused.
                raise kmock.KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=f"the object has been modified; resourceVersion {sent} is stale",
                )
            metadata_patch["resourceVersion"] = version
            if main and "spec" in request.data:
                patched_spec = kmock.Object(current)
                patched_spec.patch({"spec": request.data["spec"]})
                if patched_spec.raw.get("spec") != current.get("spec"):
                    metadata_patch["generation"] = current["metadata"].get("generation", 1) + 1

    # Shortcuts for tests: the same HTTP calls a client makes, so watchers see every change.

    async def create(self, kind: kube.Kind, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        return await self._json("POST", kind.path(namespace), body)

    async def patch_object(
        self,
        kind: kube.Kind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await self._json("PATCH", kind.path(namespace, name, subresource), dict(patch))

    async def delete_object(self, kind: kube.Kind, namespace: str, name: str) -> dict[str, Any]:
        return await self._json("DELETE", kind.path(namespace, name), None)

    def get(self, kind: kube.Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object now, or None (no HTTP: for assertions)."""
        key = (kmock.resource(kind.group, kind.version, kind.plural), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def api_calls(self) -> set[tuple[str, str, str]]:
        """(apiGroup, resource[/subresource], verb) of every call the operator made (not the test's)."""
        verbs = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch"}
        calls = set()
        for request in {id(request): request for request in self}.values():
            if not request.resource or not request.resource.plural:
                continue  # discovery
            if request.headers.get("User-Agent", "").startswith("kmock"):
                continue  # the test acting as a user
            verb = verbs.get(request.action.name, "delete") if request.action else str(request.method).lower()
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            calls.add((request.resource.group, resource, verb))
        return calls

    def settled(self) -> bool:
        """Whether Kopf has finished handling every policy's last change (its diff-base annotation
        matches the spec), so that stopping it now interrupts no handler."""
        for (resource, _, _), obj in list(self.objects.items()):
            if resource.plural != POLICIES.plural or obj.deleted:
                continue
            metadata = obj.raw.get("metadata") or {}
            handled = (metadata.get("annotations") or {}).get("carpool.dev/last-handled-configuration")
            if metadata.get("deletionTimestamp") or not handled:
                return False
            if yaml.safe_load(handled).get("spec") != obj.raw.get("spec"):
                return False
        return True

    def events(self, namespace: str, involving: str) -> list[dict[str, Any]]:
        """Events posted about the object named `involving`, oldest first."""
        found = []
        for (resource, ns, _), obj in list(self.objects.items()):
            if resource.plural == "events" and ns == namespace and not obj.deleted:
                event = obj.raw
                if (event.get("involvedObject") or {}).get("name") == involving:
                    found.append(event)
        return found

    async def _json(self, method: str, path: str, body: Any) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.request(method, path, json=body, headers=headers) as response:
            payload: dict[str, Any] = await response.json()
            if response.status >= 400:
                raise AssertionError(f"{method} {path} answered {response.status}: {payload.get('message')}")
            return payload


class _QuickShutdownServer(aiohttp.test_utils.RawTestServer):
    """aiohttp waits up to 60 s for open watch streams at shutdown; Kopf's are gone by then."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
        server = aiohttp.web.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web.ServerRunner(server, debug=debug, shutdown_timeout=0.5, **kwargs)


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[ApiServer]:
    """An emulated API server on a loopback port, with the built-in kinds and BatchingPolicy."""
    async with ApiServer() as server, kmock.Server(server, server_cls=_QuickShutdownServer):
        server.resources.load_bundled()
        _declare(server, crd())
        yield server


def write_kubeconfig(path: Path, server_url: str) -> Path:
    """A kubeconfig pointing at `server_url` with a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": server_url}}],
        "users": [{"name": "operator", "user": {"token": "emulated-token"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "operator"}}],
        "current-context": "emulated",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def fast_config(kubeconfig: Path, **overrides: Any) -> settings.OperatorConfig:
    """Operator settings for tests: a 1 s periodic pass and sub-second retries."""
    values: dict[str, Any] = {
        "kubeconfig": kubeconfig,
        "serving_image": "carpool-serving:test",
        "resync_interval_s": 1.0,
        "push_timeout_s": 3.0,
        "retry_base_delay_s": 0.2,
        "retry_max_delay_s": 1.0,
        **overrides,
    }
    return settings.OperatorConfig(**values)


def _fast_kopf(kopf_settings: kopf.OperatorSettings) -> None:
    kopf_settings.networking.error_backoffs = (0.1, 0.2, 0.5)
    kopf_settings.queueing.error_delays = (0.1, 0.2, 0.5)
    kopf_settings.execution.default_backoff = 0.5
    kopf_settings.persistence.consistency_timeout = 1.0
    kopf_settings.posting.idle_timeout = 0.2
    kopf_settings.background.instant_exit_timeout = 0.5


class OperatorThread:
    """Kopf running a registry in a thread of its own, with ready and stop flags."""

    def __init__(self, registry: kopf.OperatorRegistry, kopf_settings: kopf.OperatorSettings) -> None:
        self._registry = registry
        self._settings = kopf_settings
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(
                kopf.operator(
                    registry=self._registry,
                    settings=self._settings,
                    clusterwide=True,
                    standalone=True,
                    ready_flag=self._ready,
                    stop_flag=self._stop,
                )
            )
        except BaseException as exc:  # reported to the test by stop()
            self.error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        if not await asyncio.to_thread(self._ready.wait, timeout_s):
            raise TimeoutError(f"the operator was not ready within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError("the operator failed to start") from self.error

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the operator did not stop within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError("the operator failed") from self.error


@contextlib.asynccontextmanager
async def running_operator(
    server: ApiServer, config: settings.OperatorConfig
) -> AsyncIterator[OperatorThread]:
    """`carpool operator` as command.build() assembles it, with test-speed back-offs; the config's
    kubeconfig must point at `server`."""
    registry, kopf_settings = command.build(config)
    _fast_kopf(kopf_settings)
    thread = OperatorThread(registry, kopf_settings)
    await thread.start()
    try:
        yield thread
        # Let handlers in flight finish: Kopf starts a policy's timer when its creation handler
        # ends, and one started after the stop request is only cancelled 5 s later.
        with contextlib.suppress(AssertionError):
            await eventually(server.settled, timeout_s=5, what="the operator idle")
    finally:
        await thread.stop()


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "the condition",
) -> T:
    """Poll `probe` until it returns something truthy (or stops raising AssertionError)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = probe()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except AssertionError as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s") from last
        await asyncio.sleep(interval_s)


def ready_pod(name: str, policy: str, ip: str, *, ready: bool = True) -> dict[str, Any]:
    """A Pod object as a Deployment's controller and the kubelet would leave it."""
    return {
        "metadata": {"name": name, "labels": {"carpool.dev/policy": policy}},
        "spec": {"containers": [{"name": "serving", "image": "carpool-serving:test"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class PostedEvents:
    """The Events queued by `kopf.event` while `posted_events()` is active, oldest first."""

    def __init__(self, queue: asyncio.Queue[posting.K8sEvent]) -> None:
        self._queue = queue
        self._seen: list[dict[str, str]] = []

    def __call__(self, reason: str | None = None) -> list[dict[str, str]]:
        """Those posted so far (with that reason): type, reason, message, the involved object's name."""
        while not self._queue.empty():
            event = self._queue.get_nowait()
            self._seen.append(
                {
                    "type": event.type,
                    "reason": event.reason,
                    "message": event.message,
                    "name": str(event.ref.get("name")),
                }
            )
        return [event for event in self._seen if reason is None or event["reason"] == reason]


@contextlib.contextmanager
def posted_events() -> Iterator[PostedEvents]:
    """Catch the Events that code called outside the operator (a pass run directly by a test)
    posts with `kopf.event`. Kopf reads its Event queue and settings from context variables that
    it sets for each object's handlers; this sets them for the caller, as Kopf's own tests do."""
    queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
    tokens = (
        posting.settings_var.set(kopf.OperatorSettings()),
        posting.event_queue_var.set(queue),
        posting.event_queue_loop_var.set(asyncio.get_running_loop()),
    )
    try:
        yield PostedEvents(queue)
    finally:
        posting.event_queue_loop_var.reset(tokens[2])
        posting.event_queue_var.reset(tokens[1])
        posting.settings_var.reset(tokens[0])

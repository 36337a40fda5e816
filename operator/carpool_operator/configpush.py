"""Live config push: bring every ready serving pod to the policy's batching config, no restart.

For each pod (its IP and serving port), concurrently:

1. `GET /batching/stats` and compare its `config_hash` with `BatchingConfig.config_hash()`, and
   each model's own `config_hash` with the config that model should run (its own where the policy
   tunes it, `models`, otherwise the policy's); a pod already there is left alone, so the periodic
   pass costs one GET per pod.
2. Otherwise `POST /batching/configure` with every field of the config (snake_case, as the pod's
   API takes it) and `Authorization: Bearer <admin token>`: a full body makes the result the same
   whatever the pod ran before (a restarted pod falls back to its start-up environment). A change
   of the pod's config sets every model's too, so then each model that should differ from it, or
   otherwise each model found behind, gets its own full body (`"model": name`).
3. `GET /batching/stats` again: only the hashes the pod reports count as applied.

Failures are per pod and never raise: an unreachable pod, a refused token or a config the pod
refuses is a `PodResult` with an error, which the caller reports and retries.

`read_models()` asks every pod that has an IP, ready or not, for `GET /models/status`: a pod whose
model could not load stays up, unready, and says there which model failed and why, and on which
device each model runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from serving import settings as serving_settings

__all__ = [
    "ModelReport",
    "PodModels",
    "PodResult",
    "PodTarget",
    "converge",
    "pod_url",
    "read_models",
]

STATS_PATH = "/batching/stats"
MODELS_PATH = "/models/status"
CONFIGURE_PATH = "/batching/configure"
HASH_KEY = "config_hash"


@dataclasses.dataclass(frozen=True, slots=True)
class PodTarget:
    name: str
    ip: str
    port: int


@dataclasses.dataclass(frozen=True, slots=True)
class PodResult:
    """Where one pod stands after a push."""

    pod: PodTarget
    config_hash: str | None = None
    """The hash the pod last reported; None when it could not be read."""
    model_hashes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Each model's own hash, as the pod last reported it."""
    pushed: bool = False
    """Whether a POST /batching/configure was sent (the pod was behind)."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def pod_url(pod: PodTarget, path: str) -> str:
    host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
    return f"http://{host}:{pod.port}{path}"


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    return f"{type(exc).__name__}: {exc}"


def _refusal(response: httpx.Response, what: str) -> str:
    text = response.text.strip().replace("\n", " ")[:300]
    if response.status_code in (401, 403):
        return f"{what} refused the admin token (HTTP {response.status_code})"
    return f"{what} answered HTTP {response.status_code}: {text}"


async def _read_hashes(client: httpx.AsyncClient, pod: PodTarget) -> tuple[str, dict[str, str]]:
    """The pod's config hash and each model's, from GET /batching/stats (a model without one, as
    on a pod of an older image, is left out: only a tuned model needs it)."""
    response = await client.get(pod_url(pod, STATS_PATH))
    if response.status_code != 200:
        raise _PodError(_refusal(response, f"GET {STATS_PATH}"))
    try:
        payload: Any = response.json()
    except ValueError:
        raise _PodError(f"GET {STATS_PATH} answered something other than JSON") from None
    value = payload.get(HASH_KEY) if isinstance(payload, dict) else None
    if not isinstance(value, str):
        raise _PodError(f"GET {STATS_PATH} has no {HASH_KEY!r}")
    models = payload.get("models")
    hashes = {}
    for name, entry in (models if isinstance(models, dict) else {}).items():
        own = entry.get(HASH_KEY) if isinstance(entry, dict) else None
        if isinstance(own, str):
            hashes[name] = own
    return value, hashes


class _PodError(Exception):
    pass


async def _post(
    client: httpx.AsyncClient, pod: PodTarget, body: dict[str, Any], token: str, what: str
) -> None:
    response = await client.post(
        pod_url(pod, CONFIGURE_PATH), json=body, headers={"Authorization": f"Bearer {token}"}
    )
    if response.status_code != 200:
        raise _PodError(_refusal(response, f"POST {CONFIGURE_PATH}{what}"))


def _lagging(
    hashes: Mapping[str, str], config: serving_settings.BatchingConfig, models: Mapping[str, Any]
) -> list[str]:
    """The models `hashes` shows away from the config each should run."""
    return [name for name, own in hashes.items() if own != models.get(name, config).config_hash()]


async def _converge_pod(
    client: httpx.AsyncClient,
    pod: PodTarget,
    config: serving_settings.BatchingConfig,
    token: str,
    models: Mapping[str, serving_settings.BatchingConfig],
) -> PodResult:
    wanted = config.config_hash()
    current: str | None = None
    hashes: dict[str, str] = {}
    pushed = False
    try:
        current, hashes = await _read_hashes(client, pod)
        missing = sorted(set(models) - set(hashes))
        if missing:
            raise _PodError(
                f"reports no config for model {missing[0]!r} (it reports {', '.join(hashes) or 'none'})"
            )
        if current == wanted and not _lagging(hashes, config, models):
            return PodResult(pod, current, hashes)
        pushed = True
        if current != wanted:
            await _post(client, pod, config.model_dump(mode="json"), token, "")
            behind = [name for name in hashes if models.get(name, config) != config]
        else:
            behind = _lagging(hashes, config, models)
        for name in behind:
            body = {"model": name, **models.get(name, config).model_dump(mode="json")}
            await _post(client, pod, body, token, f" for model {name!r}")
        current, hashes = await _read_hashes(client, pod)
        if current != wanted:
            raise _PodError(f"reports config {current} after the push, not {wanted}")
        for name in _lagging(hashes, config, models):
            own = models.get(name, config).config_hash()
            raise _PodError(f"reports config {hashes[name]} for model {name!r} after the push, not {own}")
        return PodResult(pod, current, hashes, pushed=True)
    except httpx.HTTPError as exc:
        return PodResult(pod, current, hashes, pushed=pushed, error=_describe(exc))
    except _PodError as exc:
        return PodResult(pod, current, hashes, pushed=pushed, error=str(exc))


async def converge(
    pods: Iterable[PodTarget],
    config: serving_settings.BatchingConfig,
    token: str,
    *,
    models: Mapping[str, serving_settings.BatchingConfig] | None = None,
    timeout_s: float = 5.0,
    client: httpx.AsyncClient | None = None,
) -> list[PodResult]:
    """Bring every pod to `config`, and each model named in `models` to its own config (every
    other model to `config`); one result per pod, in the order given."""
    targets = list(pods)
    if not targets:
        return []
    tuned = dict(models or {})
    if client is not None:
        return list(
            await asyncio.gather(*(_converge_pod(client, pod, config, token, tuned) for pod in targets))
        )
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as own:
        return list(await asyncio.gather(*(_converge_pod(own, pod, config, token, tuned) for pod in targets)))


@dataclasses.dataclass(frozen=True, slots=True)
class ModelReport:
    """One model of one pod, as its /models/status reports it."""

    name: str
    state: str
    device: str | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PodModels:
    """A pod's models, or why they could not be read."""

    pod: PodTarget
    models: tuple[ModelReport, ...] = ()
    error: str | None = None


def _model_reports(payload: Any) -> tuple[ModelReport, ...]:
    entries = payload.get("models") if isinstance(payload, dict) else payload
    if not isinstance(entries, list):
        raise _PodError(f"GET {MODELS_PATH} holds no list of models")
    reports = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _PodError(f"GET {MODELS_PATH} holds a model without a name: {str(entry)[:100]}")
        device, error = entry.get("device"), entry.get("error")
        reports.append(
            ModelReport(
                name=entry["name"],
                state=str(entry.get("state") or "unknown"),
                device=device if isinstance(device, str) and device else None,
                error=str(error) if error else None,
            )
        )
    return tuple(reports)


async def _read_pod_models(client: httpx.AsyncClient, pod: PodTarget) -> PodModels:
    try:
        response = await client.get(pod_url(pod, MODELS_PATH))
        if response.status_code != 200:
            raise _PodError(_refusal(response, f"GET {MODELS_PATH}"))
        try:
            payload: Any = response.json()
        except ValueError:
            raise _PodError(f"GET {MODELS_PATH} answered something other than JSON") from None
        return PodModels(pod, _model_reports(payload))
    except httpx.HTTPError as exc:
        return PodModels(pod, error=_describe(exc))
    except _PodError as exc:
        return PodModels(pod, error=str(exc))


async def read_models(
    pods: Iterable[PodTarget], *, timeout_s: float = 5.0, client: httpx.AsyncClient | None = None
) -> list[PodModels]:
    """Each pod's models (state, device, error), in the order given; never raises."""
    targets = list(pods)
    if not targets:
        return []
    if client is not None:
        return list(await asyncio.gather(*(_read_pod_models(client, pod) for pod in targets)))
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as own:
        return list(await asyncio.gather(*(_read_pod_models(own, pod) for pod in targets)))

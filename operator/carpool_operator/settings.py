"""Settings of the operator process: one typed tree, read once at start and passed explicitly.

`OperatorConfig` holds what the operator itself decides (the default serving image, how often the
periodic pass runs, how long a config push may take, the retry back-off); `tune_kopf()` turns it
into Kopf's own settings. Nothing here reads the environment at import time: `from_env()` is
called by `carpool operator`, and tests build an `OperatorConfig` directly with short intervals.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import kopf

__all__ = [
    "DEFAULT_SERVING_GPU_IMAGE",
    "DEFAULT_SERVING_IMAGE",
    "FIELD_PREFIX",
    "OperatorConfig",
    "tune_kopf",
]

DEFAULT_SERVING_IMAGE = "ghcr.io/carpool-dev/carpool-serving:0.1.0"
"""The image a policy's pods run when neither spec.serving.image nor CARPOOL_SERVING_IMAGE says."""

DEFAULT_SERVING_GPU_IMAGE = "ghcr.io/carpool-dev/carpool-serving:0.1.0-cuda"
"""The CUDA build of the serving image (Dockerfile.serving with a CUDA TORCH_INDEX_URL), which the
pods of a policy with spec.serving.gpu run unless spec.serving.image or CARPOOL_SERVING_GPU_IMAGE says."""

FIELD_PREFIX = "carpool.dev"
"""Prefix of the operator's labels, annotations and finalizer."""


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What the operator process needs besides the policies themselves."""

    serving_image: str = DEFAULT_SERVING_IMAGE
    """Image of the serving pods when a policy's spec.serving.image is empty (CARPOOL_SERVING_IMAGE)."""

    serving_gpu_image: str = DEFAULT_SERVING_GPU_IMAGE
    """Image of the serving pods of a policy with spec.serving.gpu, when spec.serving.image is empty
    (CARPOOL_SERVING_GPU_IMAGE): a build with CUDA torch."""

    image_pull_secrets: tuple[str, ...] = ()
    """Secrets the serving pods pull their image with (CARPOOL_IMAGE_PULL_SECRETS, comma separated)."""

    kubeconfig: Path | None = None
    """A kubeconfig file; None means in-cluster credentials, then $KUBECONFIG or ~/.kube/config."""

    resync_interval_s: float = 30.0
    """How often the periodic pass restores children and corrects pods that missed a push."""

    autoscale_interval_s: float = 15.0
    """How often the autoscaler queries Prometheus for each autoscaled policy (HPA's sync period)."""

    experiment_interval_s: float = 30.0
    """How often the figures of a running experiment (status.experiment) are read from Prometheus."""

    push_timeout_s: float = 5.0
    """Per pod and per HTTP call of a config push (POST /batching/configure, GET /batching/stats)."""

    api_timeout_s: float = 30.0
    """Per call to the Kubernetes API (CARPOOL_OPERATOR_API_TIMEOUT_SECONDS); a call that takes longer
    fails the pass, which is retried with back-off."""

    retry_base_delay_s: float = 2.0
    """First retry delay of a failed reconcile; it doubles at each retry up to retry_max_delay_s."""

    retry_max_delay_s: float = 60.0
    """Longest delay between two retries of a failed reconcile."""

    retries: int = 8
    """Retries of one change before the periodic pass alone keeps trying."""

    def __post_init__(self) -> None:
        for name in (
            "resync_interval_s",
            "autoscale_interval_s",
            "experiment_interval_s",
            "push_timeout_s",
            "api_timeout_s",
            "retry_base_delay_s",
            "retry_max_delay_s",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries!r}")

    def retry_delay(self, retry: int, *, first_s: float | None = None) -> float:
        """Exponential back-off for the `retry`-th retry (0-based): `first_s` (retry_base_delay_s
        unless given), doubling, capped at retry_max_delay_s but never shorter than `first_s`.

        The reconciler starts from retry_base_delay_s. The autoscaler starts from its own interval
        (autoscale_interval_s): Kopf runs a failed timer again after the error's delay instead of
        its interval, and a failing autoscaler must not query Prometheus more often than a
        healthy one.
        """
        first = self.retry_base_delay_s if first_s is None else first_s
        return float(min(first * 2 ** min(retry, 30), max(first, self.retry_max_delay_s)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> OperatorConfig:
        """Read CARPOOL_SERVING_IMAGE, CARPOOL_SERVING_GPU_IMAGE, CARPOOL_IMAGE_PULL_SECRETS,
        CARPOOL_OPERATOR_RESYNC_SECONDS, CARPOOL_OPERATOR_PUSH_TIMEOUT_SECONDS,
        CARPOOL_OPERATOR_AUTOSCALE_SECONDS, CARPOOL_OPERATOR_API_TIMEOUT_SECONDS and KUBECONFIG;
        keyword overrides win when not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if environ.get("CARPOOL_SERVING_IMAGE", "").strip():
            values["serving_image"] = environ["CARPOOL_SERVING_IMAGE"].strip()
        if environ.get("CARPOOL_SERVING_GPU_IMAGE", "").strip():
            values["serving_gpu_image"] = environ["CARPOOL_SERVING_GPU_IMAGE"].strip()
        secrets = [s.strip() for s in environ.get("CARPOOL_IMAGE_PULL_SECRETS", "").split(",") if s.strip()]
        if secrets:
            values["image_pull_secrets"] = tuple(secrets)
        for env_name, field in (
            ("CARPOOL_OPERATOR_RESYNC_SECONDS", "resync_interval_s"),
            ("CARPOOL_OPERATOR_PUSH_TIMEOUT_SECONDS", "push_timeout_s"),
            ("CARPOOL_OPERATOR_AUTOSCALE_SECONDS", "autoscale_interval_s"),
            ("CARPOOL_OPERATOR_API_TIMEOUT_SECONDS", "api_timeout_s"),
        ):
            raw = environ.get(env_name, "").strip()
            if raw:
                try:
                    values[field] = float(raw)
                except ValueError:
                    raise ValueError(f"{env_name} must be a number of seconds, got {raw!r}") from None
        if environ.get("KUBECONFIG", "").strip():
            values["kubeconfig"] = Path(environ["KUBECONFIG"].split(os.pathsep)[0])
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


def tune_kopf(settings: kopf.OperatorSettings, *, standalone: bool = True) -> None:
    """Kopf settings the operator relies on.

    - Progress and diff-base go to annotations only: the CRD's strict schema would prune the
      `status.kopf` field that Kopf writes by default (Kopf docs, "Configuration: Handling progress").
    - Kopf posts its own log lines as Events from INFO up by default; the operator posts its own
      Events for pushes and failures, so only Kopf's warnings and errors become Events.
    - One operator replica: no peering objects are needed (the chart runs one replica).
    - No runtime scanning of namespaces and CRDs (it needs cluster-wide list/watch on both): the
      CRD is discovered at start, so it must be installed first, as Helm does with crds/.
    """
    settings.persistence.finalizer = f"{FIELD_PREFIX}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=FIELD_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=FIELD_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "carpool-operator"
    settings.peering.standalone = standalone
    settings.scanning.disabled = True

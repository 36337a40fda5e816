"""Settings of the serving pod: one typed definition per knob.

`BatchingConfig` is the single definition of the batching knobs: each field carries its type,
default, bounds and description, and a `Knob` naming its environment variable and its path in the
BatchingPolicy custom resource. Everything else is derived from it: `ENV_BY_FIELD` (the guide's
variables, `BATCHING_STRATEGY`, `MAX_BATCH_SIZE`, ...), `PATH_BY_FIELD` (the operator reads
`spec.batching.maxBatchSize` and writes its errors there), the body of `POST /batching/configure`
(`serving.api.schemas.ConfigureRequest`) and its OpenAPI schema; a test holds the CRD to it. So
the pod, its API and the operator cannot drift apart. `config_hash()` is what `/batching/stats`
reports and what the operator compares after a push.

This module imports nothing heavier than pydantic: the operator image (no torch) imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from serving import validation

__all__ = [
    "BODY_IDLE_TIMEOUT_S",
    "DRAIN_BOUND_S",
    "ENV_BY_FIELD",
    "HEADER_TIMEOUT_S",
    "KNOBS",
    "PATH_BY_FIELD",
    "PRESTOP_PAUSE_S",
    "RUNTIMES",
    "BatchingConfig",
    "Knob",
    "RuntimeName",
    "ServerSettings",
    "Strategy",
    "format_model_batching",
    "parse_model_batching",
    "parse_model_runtimes",
    "parse_model_specs",
]

RuntimeName = Literal["auto", "torch", "onnx", "onnx-int8"]
RUNTIMES: tuple[RuntimeName, ...] = ("auto", "torch", "onnx", "onnx-int8")


# Connection and shutdown bounds, shared by the pod and the operator that sizes its Deployment. A
# client whose body stalls for BODY_IDLE_TIMEOUT_S gets 408, and so does one whose request head
# (request line and headers) takes longer than HEADER_TIMEOUT_S. On SIGTERM a pod sends every held
# batch at once and answers what it accepted; whatever an HTTP worker still holds after
# DRAIN_BOUND_S is cancelled.
# Kubernetes first runs the preStop pause (PRESTOP_PAUSE_S, so Services stop routing new
# connections to the pod before its listener closes), then sends SIGTERM; the grace period covers
# both, plus a margin: `termination_grace_s()`.
BODY_IDLE_TIMEOUT_S = 5.0
HEADER_TIMEOUT_S = 10.0
DRAIN_BOUND_S = 30
PRESTOP_PAUSE_S = 5
_GRACE_MARGIN_S = 5


DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def termination_grace_s() -> int:
    """terminationGracePeriodSeconds for a serving pod: the preStop pause, the drain bound, a margin."""
    return PRESTOP_PAUSE_S + DRAIN_BOUND_S + _GRACE_MARGIN_S


class Strategy(StrEnum):
    SINGLE_REQUEST = "single_request"
    BATCH_OPTIMIZED = "batch_optimized"
    ADAPTIVE = "adaptive"


@dataclasses.dataclass(frozen=True, slots=True)
class Knob:
    """Where a batching knob is set outside the HTTP API (field metadata of `BatchingConfig`)."""

    env: str
    """The environment variable the pod reads at start (the guide's name)."""
    path: str
    """Its path under the BatchingPolicy's `spec`, in the CR's camelCase (`batching.maxBatchSize`)."""


class BatchingConfig(BaseModel):
    """The batching configuration in force; every change applies at the next batch."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    enable: Annotated[bool, Knob("ENABLE_DYNAMIC_BATCHING", "batching.enabled")] = Field(
        True, description="Dynamic batching on. Off means every request runs alone (single_request)."
    )
    strategy: Annotated[Strategy, Knob("BATCHING_STRATEGY", "strategy")] = Field(
        Strategy.ADAPTIVE, description="single_request, batch_optimized or adaptive."
    )
    max_batch_size: Annotated[int, Knob("MAX_BATCH_SIZE", "batching.maxBatchSize")] = Field(
        32, ge=1, le=1024, description="Cap on requests per model call; the engine may take fewer."
    )
    max_wait_time_ms: Annotated[float, Knob("MAX_WAIT_TIME_MS", "batching.maxWaitTimeMs")] = Field(
        10.0, ge=0, le=60_000, description="How long the oldest queued request may wait for a batch to fill."
    )
    min_batch_size: Annotated[int, Knob("MIN_BATCH_SIZE", "batching.minBatchSize")] = Field(
        1,
        ge=1,
        le=1024,
        description="Requests to gather before a partial batch leaves; "
        "held at most one more max_wait_time_ms.",
    )
    max_queue_size: Annotated[int, Knob("MAX_QUEUE_SIZE", "batching.maxQueueSize")] = Field(
        256,
        ge=1,
        le=1_000_000,
        description="Requests queued per model; more wait up to 250 ms in line for room, then get 429.",
    )
    load_threshold: Annotated[float, Knob("LOAD_THRESHOLD", "adaptive.loadThreshold")] = Field(
        0.7, gt=0, le=1, description="adaptive: device busy fraction above which it batches."
    )
    latency_threshold_ms: Annotated[float, Knob("LATENCY_THRESHOLD_MS", "adaptive.latencyThresholdMs")] = (
        Field(
            200.0, gt=0, le=600_000, description="adaptive: p95 latency above which it never holds a batch."
        )
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        """The one cross-field rule (the CRD's CEL rule says the same; a test holds them together)."""
        if self.min_batch_size > self.max_batch_size:
            raise validation.Conflict(
                "{min_batch_size} must be <= {max_batch_size}",
                min_batch_size=self.min_batch_size,
                max_batch_size=self.max_batch_size,
            )
        return self

    @property
    def effective_strategy(self) -> Strategy:
        """The strategy that runs: single_request whenever batching is disabled."""
        return self.strategy if self.enable else Strategy.SINGLE_REQUEST

    def updated(self, changes: Mapping[str, Any]) -> BatchingConfig:
        """A new config with `changes` applied; raises pydantic.ValidationError naming the bad field."""
        return BatchingConfig.model_validate({**self.model_dump(), **changes})

    def config_hash(self) -> str:
        """A stable short hash of the config, the same in the pod and in the operator."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BatchingConfig:
        """Read the guide's environment variables; unset ones keep their defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, env_name in ENV_BY_FIELD.items():
            raw = environ.get(env_name)
            if raw is not None and raw.strip() != "":
                values[field] = raw.strip()
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(validation.message(exc.errors(), ENV_BY_FIELD.__getitem__)) from exc

    def to_env(self) -> dict[str, str]:
        """The guide's environment variables that reproduce this config (for the operator's ConfigMap)."""
        dumped = self.model_dump(mode="json")
        return {
            env_name: (str(dumped[field]).lower() if isinstance(dumped[field], bool) else str(dumped[field]))
            for field, env_name in ENV_BY_FIELD.items()
        }


def _knob(field: str, info: FieldInfo) -> Knob:
    knobs = [item for item in info.metadata if isinstance(item, Knob)]
    if len(knobs) != 1:
        raise TypeError(f"BatchingConfig.{field} must carry one Knob (its env name and CR path)")
    return knobs[0]


KNOBS: dict[str, Knob] = {field: _knob(field, info) for field, info in BatchingConfig.model_fields.items()}
"""Each batching field's `Knob`, in declaration order."""

ENV_BY_FIELD: dict[str, str] = {field: knob.env for field, knob in KNOBS.items()}
"""Each batching field's environment variable."""

PATH_BY_FIELD: dict[str, str] = {field: knob.path for field, knob in KNOBS.items()}
"""Each batching field's path under the BatchingPolicy's spec."""


def _env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def parse_model_specs(specs: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """Parse `NAME=PATH` items (from --model or CARPOOL_MODELS, comma separated) into a mapping."""
    models: dict[str, Path] = {}
    for spec in specs:
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"a model is given as NAME=PATH, got {item!r}")
            models[name.strip()] = Path(path.strip())
    return models


def parse_model_runtimes(raw: str) -> dict[str, RuntimeName]:
    """Parse `CARPOOL_MODEL_RUNTIMES` ("name=runtime,name=runtime") into per-model runtimes."""
    runtimes: dict[str, RuntimeName] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, runtime = (part.strip() for part in item.partition("="))
        if not sep or not name or not runtime:
            raise ValueError(f"CARPOOL_MODEL_RUNTIMES takes NAME=RUNTIME items, got {item!r}")
        runtimes[name] = _runtime(runtime, f"CARPOOL_MODEL_RUNTIMES ({name})")
    return runtimes


DEFAULT_MODEL_ALIASES = {"bert-base": "minilm", "bert-base_trained": "minilm_trained"}


def parse_model_aliases(raw: str) -> dict[str, str]:
    """Parse `CARPOOL_MODEL_ALIASES` ("alias=model,alias=model"; empty: no aliases)."""
    aliases: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        alias, sep, target = (part.strip() for part in item.partition("="))
        if not sep or not alias or not target:
            raise ValueError(f"CARPOOL_MODEL_ALIASES takes ALIAS=MODEL items, got {item!r}")
        if alias == target:
            raise ValueError(f"CARPOOL_MODEL_ALIASES: {alias!r} cannot be an alias of itself")
        aliases[alias] = target
    return aliases


def parse_model_batching(raw: str, base: BatchingConfig | None = None) -> dict[str, dict[str, str]]:
    """Parse `CARPOOL_MODEL_BATCHING` ("name:max_batch_size=16,max_wait_time_ms=5;other:enable=false")
    into each model's batching fields, as `BatchingConfig` field names and their text.

    Each model's fields are checked over `base` (its bounds and the min <= max rule), so a bad
    override stops the pod at start naming the model and the field; the model names are checked
    against the models found, later (`ModelPool.from_models`).
    """
    base = BatchingConfig.model_validate({}) if base is None else base
    overrides: dict[str, dict[str, str]] = {}
    for entry in (part.strip() for part in raw.split(";")):
        if not entry:
            continue
        name, sep, body = (part.strip() for part in entry.partition(":"))
        if not sep or not name:
            raise ValueError(
                f"CARPOOL_MODEL_BATCHING takes NAME:FIELD=VALUE,... items separated by ';', got {entry!r}"
            )
        fields: dict[str, str] = {}
        for item in (part.strip() for part in body.split(",")):
            if not item:
                continue
            field, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not value:
                raise ValueError(f"CARPOOL_MODEL_BATCHING ({name}) takes FIELD=VALUE items, got {item!r}")
            if field not in KNOBS:
                raise ValueError(
                    f"CARPOOL_MODEL_BATCHING ({name}): unknown batching field {field!r}; "
                    f"known: {', '.join(KNOBS)}"
                )
            fields[field] = value
        if name in overrides:
            raise ValueError(f"CARPOOL_MODEL_BATCHING names model {name!r} twice")
        try:
            base.updated(fields)
        except ValidationError as exc:
            told = validation.message(exc.errors(), f"{name}.{{}}".format)
            raise ValueError(f"CARPOOL_MODEL_BATCHING: {told}") from None
        overrides[name] = fields
    return overrides


def format_model_batching(overrides: Mapping[str, Mapping[str, Any]]) -> str:
    """`CARPOOL_MODEL_BATCHING`'s text for per-model fields (what `parse_model_batching` reads)."""
    return ";".join(
        f"{name}:" + ",".join(f"{field}={_env_text(value)}" for field, value in fields.items())
        for name, fields in overrides.items()
        if fields
    )


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, StrEnum):
        return value.value
    return str(value)


def _runtime(raw: str, where: str) -> RuntimeName:
    for runtime in RUNTIMES:
        if raw == runtime:
            return runtime
    raise ValueError(f"{where}: runtime must be one of {', '.join(RUNTIMES)}, got {raw!r}")


class ServerSettings(BaseModel):
    """Everything `carpool serve` needs besides the batching knobs; see the README's table."""

    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    models: dict[str, Path] = Field(default_factory=dict, description="Explicit NAME -> PATH models.")
    models_dir: Path | None = Field(None, description="Directory whose sub-directories are models.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    devices: list[str] | None = Field(
        None,
        description="Devices to replicate every model on (CARPOOL_DEVICES=cuda:0,cuda:1); over `device`. "
        "Unset: every visible GPU when `device` is auto or cuda, else `device` alone.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: float16 on CUDA, float32 on CPU."
    )
    admin_token: str | None = Field(
        None,
        description="Bearer token /batching/configure requires (CARPOOL_ADMIN_TOKEN), stripped of "
        "surrounding whitespace. Set but blank refuses to start; unset leaves configure open (logged).",
    )
    request_timeout_ms: float | None = Field(
        None,
        gt=0,
        le=3_600_000,
        description="Default deadline of a request (CARPOOL_REQUEST_TIMEOUT_MS): queued longer, it is "
        "dropped before the model and answered 504. A request's X-Request-Timeout-Ms header or "
        "timeout_ms field may shorten it, never lengthen it. Unset: requests without their own wait.",
    )
    enable_metrics: bool = True
    enable_logging: bool = True
    access_log: bool = Field(
        False,
        description="One log line per HTTP request (CARPOOL_ACCESS_LOG). Off by default: at thousands of "
        "requests per second the lines cost a sixth of a worker's CPU; /metrics counts every request.",
    )
    max_text_chars: int = Field(20_000, ge=1, description="Longer texts are refused with 413.")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per text fed to the model (truncated).")
    workers: int | Literal["auto"] = Field(
        "auto",
        description="HTTP worker processes in front of the one model process; 0 serves HTTP from the "
        "model process itself. auto: one per CPU the pod may use, less one for the model process.",
    )
    runtime: RuntimeName = Field(
        "auto", description="Default runtime of every model: auto, torch, onnx (float32) or onnx-int8."
    )
    model_runtimes: dict[str, RuntimeName] = Field(
        default_factory=dict, description="Per-model runtimes (CARPOOL_MODEL_RUNTIMES), over `runtime`."
    )
    cache_dir: Path | None = Field(
        None, description="Where exported ONNX models are kept; default: beside each model."
    )
    model_aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_ALIASES),
        description="Other names of served models (CARPOOL_MODEL_ALIASES=alias=model,...; set but "
        "empty: none). Default: the guide's bert-base and bert-base_trained for minilm and "
        "minilm_trained. An alias of a model not served, or named like a served model, is ignored.",
    )
    variant: str = Field(
        "",
        max_length=63,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        description="The experiment variant this pod runs (CARPOOL_VARIANT, set by the operator): "
        "every metric then carries a `variant` label. Empty: no such label.",
    )
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig.model_validate({}))
    model_batching: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-model batching fields over `batching` (CARPOOL_MODEL_BATCHING), by model name.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from the environment; keyword overrides (command-line flags) win when not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "batching": BatchingConfig.from_env(environ),
            "enable_metrics": _env_flag(environ, "ENABLE_METRICS", True),
            "enable_logging": _env_flag(environ, "ENABLE_LOGGING", True),
            "access_log": _env_flag(environ, "CARPOOL_ACCESS_LOG", False),
        }
        if environ.get("CARPOOL_MODELS"):
            values["models"] = parse_model_specs([environ["CARPOOL_MODELS"]])
        if environ.get("CARPOOL_MODEL_RUNTIMES"):
            values["model_runtimes"] = parse_model_runtimes(environ["CARPOOL_MODEL_RUNTIMES"])
        if "CARPOOL_MODEL_ALIASES" in environ:
            values["model_aliases"] = parse_model_aliases(environ["CARPOOL_MODEL_ALIASES"])

        if environ.get("CARPOOL_MODEL_BATCHING"):
            values["model_batching"] = parse_model_batching(
                environ["CARPOOL_MODEL_BATCHING"], values["batching"]
            )
        if environ.get("CARPOOL_DEVICES", "").strip():
            values["devices"] = [part.strip() for part in environ["CARPOOL_DEVICES"].split(",")]
        if environ.get("CARPOOL_RUNTIME"):
            values["runtime"] = _runtime(environ["CARPOOL_RUNTIME"].strip(), "CARPOOL_RUNTIME")
        simple = {
            "models_dir": "CARPOOL_MODELS_DIR",
            "device": "CARPOOL_DEVICE",
            "dtype": "CARPOOL_DTYPE",
            "admin_token": "CARPOOL_ADMIN_TOKEN",
            "max_text_chars": "CARPOOL_MAX_TEXT_CHARS",
            "max_length": "CARPOOL_MAX_LENGTH",
            "host": "CARPOOL_HOST",
            "port": "CARPOOL_PORT",
            "workers": "CARPOOL_WORKERS",
            "cache_dir": "CARPOOL_CACHE_DIR",
            "request_timeout_ms": "CARPOOL_REQUEST_TIMEOUT_MS",
            "variant": "CARPOOL_VARIANT",
        }
        for field, env_name in simple.items():
            raw = environ.get(env_name)
            if raw:
                values[field] = raw
        if "CARPOOL_ADMIN_TOKEN" in environ:  # set but blank is refused, never read as "no token"
            values["admin_token"] = environ["CARPOOL_ADMIN_TOKEN"]
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()  # `kubectl create secret --from-file` keeps the file's newline
            if not value:
                raise ValueError(
                    "CARPOOL_ADMIN_TOKEN is set but blank; set a token, or unset the variable to leave "
                    "/batching/configure open"
                )
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for device in value:
            if not DEVICE.fullmatch(device):
                raise ValueError(f"CARPOOL_DEVICES: each device must be cpu, cuda or cuda:N, got {device!r}")
        if not value:
            raise ValueError("CARPOOL_DEVICES names no device")
        return value

    def placement(self, cuda_devices: int) -> list[str]:
        """The devices each model is replicated on (one engine thread each), given how many CUDA
        devices torch sees: CARPOOL_DEVICES as set; else, for `device` auto or cuda (no index) and
        more than one GPU, every one of them; else `device` alone."""
        if self.devices:
            return list(self.devices)
        if self.device in ("auto", "cuda") and cuda_devices > 1:
            return [f"cuda:{index}" for index in range(cuda_devices)]
        return [self.device]

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "auto":
            if not value.strip().isdigit():
                raise ValueError(f"CARPOOL_WORKERS must be a whole number >= 0 or 'auto', got {value!r}")
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"workers must be >= 0 or 'auto', got {value}")
        return value.strip().lower() if isinstance(value, str) else value

    def worker_count(self, usable_cpus: int) -> int:
        """HTTP worker processes to start: as set, or for `auto` one per usable CPU less one (min 1)."""
        if self.workers == "auto":
            return max(1, usable_cpus - 1)
        return self.workers

    def runtime_for(self, model: str) -> RuntimeName:
        """The runtime asked for `model`: its own (CARPOOL_MODEL_RUNTIMES) or the default."""
        return self.model_runtimes.get(model, self.runtime)

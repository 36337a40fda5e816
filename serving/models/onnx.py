"""A Hugging Face classifier served by the runtime `serving.models.runtime` picks for it.

`RuntimeClassifier` is an `hf.HFClassifier` (same tokenizer path, same padding, same predictions)
whose forward pass may run in ONNX Runtime. On `load()` it loads the torch model as usual, then walks
the candidate runtimes: for an ONNX one it exports the model once (torch.onnx's TorchScript exporter,
opset 17, batch and sequence dynamic; int8 by ONNX Runtime's dynamic quantisation of that export,
per output channel) into a cache keyed by a digest of the model files, reuses the export on later
starts, and checks it against torch on the probe texts. The first candidate that passes serves;
torch ends every list.

The cache lives in `cache_dir` (CARPOOL_CACHE_DIR) when given, else in `.carpool-onnx/` inside the
model's directory when that is writable (so a trained model carries its export), else in
`$XDG_CACHE_HOME/carpool` (~/.cache/carpool). Files are written under a temporary name and renamed,
so pods sharing a cache never read half an export.

Why the TorchScript exporter: torch 2.13's default (torch.export-based) exporter produces a graph
whose stored shapes ONNX Runtime's quantiser rejects ("Inferred shape and existing shape differ"),
measured on MiniLM; the TorchScript exporter's graph quantises and runs as fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving import hardware
from serving.models import hf
from serving.models import runtime as runtimes

__all__ = ["CACHE_SUBDIR", "OPSET", "RuntimeClassifier", "default_cache_root", "onnx_available"]

log = logging.getLogger("carpool.runtime")

OPSET = 17
CACHE_SUBDIR = ".carpool-onnx"
_EXPORT_FORMAT = "torchscript-export-v2"  # bump when the export itself changes
_MODEL_FILES = ("config.json", "*.safetensors", "*.bin")


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_root(model_path: Path, *, embedded: bool) -> Path:
    """Beside the model when its directory is writable (and not a packaged model), else the user cache."""
    if not embedded and os.access(model_path, os.W_OK):
        return model_path / CACHE_SUBDIR
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carpool"


class RuntimeClassifier(hf.HFClassifier):
    """An HFClassifier whose forward pass runs in the runtime chosen at load (see module docstring)."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        runtime: str = "auto",
        cache_dir: Path | None = None,
        card: Mapping[str, Any] | None = None,
        embedded: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, path, **options)
        self.requested_runtime = runtime
        self.runtime: runtimes.Runtime = "torch"
        self.cache_dir = cache_dir
        self.card = card
        self.embedded = embedded
        self.checks: list[runtimes.Check] = []
        self.refusals: list[str] = []
        self.reason = ""
        self.export: dict[str, Any] | None = None
        self._session: Any = None
        self._cache_folder: Path | None = None  # the model files' digest is taken once per load

    # -- load: torch first, then the runtime ---------------------------------------------------

    def load(self) -> None:
        super().load()
        self.checks, self.refusals, self.export, self._cache_folder = [], [], None, None
        cuda_provider = False
        if self.device.startswith("cuda") and onnx_available():
            import onnxruntime

            cuda_provider = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        options = runtimes.candidates(
            self.requested_runtime,
            device=self.device,
            card=self.card,
            untrained_head=self.untrained_head,
            cuda_provider=cuda_provider,
        )
        if self.requested_runtime == "auto":
            for name, why in runtimes.refused_by_card(self.card).items():
                self.refusals.append(f"{name}: {why}")
                log.info("model %s: auto does not take %s: %s", self.name, name, why)
        for candidate in options:
            if candidate.runtime == "torch":
                self._use_torch(candidate.reason)
                return
            if self._try(candidate):
                return

    def _use_torch(self, reason: str) -> None:
        self.runtime, self.reason, self._session = "torch", reason, None
        fallback = f" (after refusing {'; '.join(self.refusals)})" if self.refusals else ""
        log.info(
            "model %s: runtime torch (%s, %s): %s%s", self.name, self.device, self.dtype, reason, fallback
        )

    def _try(self, candidate: runtimes.Candidate) -> bool:
        name = candidate.runtime
        if not onnx_available():
            self._refuse(name, "onnxruntime is not installed (pip install 'carpool[serving]')")
            return False
        try:
            session = self._session_for(name)
            check = self._check(name, session)
        except Exception as exc:  # an exporter, quantiser or session failure refuses the runtime only
            log.exception("model %s: %s could not be exported or run", self.name, name)
            self._refuse(name, f"export or first run failed: {exc}")
            return False
        self.checks.append(check)
        if not check.passed:
            self._refuse(name, f"probe check {check.verdict()}")
            return False
        self.runtime, self.reason, self._session = name, candidate.reason, session
        log.info(
            "model %s: runtime %s (%s): %s; probe check %s",
            self.name,
            name,
            ", ".join(session.get_providers()),
            candidate.reason,
            check.verdict(),
        )
        return True

    def _refuse(self, name: str, why: str) -> None:
        self.refusals.append(f"{name}: {why}")
        log.warning("model %s: runtime %s refused: %s", self.name, name, why)

    # -- export and cache ------------------------------------------------------------------------

    def cache_path(self, name: runtimes.Runtime) -> Path:
        """Where the export for runtime `name` lives (it may not exist yet)."""
        if self._cache_folder is None:
            self._cache_folder = self._cache_folder_for_files()
        return self._cache_folder / f"{name}.onnx"

    def _cache_folder_for_files(self) -> Path:
        import onnxruntime
        import torch

        files = [p for pattern in _MODEL_FILES for p in self.path.glob(pattern) if p.is_file()]
        extra = [
            _EXPORT_FORMAT,
            f"opset{OPSET}",
            f"torch{torch.__version__}",
            f"onnxruntime{onnxruntime.__version__}",
            f"head{self.head_labels}:{self.head_seed}" if self.head_labels else "head:saved",
        ]
        key = runtimes.cache_key(files, extra)
        root = self.cache_dir or default_cache_root(self.path, embedded=self.embedded)
        return root / key  # content only: the same files under another name or path share it

    def _session_for(self, name: runtimes.Runtime) -> Any:
        import onnxruntime

        path = self.cache_path(name)
        cached = path.is_file()
        started = time.perf_counter()
        if not cached:
            path.parent.mkdir(parents=True, exist_ok=True)
            float_path = self.cache_path("onnx")
            if not float_path.is_file():
                log.info(
                    "model %s: exporting to ONNX into %s (first start only; later starts reuse it)",
                    self.name,
                    float_path.parent,
                )
                self._export(float_path)
            if name == "onnx-int8":
                log.info("model %s: quantising the export to int8 (first start only)", self.name)
                _quantise(float_path, path)
            log.info("model %s: %s export ready in %.1f s", self.name, name, time.perf_counter() - started)
        self.export = {
            "path": str(path),
            "cached": cached,
            "seconds": round(time.perf_counter() - started, 2),
        }
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            index = int(self.device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            preload = getattr(onnxruntime, "preload_dlls", None)  # CUDA/cuDNN from the nvidia-* wheels
            if callable(preload):
                preload()
        else:
            options.intra_op_num_threads = hardware.usable_cpus()
            # Idle workers sleep instead of spinning: a spinning pool takes the CPU the event loop
            # needs between batches. Measured with minilm_trained in onnx-int8 on 2 busy cores, five
            # interleaved rounds: 64 clients 164-188 texts/s sleeping vs 65-130 spinning, and one
            # client's p50 6.9-8.1 ms vs 5.4-16.4 ms.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        if self.device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
            # ONNX Runtime silently runs on the CPU when its CUDA provider cannot start.
            raise RuntimeError("the CUDA provider of onnxruntime did not start (CUDA or cuDNN missing?)")
        return session

    def _export(self, target: Path) -> None:
        torch = self._torch
        moved = self.dtype != "float32" or self.device != "cpu"
        if moved:  # export the float32 CPU graph; Module.to() works in place, undone below
            self._model.to("cpu", torch.float32)

        module: Any = torch.nn.Module

        class Logits(module):  # type: ignore[misc]
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

        # Trace with padding in the batch, so the mask path is the one recorded.
        ids = torch.full((2, 16), int(self._reference.cls_token_id or 101), dtype=torch.long)
        mask = torch.ones((2, 16), dtype=torch.long)
        mask[1, 9:] = 0
        try:
            self._export_traced(target, Logits(self._model).eval(), ids, mask)
        finally:
            if moved:
                self._model.to(self.device, getattr(torch, self.dtype))

    def _export_traced(self, target: Path, module: Any, ids: Any, mask: Any) -> None:
        torch = self._torch
        with _temporary(target) as scratch, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer and deprecation notes
            torch.onnx.export(
                module,
                (ids, mask),
                str(scratch),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "logits": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )

    # -- the accuracy check ----------------------------------------------------------------------

    def _check(self, name: runtimes.Runtime, session: Any) -> runtimes.Check:
        """Logits of the probe texts, batched and one by one, against torch's batched logits."""
        rows = [self.encode(text).ids for text in runtimes.PROBE_TEXTS]
        reference = super()._logits(*self._pad(rows)).cpu().tolist()
        batched = self._session_logits(session, rows).tolist()
        alone = [self._session_logits(session, [row])[0].tolist() for row in rows]
        tolerance = runtimes.TOLERANCE[name]
        if self.dtype in {"float16", "bfloat16"}:
            tolerance += runtimes.CHECK_DTYPE_SLACK
        return runtimes.judge(
            name, reference, [batched, alone], tolerance=tolerance, labels_judged=not self.untrained_head
        )

    # -- forward ---------------------------------------------------------------------------------

    def _session_logits(self, session: Any, rows: Sequence[Sequence[int]]) -> Any:
        length = max(len(row) for row in rows)
        ids = np.full((len(rows), length), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return logits.astype(np.float32, copy=False)

    def _probabilities(self, rows: Sequence[Sequence[int]]) -> list[list[float]]:
        if self._session is None:
            return super()._probabilities(rows)
        logits = self._session_logits(self._session, rows)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs: list[list[float]] = (shifted / shifted.sum(axis=1, keepdims=True)).tolist()
        return probs

    def logits(self, rows: Sequence[Sequence[int]]) -> Any:
        """Raw logits (numpy) of padded `rows` in the runtime in force (bench references, training)."""
        if self._session is None:
            ids, mask = self._pad(rows)
            return super()._logits(ids, mask).cpu().numpy()
        return self._session_logits(self._session, rows)

    @property
    def session(self) -> Any:
        """The ONNX Runtime session serving the model, or None when torch does."""
        return self._session

    def _choose_threads(self) -> None:
        if self._session is None:
            super()._choose_threads()
        else:  # ONNX Runtime sizes its own pool, which sleeps when idle; torch runs nothing here
            self.torch_threads, self.torch_threads_reason = None, ""

    def verify(self) -> None:
        super().verify()  # our tokenizer path against Hugging Face's, in torch
        if self._session is not None:
            self._model = None  # ONNX Runtime serves: torch's copy of the weights is not needed

    def describe(self) -> dict[str, Any]:
        """What /models/status shows about the runtime: choice, reason, checks, fallbacks, export."""
        return {
            "runtime": self.runtime,
            "runtime_requested": self.requested_runtime,
            "runtime_reason": self.reason,
            "runtime_checks": [check.as_dict() for check in self.checks],
            "runtime_fallback": list(self.refusals),
            "runtime_export": self.export,
        }


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quant_log = logging.getLogger()  # the quantiser advises pre-processing through the root logger
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)
    try:
        with _temporary(target) as scratch:
            # Per-channel weight scales: per-tensor ones moved minilm_trained's logits 2.5x further
            # and cost 0.4 point of held-out macro-F1; per-channel changed no held-out label.
            quantize_dynamic(source, scratch, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        quant_log.setLevel(level)


@contextlib.contextmanager
def _temporary(target: Path) -> Any:
    """A scratch file beside `target`, renamed onto it when the block succeeds."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    scratch = Path(name)
    try:
        yield scratch
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)

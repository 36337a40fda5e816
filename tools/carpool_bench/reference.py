"""The raw model's own speed on the bench's texts, measured in-process: the yardsticks for serving.

Why in-process and plain: a served figure means little alone. The same model files, texts, device
and torch threads, driven by the plainest transformers calls (AutoTokenizer with padding=True,
AutoModelForSequenceClassification under torch.inference_mode), give what the hardware does with
no server at all. Three references:

- batch size 1: tokenize and forward each text alone; texts/s and the per-text p50.
- max batch size, sorted: all texts sorted by token length, then cut into batches. Padding is
  minimal, so this is the ceiling for this traffic on this machine.
- max batch size, arrival order: batches cut from the texts as they come; shows what padding costs.

And the model fed from a queue that is always full (`RawModel.fed_from_queue`, with the pod's own
rider choice: `pod_feed`): what a queue of that size lets the model do, whatever the server in front
of it. The bench measures it after each cell at its top concurrency (a closed loop of C clients
keeps at most C texts waiting), and `--overload` for queues of 8 and 256.

Each runtime (`torch`, `onnx`, `onnx-int8`: see serving.models.runtime) gets its own three, on the
same texts: for an ONNX runtime the plain call is the padded tokenizer call fed to ONNX Runtime's
session on the very export the server uses (same cache, same accuracy check at load), so a served
figure can stand beside both the eager ceiling and the optimized one.

Each is warmed up on every batch shape it will meet, then repeated in whole passes over the texts
until a time budget is spent; the figure is the median pass (a pass covers every length, so passes
compare). `RawModel` loads the model once and measures the three as often as asked: the bench
measures them again between cells, since the machine drifts. Run these only while the server is
idle: they need the whole machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carpool_bench import report
from serving import hardware
from serving.batching import policies
from serving.batching.cost import CPU_SEED, CostModel
from serving.batching.stats import WAIT_EWMA

__all__ = [
    "Feed",
    "Pick",
    "Queued",
    "RawModel",
    "detect_device",
    "pod_feed",
    "sorted_batches",
    "warmup_batches",
]


def detect_device() -> str:
    """cuda when a GPU is visible to torch, else cpu: the same rule `carpool serve` follows by default."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of the texts sorted by token length (stable), cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _arrival_batches(count: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, count))) for i in range(0, count, batch_size)]


def warmup_batches(batches: list[list[int]], lengths: Sequence[int]) -> list[list[int]]:
    """One batch per distinct (size, padded length) shape: a first call on a new shape can cost
    far more than the next ones (kernel selection, allocator growth), so none is left to the
    measured passes."""
    shapes: dict[tuple[int, int], list[int]] = {}
    for batch in batches:
        shapes.setdefault((len(batch), max(lengths[i] for i in batch)), batch)
    return list(shapes.values())


def _measure(
    run_batch: Callable[[list[str]], None], batch_texts: list[list[str]], count: int, min_seconds: float
) -> tuple[float, float]:
    """(median texts/s over whole passes, p50 ms per call); passes repeat until `min_seconds` are
    spent, at least one."""
    rates: list[float] = []
    calls: list[float] = []
    spent = 0.0
    while not rates or spent < min_seconds:
        pass_start = time.perf_counter()
        for batch in batch_texts:
            call_start = time.perf_counter()
            run_batch(batch)
            calls.append(time.perf_counter() - call_start)
        elapsed = time.perf_counter() - pass_start
        spent += elapsed
        rates.append(count / elapsed)
    return statistics.median(rates), report.percentile(calls, 50) * 1000


@contextlib.contextmanager
def _quiet(hf_logging: Any) -> Iterator[None]:
    """No load report (a bare encoder gets a fresh head: expected here) and no progress bar."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True, slots=True)
class Queued:
    """A text waiting in `RawModel.fed_from_queue`'s queue, as the server's picker sees a request."""

    index: int  # into the texts
    tokens: int
    enqueued_at: float  # time.perf_counter()


Pick = Callable[[Sequence[Queued], float], Sequence[int]]  # (waiting, now) -> the riders' indices
Feed = Callable[[int, float, float], tuple[float, float]]  # (queue, seconds, warm-up) -> texts/s, batch


@dataclass(frozen=True)
class _Plan:
    label: str
    batch_size: int
    order: str
    batches: list[list[str]]


class RawModel:
    """The model at `model_path` loaded in-process on `device` in `dtype` (the server's own choices,
    read from /models/status), ready to measure the three references for `texts` again and again."""

    def __init__(
        self,
        model_path: Path,
        texts: Sequence[str],
        *,
        device: str,
        dtype: str,
        max_batch_size: int,
        max_length: int = 128,
        threads: int | None = None,
        runtime: str = "torch",
        cache_dir: Path | None = None,
        head_labels: Sequence[str] | None = None,
    ) -> None:
        """`threads`: the torch threads the server chose for the model (`torch_threads` in its
        /models/status), so both run alike; without it, the server's default rule. `runtime`: torch,
        or an ONNX runtime run on the server's own export (ValueError if it fails its check).
        `head_labels`: the labels of the seeded head the server gives an untrained model (the
        embedded minilm), so the export checked here is the server's, not one of a random head."""
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        import transformers

        with _quiet(transformers.utils.logging):
            counter = transformers.AutoTokenizer.from_pretrained(str(model_path))
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_path))
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(model_path), dtype=getattr(torch, dtype)
            )
        model = model.to(device).eval()
        lengths = [len(counter(text, truncation=True, max_length=max_length)["input_ids"]) for text in texts]

        def run_torch(batch: list[str]) -> None:
            encoded = tokenizer(
                batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            with torch.inference_mode():
                logits = model(**encoded.to(device)).logits
                torch.softmax(logits.float(), dim=-1).cpu()

        run_batch: Callable[[list[str]], None] = run_torch
        if runtime != "torch":
            run_batch = _onnx_runner(
                model_path, tokenizer, runtime, device, max_length, cache_dir, head_labels
            )
        self.runtime = runtime

        if device == "cpu" and threads:
            torch.set_num_threads(int(threads))
        elif device == "cpu" and hardware.usable_cpus() < torch.get_num_threads():
            torch.set_num_threads(hardware.usable_cpus())  # a CPU limit, not the cores
        self.device, self.dtype, self.threads = device, dtype, torch.get_num_threads()
        self._run_batch, self._lengths, self._count = run_batch, lengths, len(texts)
        self._texts = list(texts)
        self._plans = []
        orders = (
            ("raw batch 1", 1, "one by one", _arrival_batches(len(texts), 1)),
            (
                f"raw batch {max_batch_size}, sorted (ceiling)",
                max_batch_size,
                "sorted by length",
                sorted_batches(lengths, max_batch_size),
            ),
            (
                f"raw batch {max_batch_size}, arrival order",
                max_batch_size,
                "arrival order",
                _arrival_batches(len(texts), max_batch_size),
            ),
        )
        for label, size, order, batches in orders:
            for shape in warmup_batches(batches, lengths):
                run_batch([texts[i] for i in shape])
            tag = "" if runtime == "torch" else f" [{runtime}]"
            self._plans.append(
                _Plan(label + tag, size, order, [[texts[i] for i in batch] for batch in batches])
            )

    def run_single(self, index: int) -> None:
        """Tokenize and forward text `index` (modulo the texts) alone: one raw batch-1 call."""
        self._run_batch([self._texts[index % self._count]])

    def fed_from_queue(
        self, queue_size: int, seconds: float, pick: Pick, *, warmup_s: float = 0.0
    ) -> tuple[float, float]:
        """(texts/s, texts per forward pass) when the model is fed, for `seconds` after `warmup_s`,
        from a queue that always holds `queue_size` texts: the texts in order, round and round,
        topped up after every batch, and `pick` choosing each batch's riders as the server's picker
        does. No HTTP, no clients, no refusals: the most a pod could serve here from a queue that
        size, however many clients keep it full."""
        queue: list[Queued] = []
        following = done = batches = 0
        warm_until = time.perf_counter() + warmup_s
        window_start: float | None = None
        while True:
            now = time.perf_counter()
            if window_start is None and now >= warm_until:
                window_start = now
            if window_start is not None and batches and now - window_start >= seconds:
                return done / (now - window_start), done / batches
            while len(queue) < queue_size:
                index = following % self._count
                queue.append(Queued(index, self._lengths[index], now))
                following += 1
            riders = sorted(set(pick(queue, now)))
            self._run_batch([self._texts[queue[i].index] for i in riders])
            if window_start is not None:
                done += len(riders)
                batches += 1
            taken = set(riders)
            queue = [waiting for i, waiting in enumerate(queue) if i not in taken]

    def measure(
        self,
        min_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        progress: Callable[[str], None] | None = None,
        foreign: Callable[[], float] | None = None,
    ) -> report.References:
        """The three references now, each for at least `min_seconds` (and one whole pass). `clock`
        dates the measurement (its middle goes in `at_s`); `foreign`, when given, returns the share of
        the machine other processes used since its last call, and each reference records it."""
        started = clock()
        measured = []
        for plan in self._plans:
            if progress is not None:
                progress(f"reference: {plan.label}")
            if foreign is not None:
                foreign()  # starts the interval
            self._run_batch(plan.batches[0])  # back in cache after whatever ran since the last pass
            rate, p50 = _measure(self._run_batch, plan.batches, self._count, min_seconds)
            other = foreign() if foreign is not None else None
            if other is not None and other > 0.1 and progress is not None:
                progress(f"  warning: other processes used {other:.0%} of the machine meanwhile")
            measured.append(report.Reference(plan.label, plan.batch_size, plan.order, rate, p50, other))
        single, ceiling, arrival = measured
        return report.References(
            single=single,
            ceiling=ceiling,
            arrival=arrival,
            device=self.device,
            dtype=self.dtype,
            threads=self.threads,
            tokens_min=min(self._lengths),
            tokens_mean=statistics.fmean(self._lengths),
            tokens_max=max(self._lengths),
            at_s=(started + clock()) / 2,
        )


def _onnx_runner(
    model_path: Path,
    tokenizer: Any,
    runtime: str,
    device: str,
    max_length: int,
    cache_dir: Path | None,
    head_labels: Sequence[str] | None,
) -> Callable[[list[str]], None]:
    """The padded tokenizer call fed to the server's own ONNX Runtime session for `runtime`."""
    import numpy as np

    from serving.models import onnx

    classifier = onnx.RuntimeClassifier(
        model_path.name,
        model_path,
        runtime=runtime,
        cache_dir=cache_dir,
        device=device,
        max_length=max_length,
        head_labels=head_labels,
    )
    classifier.load()
    if classifier.runtime != runtime or classifier.session is None:
        raise ValueError(f"runtime {runtime} refused for {model_path}: {'; '.join(classifier.refusals)}")
    session = classifier.session

    def run_batch(batch: list[str]) -> None:
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feed = {
            "input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64),
        }
        logits = session.run(["logits"], feed)[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        shifted / shifted.sum(axis=1, keepdims=True)

    return run_batch


def pod_feed(raw: RawModel, stats: dict[str, Any], model: str) -> Feed:
    """`raw.fed_from_queue` with the riders chosen by the pod's own rule (`policies.select`, age
    credit included), the cost model the pod fitted for `model` and its max_batch_size, both read
    from its /batching/stats; the typical wait that scales the credit is measured in the feed as
    the pod measures its own (an average over the riders' waits)."""
    entry = (stats.get("models") or {}).get(model) or {}
    fitted = entry.get("cost_model")
    cost = CostModel(fitted["fixed_ms"] / 1e3, fitted["per_token_us"] / 1e6) if fitted else CPU_SEED
    cap = int((entry.get("config") or stats.get("config") or {}).get("max_batch_size", 32))

    def feed(queue: int, seconds: float, warmup_s: float) -> tuple[float, float]:
        typical_wait_s = 0.0

        def pick(waiting: Sequence[Queued], now: float) -> Sequence[int]:
            nonlocal typical_wait_s
            riders = policies.select(waiting, cap=cap, cost=cost, now=now, typical_wait_s=typical_wait_s)
            for i in riders:
                typical_wait_s += WAIT_EWMA * (now - waiting[i].enqueued_at - typical_wait_s)
            return riders

        return raw.fed_from_queue(queue, seconds, pick, warmup_s=warmup_s)

    return feed

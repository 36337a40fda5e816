"""The bench's run: the schedule's steps in order, each cell driven over HTTP and each measurement
of the raw references taken in-process, every one dated on one clock.

Why apart from `command`: the command reads options and writes results; this module is what
happens in between, and what a new way of loading the server (another protocol, another client)
changes. Each cell sets its strategy through POST /batching/configure, reads the batch counters of
/metrics before and after, and records the share of the machine other processes used meanwhile
(with a server the bench started); each reference measurement records how much CPU the idle server
took, since the references need the whole machine. A concurrency-1 cell is followed by its requests
alternated with the raw batch-1 call; a batching cell at the top concurrency by the raw model fed
from a queue as full as its clients keep it (the bound that queue sets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from carpool_bench import loadgen, reference, report, rounds, server, v2
from serving.settings import Strategy

__all__ = ["CellSettings", "Clock", "Measured", "run"]


class Clock:
    """Seconds since the run began: what dates every reference and cell."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._start


Encoder = Callable[[loadgen.Target, Sequence[str], str], list[bytes]]
AdminSide = server.Admin | v2.V2Server  # a Carpool's admin API, or a plain v2 server driven as served
# The strategies whose batches the pod's rider choice forms: only their cells get a fed bound
# (single_request runs one text a pass; a plain v2 server's cells, `v2.AS_SERVED`, are not Carpool's).
FED_STRATEGIES = frozenset({Strategy.BATCH_OPTIMIZED.value, Strategy.ADAPTIVE.value})


@dataclass(frozen=True)
class CellSettings:
    """What every cell sends, where, and for how long."""

    url: str
    model: str
    texts: Sequence[str]
    max_batch_size: int
    duration_s: float
    warmup_s: float
    timeout_s: float
    encode: Encoder = loadgen.encode_requests  # how requests are written: /predict, or v2's infer


@dataclass
class Measured:
    """Everything the run measured, in order."""

    references: list[report.References] = field(default_factory=list)
    cells: list[report.Cell] = field(default_factory=list)
    reference_seconds: float = 0.0  # time spent measuring references
    server_cpu_seconds: float = 0.0  # CPU the (idle) server used meanwhile, when the bench started it

    @property
    def server_cpu_during_references(self) -> float | None:
        """The share of a core the idle server used during the references."""
        return self.server_cpu_seconds / self.reference_seconds if self.reference_seconds > 0 else None


def _run_cell(
    settings: CellSettings,
    admin: AdminSide,
    step: rounds.Step,
    clock: Clock,
    foreign: server.ForeignLoad | None,
    say: Callable[[str], None],
    raw: reference.RawModel | None = None,
    top: int = 0,
) -> report.Cell:
    admin.configure({"enable": True, "strategy": step.strategy, "max_batch_size": settings.max_batch_size})
    before = admin.batch_counters(settings.model)
    if foreign is not None:
        foreign.share()  # starts the interval
    started = clock()
    target = loadgen.Target.parse(settings.url)
    requests = settings.encode(target, settings.texts, settings.model)
    load = loadgen.run_blocking(
        loadgen.drive(
            target,
            requests,
            concurrency=step.concurrency,
            duration_s=settings.duration_s,
            warmup_s=settings.warmup_s,
            timeout_s=settings.timeout_s,
        )
    )
    other_load = foreign.share() if foreign is not None else None
    after = admin.batch_counters(settings.model)
    latencies = load.latencies_s
    paired: tuple[float, float] | None = None
    if raw is not None and step.concurrency == 1:
        paired = _pairs(settings, target, requests, raw, load)
    fed: tuple[float, float] | None = None
    if raw is not None and step.concurrency == top and step.strategy in FED_STRATEGIES:
        fed = _fed(settings, admin, raw, step.concurrency)
    cell = report.Cell(
        strategy=step.strategy,
        concurrency=step.concurrency,
        window_s=load.window_s,
        completed=load.completed,
        throughput=load.throughput,
        p50_ms=report.percentile(latencies, 50) * 1000,
        p95_ms=report.percentile(latencies, 95) * 1000,
        p99_ms=report.percentile(latencies, 99) * 1000,
        non_2xx=load.non_2xx,
        errors=load.errors,
        avg_batch_size=server.average_batch_size(before, after),
        other_load=other_load,
        round=step.round,
        at_s=started + settings.warmup_s + settings.duration_s / 2,
        paired_p50_ms=paired[0] if paired else None,
        paired_raw_p50_ms=paired[1] if paired else None,
        fed_texts_per_s=fed[0] if fed else None,
        fed_batch_size=fed[1] if fed else None,
    )
    say(
        f"  {cell.throughput:.1f} req/s, p50 {cell.p50_ms:.1f} ms, p99 {cell.p99_ms:.1f} ms, "
        f"{cell.non_2xx} non-2xx, {cell.errors} errors"
    )
    if other_load is not None and other_load > 0.1:
        say(f"  warning: other processes used {other_load:.0%} of the machine during this cell")
    if cell.paired_gap_ms is not None:
        say(
            f"  alternated with the raw batch-1 call: served p50 {cell.paired_p50_ms:.2f} ms, "
            f"raw {cell.paired_raw_p50_ms:.2f} ms, gap {cell.paired_gap_ms:.2f} ms"
        )
    if fed is not None:
        say(
            f"  the raw model fed from a full queue of {step.concurrency} (the pod's pick): "
            f"{fed[0]:.1f} texts/s, {fed[1]:.1f} a pass; the cell served {cell.fed_ratio:.2f}x of it"
        )
    for sample in load.error_samples:
        say(f"  error: {sample}")
    return cell


def _fed(
    settings: CellSettings, admin: AdminSide, raw: reference.RawModel, queue: int
) -> tuple[float, float]:
    """A top-concurrency cell's bound, measured with the pod idle just after it: the raw model fed
    for `duration_s` from a queue that always holds `queue` texts, as many as the cell's clients
    can keep waiting, with the riders the pod's rule picks from them (`reference.pod_feed`, its
    fitted cost model). A closed loop of that many clients never has more to batch from, so the pod
    cannot batch better than this on the machine as it is. (texts/s, texts per forward pass)."""
    feed = reference.pod_feed(raw, admin.stats(), settings.model)
    return feed(queue, settings.duration_s, min(settings.warmup_s, 1.0))


def _pairs(
    settings: CellSettings,
    target: loadgen.Target,
    requests: Sequence[bytes],
    raw: reference.RawModel,
    load: loadgen.LoadResult,
) -> tuple[float, float] | None:
    """A concurrency-1 cell's second part: for another `duration_s`, blocks of the cell's served
    requests, each followed by the raw batch-1 call on the same texts in this process
    (`loadgen.alternate`); (served p50, raw p50) in ms. Its statuses and errors join the cell's, so
    a failure here counts like one in the cell."""
    served, others = loadgen.run_blocking(
        loadgen.alternate(
            target,
            requests,
            raw.run_single,
            duration_s=settings.duration_s,
            timeout_s=settings.timeout_s,
        )
    )
    load.statuses.update(served.statuses)
    load.errors += served.errors
    load.error_samples.extend(served.error_samples)
    if not others:
        return None
    return report.percentile(served.latencies_s, 50) * 1000, report.percentile(others, 50) * 1000


def run(
    steps: Sequence[rounds.Step],
    settings: CellSettings,
    admin: AdminSide,
    raw: reference.RawModel,
    *,
    reference_seconds: float,
    spawned: server.Spawned | None,
    say: Callable[[str], None],
) -> Measured:
    """Every step in order: the cells, and the references measured between them."""
    total_cells = sum(step.cell for step in steps)
    total_refs = len(steps) - total_cells
    total_rounds = max((step.round for step in steps), default=0)
    top = max((step.concurrency for step in steps if step.cell), default=0)
    top = top if top > 1 else 0  # one client keeps nothing waiting: no queue to feed from
    foreign = server.ForeignLoad(spawned.pid) if spawned else None
    clock = Clock()
    measured = Measured()
    for step in steps:
        if step.cell:
            say(
                f"cell {len(measured.cells) + 1}/{total_cells}, round {step.round}/{total_rounds}: "
                f"{step.strategy} at concurrency {step.concurrency} "
                f"(warm-up {settings.warmup_s:g} s, measure {settings.duration_s:g} s)"
            )
            measured.cells.append(_run_cell(settings, admin, step, clock, foreign, say, raw, top))
            continue
        server_cpu = spawned.cpu_seconds() if spawned else 0.0
        started = time.perf_counter()
        refs = raw.measure(
            reference_seconds,
            clock=clock,
            progress=None if measured.references else say,
            foreign=server.ForeignLoad(spawned.pid if spawned else None).share,
        )
        measured.reference_seconds += time.perf_counter() - started
        measured.server_cpu_seconds += (spawned.cpu_seconds() - server_cpu) if spawned else 0.0
        measured.references.append(refs)
        say(
            f"references {len(measured.references)}/{total_refs}: sorted ceiling "
            f"{refs.ceiling.texts_per_s:.1f} texts/s, batch 1 {refs.single.texts_per_s:.1f} texts/s"
        )
    return measured

"""`carpool bench --overload` and `--soak`: a pod far past its queue, and a pod under load for long.

Overload. Clients many more than the queue holds (128 against a queue of 8) send /predict in a
closed loop. In the storm they retry a refusal at once, ignoring Retry-After; in the polite run they
wait what the pod advised (the body's `retry_after_ms`, the header's whole seconds rounded up) and
the run counts how often the next try got in: the accuracy of the advice. Goodput is answers 200
per second; the same storm against a queue of 256 (nobody refused) is the reference the storm's
goodput is compared with. A probe asks /health and /batching/stats every 200 ms throughout and
reports how slowly and how often they did not answer.

A queue of 8 also bounds the batches: the model can only batch what waits. So each round also
feeds the raw model in the bench's process (no HTTP, the server idle) from a queue that is always
full, of 8 and of as many texts as the storm on 256 keeps waiting (its clients), with the server's
own rider choice: the ratio of the two is the most any front end could make of a queue of 8 on
this machine, and storm / that bound is how much of it the pod reached.

Soak. A closed loop of `clients` for MINUTES, in slices: per slice the throughput, and the resident
memory of the pod's processes (when the bench spawned it, or was given its PID). The report says
how much memory grew over the second half and how far throughput drifted from the first slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from carpool_bench import loadgen, report, server

__all__ = ["OverloadResult", "SoakSlice", "overload_storm", "soak_summary"]

PROBE_EVERY_S = 0.2
T = TypeVar("T")
RATIOS = {  # what --overload reports, each round: (numerator, denominator) of the runs' goodputs
    "goodput_ratio_8_vs_256": ("storm_queue_8", "storm_queue_256"),
    "storm_vs_calm_8": ("storm_queue_8", "calm_queue_8"),
    "calm_8_vs_256": ("calm_queue_8", "storm_queue_256"),
    "raw_8_vs_256": ("raw_queue_8", "raw_queue_256"),  # the model alone, fed from full queues
    "storm_8_vs_raw_8": ("storm_queue_8", "raw_queue_8"),
}
LANES = {"queue": 256, "deadline_ms": 500, "bulk_clients": 4, "bulk_items": 32}  # the lanes run's setting
Feed = Callable[[int, float, float], tuple[float, float]]  # (queue, seconds, warm-up) -> texts/s, batch


@dataclass
class OverloadResult:
    """One storm: statuses, goodput, what the advice to retry was worth, and the probes' answers."""

    clients: int
    window_s: float
    honour_retry_after: bool
    statuses: Counter[int] = field(default_factory=Counter)
    ok_in_window: int = 0
    advised_s: list[float] = field(default_factory=list)
    retried_after_advice: int = 0
    got_in_after_advice: int = 0
    errors: int = 0
    probe_latencies_s: list[float] = field(default_factory=list)
    probe_failures: int = 0
    items: int = 1  # texts per request (a /predict/batch request carries several)
    ok_latencies_s: list[float] = field(default_factory=list)  # the 200s answered in the window
    expired_waits_ms: list[float] = field(default_factory=list)  # what each 504 said it waited

    @property
    def goodput(self) -> float:
        return self.ok_in_window / self.window_s

    def summary(self) -> dict[str, Any]:
        total = sum(self.statuses.values()) or 1
        probes = sorted(self.probe_latencies_s)
        advised = sorted(self.advised_s)
        return {
            "clients": self.clients,
            "honour_retry_after": self.honour_retry_after,
            "goodput_rps": round(self.goodput, 2),
            "status_shares": {str(code): round(n / total, 4) for code, n in sorted(self.statuses.items())},
            "requests": total,
            "transport_errors": self.errors,
            "retry_after_ms_p50": round(advised[len(advised) // 2] * 1000, 1) if advised else None,
            "retry_after_accuracy": (
                round(self.got_in_after_advice / self.retried_after_advice, 4)
                if self.retried_after_advice
                else None
            ),
            "probe_max_ms": round(probes[-1] * 1000, 1) if probes else None,
            "probe_p99_ms": round(report.percentile(probes, 99) * 1000, 1) if probes else None,
            "probe_failures": self.probe_failures,
        } | self._latency_summary()

    def _latency_summary(self) -> dict[str, Any]:
        """Latency of the answered requests, texts per second, and what the expired ones waited."""
        ok = self.ok_latencies_s
        found: dict[str, Any] = {}
        if ok:
            found["p50_ms"] = round(report.percentile(ok, 50) * 1000, 1)
            found["p99_ms"] = round(report.percentile(ok, 99) * 1000, 1)
        if self.items > 1:
            found["texts_per_s"] = round(self.goodput * self.items, 2)
        if self.expired_waits_ms:
            found["expired_waited_ms_p50"] = round(statistics.median(self.expired_waits_ms), 1)
        return found


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[int, dict[str, str], bytes]:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _client(
    target: loadgen.Target,
    requests: Sequence[bytes],
    offset: int,
    window: tuple[float, float],
    result: OverloadResult,
    timeout_s: float,
) -> None:
    start, end = window
    index = offset
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    advised_wait: float | None = None
    while time.perf_counter() < end:
        if streams is None:
            try:
                streams = await asyncio.open_connection(target.host, target.port)
            except OSError:
                result.errors += 1
                await asyncio.sleep(0.05)
                continue
        payload = requests[index % len(requests)]
        index += 1
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                status, headers, body = await _exchange(*streams, payload)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            streams[1].close()
            streams = None
            continue
        done = time.perf_counter()
        result.statuses[status] += 1
        if advised_wait is not None:
            result.retried_after_advice += 1
            result.got_in_after_advice += status == 200
            advised_wait = None
        if status == 200 and start <= done <= end:
            result.ok_in_window += 1
            result.ok_latencies_s.append(done - sent)
        if status == 504:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                result.expired_waits_ms.append(float(json.loads(body)["waited_ms"]))
        if headers.get("connection", "").lower() == "close":
            streams[1].close()
            streams = None
        if status == 429:
            advised = _advised_s(headers, body)
            result.advised_s.append(advised)
            if result.honour_retry_after:
                advised_wait = advised
                await asyncio.sleep(advised)
    if streams is not None:
        streams[1].close()


def _advised_s(headers: dict[str, str], body: bytes) -> float:
    """The pod's advice: the body's retry_after_ms when present, else the Retry-After header."""
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(body).get("retry_after_ms")
        if isinstance(value, int | float):
            return float(value) / 1000.0
    return float(headers.get("retry-after", "1"))


async def _probe(base: str, end: float, result: OverloadResult) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        while time.perf_counter() < end:
            for path in ("/health", "/batching/stats"):
                sent = time.perf_counter()
                try:
                    answer = await client.get(path)
                    if answer.status_code != 200:
                        result.probe_failures += 1
                except httpx.HTTPError:
                    result.probe_failures += 1
                result.probe_latencies_s.append(time.perf_counter() - sent)
            await asyncio.sleep(PROBE_EVERY_S)


async def overload_storm(
    url: str,
    texts: Sequence[str],
    model: str,
    *,
    clients: int = 128,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    honour_retry_after: bool = False,
    timeout_s: float = 30.0,
) -> OverloadResult:
    """`clients` closed-loop users against POST /predict, retrying refusals at once or as advised."""
    target = loadgen.Target.parse(url)
    requests = loadgen.encode_requests(target, texts, model)
    result = OverloadResult(clients, duration_s, honour_retry_after)
    start = time.perf_counter() + warmup_s
    window = (start, start + duration_s)
    tasks = [
        asyncio.create_task(_client(target, requests, i, window, result, timeout_s)) for i in range(clients)
    ]
    tasks.append(asyncio.create_task(_probe(url, window[1], result)))
    await loadgen.run_all(tasks)
    return result


async def lanes_storm(
    url: str,
    texts: Sequence[str],
    model: str,
    *,
    clients: int,
    deadline_ms: int,
    bulk_clients: int,
    bulk_items: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 30.0,
) -> tuple[OverloadResult, OverloadResult]:
    """Both lanes at once: `clients` interactive users of /predict, each request carrying a
    deadline of `deadline_ms` and retried at once when refused or expired, beside `bulk_clients`
    users of /predict/batch with `bulk_items` texts a request and no deadline."""
    target = loadgen.Target.parse(url)
    start = time.perf_counter() + warmup_s
    window = (start, start + duration_s)
    interactive = OverloadResult(clients, duration_s, False)
    bulk = OverloadResult(bulk_clients, duration_s, False, items=bulk_items)
    timed = loadgen.encode_requests(target, texts, model, deadline_ms=deadline_ms)
    batches = loadgen.encode_batches(target, texts, model, items=bulk_items)
    lanes = [(timed, interactive)] * clients + [(batches, bulk)] * bulk_clients
    tasks = [
        asyncio.create_task(_client(target, requests, i, window, result, timeout_s))
        for i, (requests, result) in enumerate(lanes)
    ]
    tasks.append(asyncio.create_task(_probe(url, window[1], interactive)))
    await loadgen.run_all(tasks)
    return interactive, bulk


def run_storm(storm: Coroutine[Any, Any, T]) -> T:
    """`storm` (an `overload_storm(...)` or `lanes_storm(...)`) on a fresh event loop (uvloop when
    installed): what it returns."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(storm)


# -- soak -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakSlice:
    at_s: float
    throughput_rps: float
    rss_mb: float | None


def soak_slices(
    url: str,
    texts: Sequence[str],
    model: str,
    *,
    minutes: float,
    clients: int,
    slice_s: float,
    memory: Callable[[], float | None],
    progress: Callable[[str], None],
) -> list[SoakSlice]:
    """Closed-loop load for `minutes`, measured in slices of `slice_s`; memory read after each."""
    slices: list[SoakSlice] = []
    started = time.perf_counter()
    total_s = minutes * 60.0
    while time.perf_counter() - started < total_s - 1e-3:
        length = min(slice_s, total_s - (time.perf_counter() - started))
        load = loadgen.run_blocking(
            loadgen.run_load(url, texts, model, concurrency=clients, duration_s=length, warmup_s=0.0)
        )
        rss = memory()
        point = SoakSlice(round(time.perf_counter() - started, 1), round(load.throughput, 2), rss)
        slices.append(point)
        progress(
            f"soak {point.at_s:7.1f} s: {point.throughput_rps:8.1f} req/s"
            + (f", {rss:7.1f} MB resident" if rss is not None else "")
            + (f", {load.non_2xx} non-2xx" if load.non_2xx else "")
        )
    return slices


def soak_summary(slices: Sequence[SoakSlice]) -> dict[str, Any]:
    """Memory growth over the second half and throughput drift from the first slice to the last."""
    if not slices:
        return {"slices": []}
    half = slices[len(slices) // 2 :]
    memory = [s.rss_mb for s in half if s.rss_mb is not None]
    first, last = slices[0].throughput_rps, slices[-1].throughput_rps
    return {
        "slices": [s.__dict__ for s in slices],
        "rss_mb_first": slices[0].rss_mb,
        "rss_mb_last": slices[-1].rss_mb,
        "second_half_rss_growth": round(max(memory) / min(memory) - 1, 4) if memory else None,
        "throughput_drift": round(last / first - 1, 4) if first else None,
    }


def process_tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and its children, in MB (None once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        total: float = sum(p.memory_info().rss for p in processes) / 1e6
        return total
    except psutil.Error:
        return None


# -- the modes, as `carpool bench` runs them --------------------------------------------------------


def run_overload(
    url: str,
    admin: Any,
    corpus: Sequence[str],
    model: str,
    *,
    clients: int,
    duration_s: float,
    warmup_s: float,
    say: Callable[[str], None],
    rounds: int = 1,
    feed: Feed | None = None,
) -> dict[str, Any]:
    """The storm on a queue of 8 and on a queue of 256, and 8 calm clients on the queue of 8, in
    `rounds` rounds (every other round in the other order, so drift favours neither); the polite
    run on a queue of 8 once. Ratios are taken round by round: the median, with the lowest and
    highest round. The calm run splits the storm's gap in two: 8 clients cannot overfill a queue of
    8, so the calm goodput is that queue's without a single refusal; storm / calm is what the
    refusals cost, calm / queue of 256 what the small queue costs (fewer texts to batch from).

    `feed` (`RawModel.fed_from_queue` with the server's rider choice) runs the model alone from
    full queues of 8 and of min(256, clients) after each round's storms, in the same alternating
    order: the bound on the storm's ratio that the queue's size sets. Without it, no bound."""
    runs: dict[str, Any] = {"rounds": rounds, "storm_queue_8": [], "storm_queue_256": [], "calm_queue_8": []}
    plan = [("storm_queue_8", 8, clients), ("calm_queue_8", 8, 8), ("storm_queue_256", 256, clients)]
    raw_plan = [("raw_queue_8", 8), ("raw_queue_256", min(256, clients))]
    if feed is not None:
        runs |= {"raw_queue_8": [], "raw_queue_256": []}
    ratios: dict[str, list[float]] = {  # the raw bound's ratios only with a feed
        key: [] for key, (_, under) in RATIOS.items() if feed is not None or not under.startswith("raw_")
    }
    for number in range(1, rounds + 1):
        goodputs = {}
        for name, queue, count in plan if number % 2 else reversed(plan):
            run = _storm_run(url, admin, corpus, model, queue, False, count, duration_s, warmup_s)
            runs[name].append(run)
            goodputs[name] = run["goodput_rps"]
            say(f"{name}, round {number}/{rounds}: {json.dumps(run)}")
        if feed is not None:
            for name, queue in raw_plan if number % 2 else raw_plan[::-1]:
                rate, size = feed(queue, duration_s, warmup_s)
                fed = {"queue": queue, "texts_per_s": round(rate, 2), "avg_batch_size": round(size, 2)}
                runs[name].append(fed)
                goodputs[name] = rate
                say(f"{name}, round {number}/{rounds}: {json.dumps(fed)}")
        for key in ratios:
            over, under = RATIOS[key]
            if goodputs[under]:
                ratios[key].append(goodputs[over] / goodputs[under])
        if number == 1:
            runs["polite_queue_8"] = _storm_run(
                url, admin, corpus, model, 8, True, clients, duration_s, warmup_s
            )
            say(f"polite_queue_8: {json.dumps(runs['polite_queue_8'])}")
    for key, values in ratios.items():
        runs[key] = round(statistics.median(values), 4) if values else None
        runs[f"{key}_spread"] = [round(min(values), 4), round(max(values), 4)] if values else None
    say(
        f"goodput with a queue of 8 / with a queue of 256, {clients} clients ignoring Retry-After: "
        f"{runs['goodput_ratio_8_vs_256']} (median of {rounds} rounds, "
        f"{runs['goodput_ratio_8_vs_256_spread']} lowest-highest); requests per forward pass "
        f"{_batch_sizes(runs['storm_queue_8'])} against {_batch_sizes(runs['storm_queue_256'])}"
    )
    say(
        f"  of which the refusals: storm / 8 calm clients on the queue of 8 {runs['storm_vs_calm_8']} "
        f"{runs['storm_vs_calm_8_spread']}; the queue's size: calm on 8 / storm on 256 "
        f"{runs['calm_8_vs_256']} {runs['calm_8_vs_256_spread']}"
    )
    runs["deadlines_and_lanes"] = _lanes_run(url, admin, corpus, model, clients, duration_s, warmup_s)
    lanes = runs["deadlines_and_lanes"]
    say(f"deadlines_and_lanes: {json.dumps(lanes)}")
    say(
        f"  {clients} /predict clients with a {LANES['deadline_ms']} ms deadline beside "
        f"{LANES['bulk_clients']} /predict/batch clients of {LANES['bulk_items']} texts, queue of "
        f"{LANES['queue']}: interactive answered {lanes['interactive']['goodput_rps']}/s "
        f"(p99 {lanes['interactive'].get('p99_ms')} ms), {lanes['expired']} dropped unrun at their "
        f"deadline (504 share {lanes['interactive']['status_shares'].get('504', 0)}); bulk "
        f"{lanes['bulk'].get('texts_per_s')} texts/s (p50 {lanes['bulk'].get('p50_ms')} ms a request)"
    )
    if feed is not None:
        sizes = f"{_batch_sizes(runs['raw_queue_8'])} against {_batch_sizes(runs['raw_queue_256'])}"
        say(
            f"  the model alone (in the bench, no HTTP) fed from a full queue of 8 / of {min(256, clients)}: "
            f"{runs['raw_8_vs_256']} {runs['raw_8_vs_256_spread']}, requests per forward pass {sizes}: "
            f"the most a queue of 8 allows here; the storm on 8 reached {runs['storm_8_vs_raw_8']} "
            f"{runs['storm_8_vs_raw_8_spread']} of it"
        )
    return runs


def _storm_run(
    url: str,
    admin: Any,
    corpus: Sequence[str],
    model: str,
    queue: int,
    polite: bool,
    clients: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """One storm on a queue of `queue`: its summary, with the requests per forward pass it got
    (a queue of 8 holds batches near 8 whatever max_batch_size allows: part of its goodput gap)."""
    admin.configure({"max_queue_size": queue})
    before = admin.batch_counters(model)
    result = run_storm(
        overload_storm(
            url,
            corpus,
            model,
            clients=clients,
            duration_s=duration_s,
            warmup_s=warmup_s,
            honour_retry_after=polite,
        )
    )
    size = server.average_batch_size(before, admin.batch_counters(model))
    return result.summary() | {"avg_batch_size": None if size is None else round(size, 2)}


def _lanes_run(
    url: str,
    admin: Any,
    corpus: Sequence[str],
    model: str,
    clients: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """Both priority lanes under overload, the interactive one with deadlines (`LANES`): each
    lane's summary, and how many requests the pod dropped at their deadline before the model ran
    them (its stats' `expired`)."""
    admin.configure({"max_queue_size": LANES["queue"]})
    expired_before = _expired(admin.stats(), model)
    interactive, bulk = run_storm(
        lanes_storm(
            url,
            corpus,
            model,
            clients=clients,
            deadline_ms=LANES["deadline_ms"],
            bulk_clients=LANES["bulk_clients"],
            bulk_items=LANES["bulk_items"],
            duration_s=duration_s,
            warmup_s=warmup_s,
        )
    )
    return {
        "interactive": interactive.summary(),
        "bulk": bulk.summary(),
        "expired": _expired(admin.stats(), model) - expired_before,
    } | dict(LANES)


def _expired(stats: dict[str, Any], model: str) -> int:
    entry = (stats.get("models") or {}).get(model) or {}
    return int((entry.get("requests") or {}).get("expired", 0))


def _batch_sizes(summaries: Sequence[dict[str, Any]]) -> str:
    sizes = [s["avg_batch_size"] for s in summaries if s.get("avg_batch_size") is not None]
    return f"{statistics.median(sizes):.1f}" if sizes else "n/a"

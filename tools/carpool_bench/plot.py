"""The bench's table as a picture: throughput and p99 latency per strategy against concurrency.

Each point is the median over the rounds, its bar the lowest and highest round. The raw-model
references (their medians) are drawn as horizontal lines, so each strategy is read against the
machine's ceiling for this traffic and against the model alone at batch size 1. matplotlib is
imported here only, with the Agg backend: the bench needs no display. It is imported when the plot is
drawn, but looked for when the bench starts: without the `tools` extra, `carpool bench` stops at once
with one line naming it rather than after the whole run.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

from carpool_bench import report

__all__ = ["write_plot"]

if importlib.util.find_spec("matplotlib") is None:
    raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")


def _bars(spreads: Sequence[report.Spread]) -> list[list[float]]:
    """Matplotlib's asymmetric error bars: distances below and above each median."""
    return [
        [_finite(s.median - s.low) for s in spreads],
        [_finite(s.high - s.median) for s in spreads],
    ]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def write_plot(table: Sequence[report.Row], refs: report.References, path: Path, title: str) -> Path:
    """Write the PNG to `path` and return it."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    levels = sorted({r.concurrency for r in table})
    for strategy in dict.fromkeys(r.strategy for r in table):
        line = sorted((r for r in table if r.strategy == strategy), key=lambda r: r.concurrency)
        x = [r.concurrency for r in line]
        throughput = [r.throughput for r in line]
        p99 = [r.p99_ms for r in line]
        left.errorbar(
            x, [s.median for s in throughput], yerr=_bars(throughput), marker="o", capsize=3, label=strategy
        )
        right.errorbar(
            x, [s.median for s in p99], yerr=_bars(p99), marker="o", capsize=3, label=f"{strategy} p99"
        )
    lines = (
        (refs.ceiling, "black", "--"),
        (refs.arrival, "grey", ":"),
        (refs.single, "tab:red", "-."),
    )
    for ref, color, style in lines:
        label = f"{ref.label}: {ref.texts_per_s:.0f}/s"
        left.axhline(ref.texts_per_s, color=color, linestyle=style, linewidth=1, label=label)
    label = f"raw batch 1, p50 per text: {refs.single.p50_ms:.1f} ms"
    right.axhline(refs.single.p50_ms, color="tab:red", linestyle="-.", linewidth=1, label=label)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("concurrency (closed-loop connections)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylabel("throughput (requests/s)")
    left.set_ylim(bottom=0)
    right.set_ylabel("p99 latency (ms)")
    right.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    right.yaxis.set_major_formatter(plain)
    right.yaxis.set_minor_formatter(plain)
    figure.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

"""The bench's table as a picture: throughput and p99 latency per strategy against concurrency.

The raw-model references are drawn as horizontal lines, so each strategy is read against the
machine's ceiling for this traffic and against the model alone at batch size 1. matplotlib is
imported here only, with the Agg backend: the bench needs no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from serving.bench import report

__all__ = ["write_plot"]


def write_plot(cells: Sequence[report.Cell], refs: report.References, path: Path, title: str) -> Path:
    """Write the PNG to `path` and return it."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    levels = sorted({c.concurrency for c in cells})
    for strategy in dict.fromkeys(c.strategy for c in cells):
        row = sorted((c for c in cells if c.strategy == strategy), key=lambda c: c.concurrency)
        x = [c.concurrency for c in row]
        left.plot(x, [c.throughput for c in row], marker="o", label=strategy)
        right.plot(x, [c.p99_ms for c in row], marker="o", label=f"{strategy} p99")
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

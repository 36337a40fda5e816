"""`carpool bench --compare NAME=STRATEGY[,KNOB=VALUE...]` (two or more): batching configs compared
offline on the same texts, the first being the control.

Why this shape: it is the live experiment (docs/experiments.md) without the cluster. One server
runs each variant's config in turn, set through POST /batching/configure, so every variant meets
the same hardware, model and texts. The rounds interleave the variants, reversing their order
every other round (a b, b a, a b, ...), so a drift of the machine weighs on all of them alike.

What is tested against the control, and how:

- latency: a two-sided Mann-Whitney U test on every request latency measured (here the single
  latencies exist, unlike in Prometheus' histograms), tie-corrected normal approximation;
- errors: a two-sided two-proportion z-test on (failed, sent);
- throughput: an exact two-sided sign test on the rounds, each round pairing the variant's
  requests/s with the control's of the same round; with r rounds it cannot go below 2 x 0.5^r, so
  it needs 6 rounds or more to reach 0.05 (fewer rounds are reported, never called significant).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from carpool_bench import loadgen, report, server
from serving import settings, validation
from serving.significance import mann_whitney, sign_test, two_proportions

__all__ = ["Variant", "VariantRow", "format_table", "parse_variant", "run"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """One --compare: a name and the /batching/configure body of its config."""

    name: str
    changes: dict[str, Any]


def _value(raw: str) -> Any:
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw.strip()


def parse_variant(text: str) -> Variant:
    """`a=adaptive,max_wait_time_ms=20`: a name, then a strategy and/or knobs of BatchingConfig
    (its field names, as POST /batching/configure takes them). Raise ValueError naming what is wrong."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name) or not rest.strip():
        raise ValueError(f"--compare takes NAME=STRATEGY[,KNOB=VALUE...], got {text!r}")
    changes: dict[str, Any] = {}
    fields = settings.BatchingConfig.model_fields
    for index, item in enumerate(part.strip() for part in rest.split(",")):
        key, has_value, raw = item.partition("=")
        key = key.strip()
        if not has_value and index == 0:
            key, raw = "strategy", item
        elif not has_value:
            raise ValueError(f"--compare {name}: expected KNOB=VALUE, got {item!r}")
        if key not in fields:
            raise ValueError(f"--compare {name}: unknown knob {key!r} (knobs: {', '.join(fields)})")
        changes[key] = _value(raw)
    try:
        settings.BatchingConfig.model_validate(changes)
    except ValidationError as exc:
        raise ValueError(f"--compare {name}: {validation.message(exc.errors())}") from None
    return Variant(name, changes)


@dataclasses.dataclass(frozen=True, slots=True)
class VariantRow:
    """One variant at one concurrency level, over the rounds."""

    name: str
    concurrency: int
    throughputs: list[float]
    latencies_s: list[float]
    sent: int
    failed: int
    latency_p: float | None = None
    errors_p: float | None = None
    throughput_p: float | None = None

    def as_json(self, significance: float) -> dict[str, Any]:
        def significant(p: float | None) -> bool:
            return p is not None and p < significance

        return {
            "variant": self.name,
            "concurrency": self.concurrency,
            "throughput": statistics.median(self.throughputs),
            "throughput_rounds": self.throughputs,
            "p50_ms": report.percentile(self.latencies_s, 50) * 1000 if self.latencies_s else None,
            "p99_ms": report.percentile(self.latencies_s, 99) * 1000 if self.latencies_s else None,
            "requests": self.sent,
            "errors": self.failed,
            "error_rate": self.failed / self.sent if self.sent else None,
            "latency_p": self.latency_p,
            "latency_significant": significant(self.latency_p),
            "errors_p": self.errors_p,
            "errors_significant": significant(self.errors_p),
            "throughput_p": self.throughput_p,
            "throughput_significant": significant(self.throughput_p),
        }


def run(
    url: str,
    admin: server.Admin,
    variants: Sequence[Variant],
    corpus: Sequence[str],
    model: str,
    *,
    levels: Sequence[int],
    rounds: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    say: Callable[[str], None],
) -> list[VariantRow]:
    """Measure every variant at every level, rounds interleaved; the first variant is the control.

    A knob a variant leaves out keeps the value the server had when the comparison began (never
    the one the variant before it set)."""
    found = admin.stats()["config"]
    touched = {key for variant in variants for key in variant.changes}
    base = {key: found[key] for key in touched if key in found}
    measured: dict[tuple[str, int], list[loadgen.LoadResult]] = {}
    for number in range(rounds):
        order = list(variants) if number % 2 == 0 else list(reversed(variants))
        for level in levels:
            for variant in order:
                admin.configure({**base, **variant.changes})
                load = loadgen.run_load(
                    url,
                    corpus,
                    model,
                    concurrency=level,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    timeout_s=timeout_s,
                )
                result = loadgen.run_blocking(load)
                measured.setdefault((variant.name, level), []).append(result)
                say(
                    f"round {number + 1}/{rounds}, {variant.name} at {level}: "
                    f"{result.throughput:.1f} req/s, {result.errors + result.non_2xx} failed"
                )
    rows = []
    for level in levels:
        control: VariantRow | None = None
        for variant in variants:
            results = measured[(variant.name, level)]
            row = VariantRow(
                name=variant.name,
                concurrency=level,
                throughputs=[r.throughput for r in results],
                latencies_s=[latency for r in results for latency in r.latencies_s],
                sent=sum(r.completed + r.errors + r.non_2xx for r in results),
                failed=sum(r.errors + r.non_2xx for r in results),
            )
            if control is None:
                control = row
            else:
                row = dataclasses.replace(
                    row,
                    latency_p=mann_whitney(row.latencies_s, control.latencies_s),
                    errors_p=two_proportions(row.failed, row.sent, control.failed, control.sent),
                    throughput_p=sign_test(
                        [
                            mine - theirs
                            for mine, theirs in zip(row.throughputs, control.throughputs, strict=True)
                        ]
                    ),
                )
            rows.append(row)
    return rows


def _p(value: float | None, significance: float) -> str:
    if value is None:
        return "-"
    mark = " *" if value < significance else ""
    return (f"{value:.2g}" if value >= 1e-4 else "<1e-4") + mark


def format_table(rows: Sequence[VariantRow], significance: float) -> str:
    """The comparison table; p-values against the first variant, `*` where below `significance`."""
    header = (
        f"{'variant':<12} {'conc':>5} {'req/s':>9} {'(min-max)':>15} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'p latency':>10} {'p errors':>9} {'p req/s':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        data = row.as_json(significance)
        spread = f"({min(row.throughputs):.1f}-{max(row.throughputs):.1f})"
        p50 = "-" if data["p50_ms"] is None else f"{data['p50_ms']:.1f}"
        p99 = "-" if data["p99_ms"] is None else f"{data['p99_ms']:.1f}"
        lines.append(
            f"{row.name:<12} {row.concurrency:>5} {data['throughput']:>9.1f} {spread:>15} {p50:>8} {p99:>8} "
            f"{row.failed:>7} {_p(row.latency_p, significance):>10} {_p(row.errors_p, significance):>9} "
            f"{_p(row.throughput_p, significance):>9}"
        )
    return "\n".join(lines)

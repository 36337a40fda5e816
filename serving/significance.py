"""The product's significance tests: two-sided p-values, with no dependency beyond `math`.

Why here, in the pod's package: the operator's live experiment (carpool_operator.experiment) and
the bench's offline comparison (carpool_bench.compare) test the same questions, and neither may
import the other; both may import the pod's pure modules. One implementation, tested once.

- `two_proportions`: the pooled two-proportion z-test, for error rates;
- `mann_whitney_binned`: the Mann-Whitney U test on samples known only by bucket (a Prometheus
  histogram's), latencies in one bucket counted as ties, tie-corrected normal approximation;
- `mann_whitney`: the same test on single samples (each distinct value its own bucket);
- `sign_test`: the exact sign test of paired differences.

Each returns None where there is nothing to test (no samples on a side), and 1.0 where the samples
have no variance (no difference can be found).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mann_whitney", "mann_whitney_binned", "sign_test", "two_proportions"]


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def two_proportions(errors_a: int, n_a: int, errors_b: int, n_b: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test of errors_a/n_a against errors_b/n_b."""
    if n_a == 0 or n_b == 0:
        return None
    pooled = (errors_a + errors_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return 1.0  # both rates 0 (or both 1): no difference to find
    return _two_sided_p((errors_a / n_a - errors_b / n_b) / math.sqrt(variance))


def mann_whitney_binned(bins_a: Sequence[float], bins_b: Sequence[float]) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test on two samples given as counts per bucket (the
    same buckets, in ascending order); samples in one bucket are ties."""
    n_a, n_b = sum(bins_a), sum(bins_b)
    total = n_a + n_b
    if n_a == 0 or n_b == 0 or total < 2:
        return None
    u, below_b, ties = 0.0, 0.0, 0.0
    for a, b in zip(bins_a, bins_b, strict=True):
        u += a * (below_b + b / 2)  # pairs where a's sample is larger, half for ties
        below_b += b
        t = a + b
        ties += t**3 - t
    variance = n_a * n_b / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    return _two_sided_p((u - n_a * n_b / 2) / math.sqrt(variance))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test on two samples of single values."""
    values = sorted(set(a) | set(b))
    position = {value: i for i, value in enumerate(values)}
    bins_a, bins_b = [0.0] * len(values), [0.0] * len(values)
    for value in a:
        bins_a[position[value]] += 1
    for value in b:
        bins_b[position[value]] += 1
    return mann_whitney_binned(bins_a, bins_b)


def sign_test(differences: Sequence[float]) -> float | None:
    """Exact two-sided sign test of paired differences (zeros dropped)."""
    signs = [d for d in differences if d != 0]
    n = len(signs)
    if n == 0:
        return None
    k = min(sum(1 for d in signs if d > 0), sum(1 for d in signs if d < 0))
    tail: float = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2 * tail)

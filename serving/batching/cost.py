"""What a forward pass costs, fitted from the model's warm-up and then from every batch it runs.

A transformer's forward time grows with batch size x padded length (the linear layers dominate),
plus a fixed cost per call (kernel launches, Python, the hand-off)::

    seconds ≈ fixed + per_token · batch · padded_len

The ratio fixed / per_token is what the batch picker trades: how many tokens of padding one
extra forward pass is worth. On a 2-core CPU it is about 30 tokens (PERFORMANCE.md: 5.1 ms for
1x12 tokens, 131 ms for 32x32); on a GPU the fixed part dominates and batches should simply fill.

`OnlineCost.reseed()` fits both terms from the warm-up shapes (varied on purpose, so the fit is
well posed) and anchors later updates to that fit: batches seen in traffic all look alike, so on
their own they could not tell the two terms apart. Updates use least squares with forgetting on
relative changes to the fit.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CPU_SEED", "CostModel", "OnlineCost", "fit"]


@dataclass(frozen=True, slots=True)
class CostModel:
    fixed_s: float
    per_token_s: float

    def estimate(self, batch_size: int, padded_len: int) -> float:
        return self.fixed_s + self.per_token_s * batch_size * padded_len


# all-MiniLM-L6-v2 on a 2-core CPU (PERFORMANCE.md's table).
CPU_SEED = CostModel(fixed_s=0.0036, per_token_s=0.000122)
_TOKEN_SCALE = 1000.0  # the token feature is counted in thousands, so both features are of order 1


def fit(samples: Sequence[tuple[int, int, float]]) -> CostModel | None:
    """Least squares over (batch, padded_len, seconds); None when the samples cannot pin both terms."""
    xs = [b * n / _TOKEN_SCALE for b, n, _ in samples]
    ys = [s for _, _, s in samples]
    if len(samples) < 2 or max(xs) - min(xs) <= 0:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    intercept = mean_y - slope * mean_x
    if slope <= 0:
        return None
    return CostModel(max(intercept, 0.0), slope / _TOKEN_SCALE)


class OnlineCost:
    """fixed + per_token·tokens, refreshed from measured batches, anchored to the warm-up fit.

    The fit is of relative changes to the seed, ``fixed = seed.fixed·(1+d0)`` and
    ``per_token = seed.per_token·(1+d1)``, with a ridge on (d0, d1): batches of one shape pin
    only their total, and the ridge then spreads the change over the two terms in proportion to
    what each contributes, instead of letting the small fixed term absorb it.
    """

    def __init__(self, seed: CostModel = CPU_SEED, *, forget: float = 0.99, anchor: float = 2.0) -> None:
        self.seed = seed
        self.forget = forget
        self.anchor = anchor
        self.samples = 0
        self.model = seed
        self._sxx = [[0.0, 0.0], [0.0, 0.0]]
        self._sxy = [0.0, 0.0]

    def reseed(self, samples: Sequence[tuple[int, int, float]]) -> None:
        """Start from the warm-up timings: fitted when they pin both terms, else the seed rescaled."""
        usable = [(b, n, s) for b, n, s in samples if s > 0]
        if not usable:
            return
        fitted = fit(usable)
        if fitted is None or fitted.fixed_s <= 0:
            ratio = sum(s for *_, s in usable) / sum(self.seed.estimate(b, n) for b, n, _ in usable)
            fitted = CostModel(self.seed.fixed_s * ratio, self.seed.per_token_s * ratio)
        self.seed = self.model = fitted
        self._sxx = [[0.0, 0.0], [0.0, 0.0]]
        self._sxy = [0.0, 0.0]
        self.samples = 0

    def observe(self, batch_size: int, padded_len: int, seconds: float) -> None:
        seed = self.seed
        x = (seed.fixed_s, seed.per_token_s * batch_size * padded_len)  # each term's share of the seed
        residual = seconds - x[0] - x[1]
        for i in range(2):
            self._sxy[i] = self.forget * self._sxy[i] + x[i] * residual
            for j in range(2):
                self._sxx[i][j] = self.forget * self._sxx[i][j] + x[i] * x[j]
        self.samples += 1
        self.model = self._solve()

    def _solve(self) -> CostModel:
        # The ridge weighs like `anchor` batches of a typical shape (16 x 48 tokens).
        ridge = self.anchor * self.seed.estimate(16, 48) ** 2
        a = [[self._sxx[0][0] + ridge, self._sxx[0][1]], [self._sxx[1][0], self._sxx[1][1] + ridge]]
        b = self._sxy
        det = a[0][0] * a[1][1] - a[0][1] * a[1][0]
        if abs(det) < 1e-30:
            return self.model
        d0 = (b[0] * a[1][1] - a[0][1] * b[1]) / det
        d1 = (a[0][0] * b[1] - a[1][0] * b[0]) / det
        fixed = self.seed.fixed_s * (1.0 + d0)
        per_token = self.seed.per_token_s * (1.0 + d1)
        if per_token <= 0:
            return self.model
        return CostModel(max(fixed, 0.0), per_token)

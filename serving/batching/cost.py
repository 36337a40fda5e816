"""What a forward pass costs, fitted online from the batches the model actually ran.

A transformer's forward time on a batch grows with batch size x padded length (the linear layers
dominate), plus a fixed cost per call::

    seconds ≈ fixed + per_item · batch + per_token · batch · padded_len

The engine seeds the fit from PERFORMANCE.md's CPU table shape and the model's own warm-up timings,
then refines it with every batch it runs (recursive least squares with forgetting, regularised
towards the seed so a burst of one shape cannot make it absurd). The batch picker uses the fit to
trade padding waste against per-call overhead. Pure: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CPU_SEED", "CostModel", "OnlineCost"]


@dataclass(frozen=True, slots=True)
class CostModel:
    fixed_s: float
    per_item_s: float
    per_token_s: float

    def estimate(self, batch_size: int, padded_len: int) -> float:
        return self.fixed_s + self.per_item_s * batch_size + self.per_token_s * batch_size * padded_len


# all-MiniLM-L6-v2 on a 2-core CPU: 5.1 ms for 1x12 tokens, 131 ms for 32x32.
CPU_SEED = CostModel(fixed_s=0.0035, per_item_s=0.0002, per_token_s=0.000122)


class OnlineCost:
    """Least squares on (1, batch, batch·len) → seconds, forgetting old batches, anchored to a seed."""

    def __init__(self, seed: CostModel = CPU_SEED, *, forget: float = 0.98, anchor: float = 4.0) -> None:
        self.seed = seed
        self.forget = forget
        self.anchor = anchor
        self.samples = 0
        self._xtx = [[0.0] * 3 for _ in range(3)]
        self._xty = [0.0] * 3
        self.model = seed

    def reseed(self, samples: list[tuple[int, int, float]]) -> None:
        """Scale the seed to the model's measured warm-up timings (batch, padded_len, seconds)."""
        usable = [(b, n, s) for b, n, s in samples if s > 0]
        if not usable:
            return
        ratio = sum(s for _, _, s in usable) / sum(self.seed.estimate(b, n) for b, n, _ in usable)
        self.seed = CostModel(
            self.seed.fixed_s * ratio, self.seed.per_item_s * ratio, self.seed.per_token_s * ratio
        )
        self.model = self.seed
        for batch_size, padded_len, seconds in usable:
            self.observe(batch_size, padded_len, seconds)

    def observe(self, batch_size: int, padded_len: int, seconds: float) -> None:
        x = (1.0, float(batch_size), float(batch_size * padded_len))
        for i in range(3):
            self._xty[i] = self.forget * self._xty[i] + x[i] * seconds
            for j in range(3):
                self._xtx[i][j] = self.forget * self._xtx[i][j] + x[i] * x[j]
        self.samples += 1
        self.model = self._solve()

    def _solve(self) -> CostModel:
        # Ridge towards the seed, scaled per feature so that the anchor weighs like `anchor` samples.
        seed = (self.seed.fixed_s, self.seed.per_item_s, self.seed.per_token_s)
        scale = (1.0, 16.0, 16.0 * 48.0)
        a = [row[:] for row in self._xtx]
        b = self._xty[:]
        for i in range(3):
            weight = self.anchor * scale[i] * scale[i]
            a[i][i] += weight
            b[i] += weight * seed[i]
        solution = _solve3(a, b)
        if solution is None:
            return self.model
        fixed, per_item, per_token = (max(value, 0.0) for value in solution)
        if per_token <= 0.0:
            per_token = self.seed.per_token_s * 0.1
        return CostModel(fixed, per_item, per_token)


def _solve3(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting for a 3x3 system."""
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-18:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, 3):
            factor = m[r][col] / m[col][col]
            for c in range(col, 4):
                m[r][c] -= factor * m[col][c]
    x = [0.0] * 3
    for r in (2, 1, 0):
        x[r] = (m[r][3] - sum(m[r][c] * x[c] for c in range(r + 1, 3))) / m[r][r]
    return x

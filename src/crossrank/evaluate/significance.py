"""Is a difference between two runs real? Paired tests over the same queries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank._deps import require

__all__ = ["PairedComparison", "paired_comparison"]


@dataclass(frozen=True, slots=True)
class PairedComparison:
    """One measure of a run against a baseline over the queries both were scored on.

    Attributes:
        queries: queries compared.
        baseline: the baseline's mean.
        system: the run's mean.
        mean_diff: run minus baseline.
        ci_low: lower end of the 95% confidence interval of the mean difference (Student t).
        ci_high: upper end of that interval.
        t_p: two-sided p-value of the paired t-test.
        randomization_p: two-sided p-value of the paired randomization (sign-flip) test.
        wins: queries where the run scores higher; ``ties`` and ``losses`` likewise.
    """

    queries: int
    baseline: float
    system: float
    mean_diff: float
    ci_low: float
    ci_high: float
    t_p: float
    randomization_p: float
    wins: int
    ties: int
    losses: int

    def significant(self, alpha: float = 0.05) -> bool:
        """Return whether both tests reject "no difference" at ``alpha``."""
        return self.t_p < alpha and self.randomization_p < alpha

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        return asdict(self)


def paired_comparison(
    baseline: npt.ArrayLike, system: npt.ArrayLike, *, permutations: int = 10_000, seed: int = 0, tie: float = 1e-9
) -> PairedComparison:
    """Compare per-query values of a run against a baseline's (same queries, same order).

    The randomization test flips the sign of each query's difference at random ``permutations``
    times (seeded, so a report is reproducible) and counts how often the mean difference is at least
    as far from zero as the one observed (Smucker, Allan and Carterette, CIKM 2007).
    """
    stats = require("scipy.stats", feature="significance tests")
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(system, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two equal-length lists of at least 2 per-query values (got {a.shape}, {b.shape})")
    d = b - a
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        t_p, half = (1.0 if mean == 0.0 else 0.0), 0.0
    else:
        t_p = float(stats.ttest_rel(b, a).pvalue)
        half = float(stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, n))
    flipped = np.abs((signs * d).mean(axis=1))
    rand_p = float((np.count_nonzero(flipped >= abs(mean) - 1e-12) + 1) / (permutations + 1))
    return PairedComparison(
        queries=n,
        baseline=float(a.mean()),
        system=float(b.mean()),
        mean_diff=mean,
        ci_low=mean - half,
        ci_high=mean + half,
        t_p=t_p,
        randomization_p=min(1.0, rand_p),
        wins=int((d > tie).sum()),
        ties=int((np.abs(d) <= tie).sum()),
        losses=int((d < -tie).sum()),
    )

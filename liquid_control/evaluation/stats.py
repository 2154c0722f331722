"""Confidence intervals for the OOD report: Wilson for success rates, bootstrap for means.

Wilson rather than the normal (Wald) interval because success rates near 0 or 1 with tens of episodes are
the common case here, where Wald collapses to a zero-width interval. The bootstrap (percentile, fixed seed,
so a report is reproducible) for means because episode returns are skewed (a collision ends an episode).
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% standard-normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `successes / n`."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n >= 1 trials, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes={successes} is outside [0, n={n}]")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # clamp only the rounding error at the ends (the exact interval is inside [0, 1])
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_mean_interval(
    values, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None when fewer than 2 values (no spread to resample)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_mean_interval: values contain NaN or Inf")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_mean_interval: confidence must be in (0, 1), got {confidence}")
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test on paired successes: p-value from the discordant pairs alone.

    `only_a`: pairs where only policy A succeeded, `only_b`: only B. Under "no difference" each discordant
    pair is a fair coin flip, so the count is Binomial(only_a + only_b, 1/2).
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"mcnemar_exact_p: counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)

"""Statistics of success rates and means, shared by the OOD report (evaluation) and the model cards (training):
Wilson intervals for success rates, bootstrap for means, paired tests.

Wilson rather than the normal (Wald) interval because success rates near 0 or 1 with tens of episodes are
the common case here, where Wald collapses to a zero-width interval. The bootstrap (percentile, fixed seed,
so a report is reproducible) for means because episode returns are skewed (a collision ends an episode).
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% standard-normal quantile
BOOTSTRAP_BLOCK_ELEMENTS = 1 << 18  # episode draws held at once by the two-stage bootstrap (~2 MB per array)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `successes / n` (integer counts: 1.5 successes or True is
    a caller's mistake, refused; numpy integers are counts)."""
    successes, n = _count("wilson_interval", "successes", successes), _count("wilson_interval", "n", n)
    if n == 0:
        raise ValueError(f"wilson_interval needs n >= 1 trials, got n={n}")
    if successes > n:
        raise ValueError(f"wilson_interval: successes={successes} is outside [0, n={n}]")
    if not (z > 0 and math.isfinite(z)):  # z <= 0 turned the interval inside out, NaN made it NaN
        raise ValueError(f"wilson_interval: z must be a positive normal quantile, got {z}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # clamp only the rounding error at the ends (the exact interval is inside [0, 1]); at 0/n and n/n its end is the
    # point itself, exactly (in floats 30/30's upper end was 0.9999999999999999: the interval left its own estimate)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    return low, 1.0 if successes == n else min(1.0, center + half)


def bootstrap_mean_interval(
    values, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None when fewer than 2 values (no spread to resample)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_mean_interval: values contain NaN or Inf")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_mean_interval: confidence must be in (0, 1), got {confidence}")
    if _count("bootstrap_mean_interval", "resamples", resamples) == 0:  # before: IndexError from an empty quantile
        raise ValueError("bootstrap_mean_interval: resamples must be >= 1, got 0")
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def stratified_exact_p(strata) -> float:
    """Two-sided p of an exact conditional test that A and B succeed alike, stratified in matched sets (the pairs of
    one episode seed share its layout; the expert's one outcome is in each of them). ``strata``: per set,
    ``(A's successes, A's trials, B's successes, B's trials)``. Given a set's margins, A's successes there are
    hypergeometric under no difference; the exact distribution of their sum is the sets' convolution (the
    Mantel-Haenszel test, exact), and p sums the outcomes no likelier than the one observed. With one trial of each
    per set it is McNemar's exact test (:func:`mcnemar_exact_p`, equal to it)."""
    dist, observed = np.ones(1), 0
    for a, n_a, b, n_b in strata:
        a, n_a, b, n_b = (
            _count("stratified_exact_p", name, v) for name, v in zip("a n_a b n_b".split(), (a, n_a, b, n_b))
        )
        if a > n_a or b > n_b:
            raise ValueError(f"stratified_exact_p: successes outside their trials in {(a, n_a, b, n_b)}")
        total = a + b
        low, high = max(0, total - n_b), min(n_a, total)
        if low == high:  # no other outcome with these margins (all succeeded, or none): no information
            continue
        pmf = np.array([math.comb(n_a, k) * math.comb(n_b, total - k) for k in range(low, high + 1)], np.float64)
        dist = np.convolve(dist, pmf / pmf.sum())
        observed += a - low
    return float(min(1.0, dist[dist <= dist[observed] * (1 + 1e-7)].sum()))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test on paired successes: p-value from the discordant pairs alone.

    `only_a`: pairs where only policy A succeeded, `only_b`: only B. Under "no difference" each discordant
    pair is a fair coin flip, so the count is Binomial(only_a + only_b, 1/2). A p-value below the smallest
    float (5e-324: from about 1,075 discordant pairs all one way) rounds to 0.0, as scipy's; `format_p` says so.
    """
    only_a, only_b = _count("mcnemar_exact_p", "only_a", only_a), _count("mcnemar_exact_p", "only_b", only_b)
    n = only_a + only_b
    if n == 0:
        return 1.0
    if n <= EXACT_MCNEMAR_MAX_PAIRS:  # integer sums, one correctly rounded division: 6 pairs all one way give
        # 0.03125 exactly, as the sign-flip test of the seed comparisons and scipy do (the log space gave
        # 0.031250000000000014, printed 0.0313 beside their 0.0312)
        tail, term = 0, 1
        for i in range(min(only_a, only_b) + 1):
            tail += term
            term = term * (n - i) // (i + 1)
        return min(1.0, 2 * tail / (1 << n))
    # in log space: 2 * cdf would round a cdf of 2^-1075 to 0 before doubling it to 2^-1074
    return min(1.0, math.exp(math.log(2.0) + _binomial_log_cdf(min(only_a, only_b), n, 0.5)))


EXACT_MCNEMAR_MAX_PAIRS = 2000  # up to here exact integers (~1 ms); beyond, binomial_cdf's ~sqrt(n) steps


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p); the one binomial tail (McNemar's test, the model cards' check threshold).

    To full float precision for any n, in ~sqrt(n) steps at most: the tail on the far side of the mode is summed
    outward from its largest term (Loader's saddle-point pmf, in log space), the other tail is 1 minus it
    (before: an exact integer binomial coefficient for every term, about cubic in n: 6,500 discordant pairs took
    a minute)."""
    return math.exp(_binomial_log_cdf(k, n, p))


def _binomial_log_cdf(k: int, n: int, p: float) -> float:
    """The logarithm of `binomial_cdf`, -inf where it is 0."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_cdf: p must be in [0, 1], got {p}")
    if n < 0:
        raise ValueError(f"binomial_cdf: n must be >= 0 trials, got {n}")
    if k < 0 or (p == 1.0 and k < n):
        return -math.inf
    if k >= n or p == 0.0:
        return 0.0
    q = 1.0 - p
    if k < n * p:
        return _log_lower_tail(k, n, p, q)
    return math.log1p(-math.exp(_log_lower_tail(n - k - 1, n, q, p)))  # 1 - P(X > k); X > k: n - X <= n - k - 1


def _log_lower_tail(k: int, n: int, p: float, q: float) -> float:
    """The log of P(X <= k), X ~ Binomial(n, p), for 0 <= k < n p: the terms fall from i = k down (each ratio below 1
    and falling), so the sum stops once all that is left is below float rounding."""
    total, term, odds = 1.0, 1.0, q / p
    for i in range(k, 0, -1):
        ratio = i / (n - i + 1) * odds  # term(i - 1) / term(i)
        term *= ratio
        total += term
        if term * ratio < 1e-17 * total * (1.0 - ratio):  # bounds the sum of every later term
            break
    return _log_binomial_pmf(k, n, p, q) + math.log(total)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_binomial_pmf(k: int, n: int, p: float, q: float) -> float:
    """The log of P(X = k), X ~ Binomial(n, p), 0 <= k < n, by Loader's saddle-point expansion (C. Loader 2000, "Fast
    and accurate computation of binomial probabilities", as R's dbinom): no difference of log-factorials,
    which at a million trials would leave 1e-9 of relative precision."""
    if k == 0:
        return n * (math.log1p(-p) if p < 0.5 else math.log(q))
    m = n - k
    lc = _stirling_error(n) - _stirling_error(k) - _stirling_error(m) - _deviance(k, n * p) - _deviance(m, n * q)
    return lc - 0.5 * (math.log(k) + math.log1p(-k / n)) - _HALF_LOG_2PI


def _stirling_error(n: int) -> float:
    """log(n!) - log(sqrt(2 pi n) (n / e)^n), n >= 1: lgamma at small n, the Stirling series above 15."""
    if n <= 15:
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _HALF_LOG_2PI
    nn = float(n) * n
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _deviance(x: float, mean: float) -> float:
    """The deviance x log(x / mean) + mean - x, x > 0; by its series near the mean, where the closed form cancels."""
    if abs(x - mean) < 0.1 * (x + mean):
        v = (x - mean) / (x + mean)
        s, ej, v2 = (x - mean) * v, 2.0 * x * v, v * v
        for j in range(1, 1000):
            ej *= v2
            following = s + ej / (2 * j + 1)
            if following == s:
                break
            s = following
        return s
    return x * math.log(x / mean) + mean - x


def format_p(p: float) -> str:
    """A p-value for a table, to 3 significant digits; one that underflowed to 0.0 prints as "< 1e-300", not as
    a "0" that reads as impossible."""
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def _count(function: str, name: str, value) -> int:
    """``value`` as a Python int: an int or a numpy integer, not a bool (True is not a count) nor a float (1.5
    successes, or 3.0 from arithmetic that should have stayed in integers), >= 0; else a ValueError naming both."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{function}: {name} must be an integer count, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{function}: {name} must be >= 0, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------- training seeds
#
# A policy is an architecture trained with several seeds; its success under a shift varies from seed to seed
# (what training happened to learn) and from episode to episode. Intervals and tests below treat the training
# seed as the unit: a policy's success is the mean of its seeds' success rates, its interval comes from
# resampling seeds and then episodes within each seed, and two architectures are compared by the differences
# of their seeds' rates (seed i of A against seed i of B: the same training seed number means the same
# demonstration episodes, and the same evaluation episodes).


def hierarchical_bootstrap_interval(
    outcomes, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) of a success rate over training seeds, resampling seeds, then episodes within a seed.

    ``outcomes[s][k]``: the 0/1 outcomes of training seed ``s`` in stratum ``k`` (a shift; several strata are
    averaged with equal weight, e.g. all visual shifts). The statistic is the mean over seeds of the mean over
    strata of the episode mean. Every seed needs the same strata. The two-stage bootstrap (Davison & Hinkley
    1997, sec. 3.8): each replicate draws ``n_seeds`` seeds with replacement, then resamples the episodes of
    every drawn slot independently, so a seed drawn twice contributes two resamples of its episodes (before:
    one resample, copied into both slots, which widened the interval by ~20% where episodes dominate the
    spread). A percentile interval (fixed seed: a report is reproducible); with few seeds it is narrower than
    the truth, so read it with the per-seed table.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"hierarchical_bootstrap_interval: confidence must be in (0, 1), got {confidence}")
    if _count("hierarchical_bootstrap_interval", "resamples", resamples) == 0:  # before: IndexError
        raise ValueError("hierarchical_bootstrap_interval: resamples must be >= 1, got 0")
    seeds = [[np.asarray(stratum, dtype=np.float64).ravel() for stratum in strata] for strata in outcomes]
    if not seeds or any(not strata for strata in seeds) or len({len(s) for s in seeds}) != 1:
        raise ValueError("hierarchical_bootstrap_interval: every training seed needs the same, non-empty strata")
    if any(x.size == 0 for strata in seeds for x in strata):
        raise ValueError("hierarchical_bootstrap_interval: a training seed has a stratum without episodes")
    bad = [(s, k) for s, strata in enumerate(seeds) for k, x in enumerate(strata) if not np.all((x >= 0) & (x <= 1))]
    if bad:  # NaN too: the interval came out NaN, or a rate outside [0, 1], without a word
        s, k = bad[0]
        raise ValueError(
            f"hierarchical_bootstrap_interval: training seed {s} (position), stratum {k} has an outcome that is not "
            "a number in [0, 1] (0/1 successes expected; NaN is not one)"
        )
    n_seeds, n_strata = len(seeds), len(seeds[0])
    point = float(np.mean([np.mean([x.mean() for x in strata]) for strata in seeds]))
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, n_seeds, size=(resamples, n_seeds))  # which seed fills each slot
    total = np.zeros((resamples, n_seeds))
    for k in range(n_strata):
        # the episodes of stratum k, one row per seed (padded to the most episodes a seed has)
        sizes = np.array([strata[k].size for strata in seeds])
        values = np.zeros((n_seeds, sizes.max()))
        for s, strata in enumerate(seeds):
            values[s, : sizes[s]] = strata[k]
        # every slot of every replicate resamples its seed's episodes on its own: index arrays of shape
        # (replicates, n_seeds, episodes), a block of replicates at a time (all at once: ~150 MB at 10 seeds x
        # 500 episodes); the blocks draw in order, so the numbers are those of one draw for all replicates
        block = max(1, BOOTSTRAP_BLOCK_ELEMENTS // (n_seeds * sizes.max()))
        for start in range(0, resamples, block):
            rows = slice(start, start + block)
            total[rows] += _resampled_episode_means(rng, values, sizes, picked[rows])
    stats = (total / n_strata).mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)


def _resampled_episode_means(rng, values, sizes, picked):
    """The episode mean of each slot of ``picked`` (replicates x seeds: the seed in each slot), every slot
    resampling its seed's episodes (``values[s, :sizes[s]]``) with replacement; a seed with fewer episodes than
    the most uses the first of its draws."""
    shape = (*picked.shape, sizes.max())
    if sizes.min() == sizes.max():
        return values[picked[..., None], rng.integers(0, sizes.max(), size=shape)].mean(axis=2)
    n = sizes[picked]  # the episodes of the seed in each slot
    drawn = values[picked[..., None], rng.integers(0, n[..., None], size=shape)]
    return np.where(np.arange(sizes.max()) < n[..., None], drawn, 0.0).sum(axis=2) / n


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (regularized incomplete beta, no scipy)."""
    if df <= 0:
        raise ValueError(f"student_t_sf: df must be > 0, got {df}")
    if math.isnan(t):  # before: P = 1 for NaN, read as "no difference"
        raise ValueError("student_t_sf: t is NaN")
    if not math.isfinite(t):
        return 0.0 if t > 0 else 1.0
    square = t * t
    if math.isinf(square):
        return 0.0 if t > 0 else 1.0
    # x and 1 - x both computed as quotients: near the centre (and for large df) 1.0 - x kept only the last bits
    # of a small t's part (before: 8.6e-6 relative error at df = 1e8, t = 2e-4; 9.5e-9 at df = 1, t = 1e-8)
    x, complement = df / (df + square), square / (df + square)
    tail = 0.5 * _regularized_beta(x, df / 2.0, 0.5, complement)
    return tail if t >= 0 else 1.0 - tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p: bisection on ``student_t_sf`` in the tail, to the last bit.

    The tail probability min(p, 1 - p) is matched, not 1 - sf against p: near p = 1 that difference keeps only
    the last bits of the tail (before: a 1 - 2.5e-11 quantile 2e-6 off scipy's, a 2.5e-11 one likewise)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile: p must be in (0, 1), got {p}")
    tail = min(p, 1.0 - p)  # 1 - p is exact for p >= 1/2
    if tail == 0.5:
        return 0.0
    lo, hi = 0.0, 1e3  # widened until it brackets the quantile (before: fixed at +-1000, so a 99.99% interval of
    while tail < student_t_sf(hi, df) and hi < 1e300:  # two seeds used 1000 for 6366.2, 6x too narrow)
        hi *= 10.0
    for _ in range(2200):  # from 1e300 to the smallest float's spacing: below 2,200 halvings
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if student_t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    return t if p > 0.5 else -t


def _regularized_beta(x: float, a: float, b: float, complement: float | None = None) -> float:
    """I_x(a, b) by Lentz's continued fraction (Numerical Recipes 6.4); ``complement``: 1 - x where the caller has
    it more exactly than the subtraction gives it."""
    one_minus_x = 1.0 - x if complement is None else complement
    if x <= 0.0:
        return 0.0
    if one_minus_x <= 0.0:  # not x >= 1.0: x rounds to 1 where its complement is still > 0
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side only
        return 1.0 - _regularized_beta(one_minus_x, b, a, x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(one_minus_x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def paired_seed_test(differences, confidence: float = 0.95) -> tuple[float, float | None, float | None, float]:
    """(mean difference, low, high, two-sided p) of per-seed differences: a paired t-test over training seeds.

    ``differences[i]``: seed i's success rate under A minus under B (each over the same episodes). With all
    differences equal (up to float rounding) the spread is zero and the t statistic undefined; rates of 30
    episodes tie often (two seeds both at -10/30), so p is then the exact sign-flip permutation p-value,
    2 / 2**n for a non-zero mean (0.5 for two seeds, 0.0625 for five) and 1 for zero, never 0 (before: p = 0,
    "significant" for any tie), and there is no interval: low and high are None (before: the zero-width
    interval [mean, mean], which no test stands behind). The t interval is not bounded: a caller whose
    differences are bounded (success rates: [-1, 1]) clips it.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size < 2:
        raise ValueError(f"paired_seed_test needs >= 2 training seeds per policy, got {d.size}")
    if not np.all(np.isfinite(d)):  # before: a NaN difference gave mean NaN and p = 1, "no difference"
        raise ValueError(f"paired_seed_test: the differences contain NaN or Inf: {d.tolist()}")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    df = d.size - 1
    if sd <= 1e-9:  # equal up to float rounding (a rate pooled over shifts in another order): no spread
        return mean, None, None, 1.0 if abs(mean) <= 1e-9 else min(1.0, math.ldexp(1.0, 1 - d.size))
    se = sd / math.sqrt(d.size)
    t = mean / se
    half = student_t_quantile(0.5 + confidence / 2.0, df) * se
    return mean, mean - half, mean + half, min(1.0, 2.0 * student_t_sf(abs(t), df))


def bonferroni_adjust(p_values) -> list[float]:
    """Bonferroni adjusted p-values, ``min(1, m p)`` for m tests (family-wise error over all of them), in order.

    Bonferroni rather than Holm's step-down (which rejects at least as much) because its decisions have
    simultaneous intervals: a t interval at ``1 - alpha / m`` excludes 0 exactly when ``m p < alpha``, so a
    table's bold marks and intervals say the same; Holm's compatible intervals say nothing past the sign of a
    difference it finds."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.any((p < 0) | (p > 1) | ~np.isfinite(p)):
        raise ValueError("bonferroni_adjust: p-values must be in [0, 1]")
    return np.minimum(1.0, p.size * p).tolist()


def success_interval(outcomes, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean over seeds, low, high): the wider of the seed-then-episode bootstrap and the pooled Wilson interval.

    ``outcomes`` as for `hierarchical_bootstrap_interval`. The bootstrap carries the seed-to-seed spread but
    collapses to a point when every episode succeeded (or failed); Wilson on all episodes pooled does not.
    """
    mean, lo, hi = hierarchical_bootstrap_interval(outcomes, confidence=confidence)
    flat = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for strata in outcomes for x in strata])
    z = math.sqrt(2.0) * _erfinv(confidence)
    w_lo, w_hi = wilson_interval(int(round(flat.sum())), flat.size, z=z)
    return mean, min(lo, w_lo), max(hi, w_hi)


def _erfinv(y: float) -> float:
    """Inverse error function for 0 <= y < 1 (the normal quantile of a confidence level), by Newton's method on
    erfc(x) = 1 - y: on erf near 1 only the last bits of 1 - y are left (before: z of a 1 - 1e-14 level 4e-7 off)."""
    x, target = 0.0, 1.0 - y
    for _ in range(100):
        step = (math.erfc(x) - target) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
        x += step
        if abs(step) <= 1e-16 * x:
            break
    return x

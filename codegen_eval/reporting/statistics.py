"""Statistics for comparing runs and models.

McNemar's exact test on paired pass/fail outcomes: only the pairs that differ carry information, and
under "no difference" each is equally likely to go either way.
"""

from __future__ import annotations

from math import comb


def mcnemar_exact(a_only_passes: int, b_only_passes: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs."""
    n = a_only_passes + b_only_passes
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(a_only_passes, b_only_passes) + 1)) / 2**n
    return min(1.0, 2 * tail)


Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; unlike the normal approximation it stays inside [0, 1]
    and behaves at 0/n and n/n. `successes` may be fractional (a sum of per-case pass shares)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. 2021's unbiased estimator of pass@k from n samples of which c pass:
    1 - C(n-c, k) / C(n, k), as a running product so large n neither overflows nor loses precision."""
    _check(n, c, k)
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1 - k / i
    return 1.0 - product


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k as τ-bench defines it: the chance that k samples drawn from the n all pass, C(c, k) / C(n, k)."""
    _check(n, c, k)
    if c < k:
        return 0.0
    product = 1.0
    for i in range(k):
        product *= (c - i) / (n - i)
    return product


def ks_for(samples: int) -> list[int]:
    """The k reported for `samples` samples per case: 1, 5 and 10, up to the number of samples."""
    return [k for k in (1, 5, 10) if k <= samples]


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")

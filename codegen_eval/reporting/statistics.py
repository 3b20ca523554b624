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

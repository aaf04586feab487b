"""Summary statistics of raw samples. The headline is the median.

Outliers are counted, never dropped: by MAD (modified z-score above 3.5) and by
Tukey fences (beyond 1.5 IQR outside the quartiles). The confidence interval is a
seeded percentile bootstrap of the median, so the same samples always give the same
interval. docs/reports.md defines every field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["summarize", "bootstrap_ci", "ci_half_width", "outliers_mad", "outliers_tukey", "advice",
           "SUMMARY_FIELDS", "STATS_FIELDS"]

#: the fields of the CSV export and of `results.load` (kept stable)
SUMMARY_FIELDS = ("n", "median", "p25", "p75", "min", "max")
#: every field `summarize` returns
STATS_FIELDS = (*SUMMARY_FIELDS, "iqr", "p90", "p99", "ci95_low", "ci95_high", "outliers_mad", "outliers_tukey")

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130
MAD_Z = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
TUKEY_K = 1.5
#: advice when more than this share of the samples are outliers
MANY_OUTLIERS = 0.10
#: advice when the first sample is more than this many times the median
SLOW_FIRST = 2.0


def bootstrap_ci(samples: Sequence[float], level: float = 0.95,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of the median (seeded, so repeatable)."""
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size == 1:
        return float(a[0]), float(a[0])
    rng = np.random.default_rng(seed)
    medians = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def ci_half_width(samples: Sequence[float]) -> float:
    """Half the width of `bootstrap_ci`, as a fraction of the median (0.05: +-5%).

    Infinite for fewer than two samples, or a zero median with any spread."""
    a = np.asarray(samples, dtype=float)
    if a.size < 2:
        return float("inf")
    low, high = bootstrap_ci(samples)
    median = abs(float(np.median(a)))
    if median == 0:
        return 0.0 if high == low else float("inf")
    return (high - low) / 2 / median


def outliers_mad(samples: Sequence[float]) -> int:
    """How many samples have a modified z-score, 0.6745 (x - median) / MAD, above 3.5."""
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        return 0
    deviation = np.abs(a - np.median(a))
    mad = float(np.median(deviation))
    if mad == 0:  # more than half the samples are equal: anything else stands out
        return int(np.count_nonzero(deviation))
    return int(np.count_nonzero(0.6745 * deviation / mad > MAD_Z))


def outliers_tukey(samples: Sequence[float]) -> int:
    """How many samples lie beyond 1.5 IQR below the first or above the third quartile."""
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        return 0
    p25, p75 = np.percentile(a, [25, 75])
    fence = TUKEY_K * (p75 - p25)
    return int(np.count_nonzero((a < p25 - fence) | (a > p75 + fence)))


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Every field of STATS_FIELDS for `samples` (NaN, and 0 outliers, for no samples)."""
    if not samples:
        empty: dict[str, float] = {k: float("nan") for k in STATS_FIELDS}
        return {**empty, "n": 0, "outliers_mad": 0, "outliers_tukey": 0}
    a = np.asarray(samples, dtype=float)
    p25, median, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
    low, high = bootstrap_ci(a)
    return {"n": int(a.size), "median": float(median), "p25": float(p25), "p75": float(p75),
            "min": float(a.min()), "max": float(a.max()), "iqr": float(p75 - p25),
            "p90": float(p90), "p99": float(p99), "ci95_low": low, "ci95_high": high,
            "outliers_mad": outliers_mad(a), "outliers_tukey": outliers_tukey(a)}


def advice(samples: Sequence[float], unit: str) -> list[str]:
    """Warnings about timing samples that say what to do; empty when they look sound.

    Many outliers (at least 2 and more than 10%, by MAD or Tukey) and a first
    sample more than twice the median. Sizes and counts get no advice: their
    spread is not noise from the machine.
    """
    out: list[str] = []
    n = len(samples)
    if n < 3 or unit != "ns":
        return out
    worst = max(outliers_mad(samples), outliers_tukey(samples))
    if worst >= 2 and worst > MANY_OUTLIERS * n:
        out.append(f"{worst} of {n} samples are outliers; try more warm-up (--warmup), "
                   "--cold, or a quieter machine")
    median = float(np.median(np.asarray(samples, dtype=float)))
    if median > 0 and samples[0] > SLOW_FIRST * median:
        out.append(f"the first sample took {samples[0] / median:.1f}x the median; "
                   "caches were probably cold: pass --warmup N (e.g. --warmup 3)")
    return out

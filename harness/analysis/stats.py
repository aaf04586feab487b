"""Summary statistics of raw samples. The headline is the median.

Outliers are counted, never dropped: by MAD (modified z-score above 3.5) and by
Tukey fences (beyond 1.5 IQR outside the quartiles). The confidence interval is a
seeded percentile bootstrap of the median, so the same samples always give the same
interval. docs/reports.md defines every field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "summarize",
    "bootstrap_ci",
    "ci_half_width",
    "outliers_mad",
    "outliers_tukey",
    "wide_ci",
    "SUMMARY_FIELDS",
    "STATS_FIELDS",
    "WIDE_CI",
]

#: the fields of the CSV export and of `results.load` (kept stable)
SUMMARY_FIELDS = ("n", "median", "p25", "p75", "min", "max")
#: every field `summarize` returns
STATS_FIELDS = (*SUMMARY_FIELDS, "iqr", "p90", "p99", "ci95_low", "ci95_high", "outliers_mad", "outliers_tukey")

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130
MAD_Z = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
TUKEY_K = 1.5
#: a timing whose 95% CI of the median reaches further than this share of the median either side is not settled
WIDE_CI = 0.25


def bootstrap_ci(
    samples: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
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
    low, high = bootstrap_ci(samples)
    return {
        "n": int(a.size),
        "median": float(median),
        "p25": float(p25),
        "p75": float(p75),
        "min": float(a.min()),
        "max": float(a.max()),
        "iqr": float(p75 - p25),
        "p90": float(p90),
        "p99": float(p99),
        "ci95_low": low,
        "ci95_high": high,
        "outliers_mad": outliers_mad(samples),
        "outliers_tukey": outliers_tukey(samples),
    }


def wide_ci(samples: Sequence[float], unit: str) -> float | None:
    """A timing's 95% CI half-width as a fraction of its median when it is wider than WIDE_CI (hyperfine-style:
    the answer is not settled; one outlier in five samples is not enough); else None.

    Sizes and counts get none: their spread is not noise from the machine. Fewer than 3 samples, or a
    median of 0, say nothing.
    """
    if unit != "ns" or len(samples) < 3:
        return None
    half = ci_half_width(samples)
    return half if WIDE_CI < half < float("inf") else None

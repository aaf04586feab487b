"""Summary statistics of raw samples. The headline is the median."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["summarize", "SUMMARY_FIELDS"]

SUMMARY_FIELDS = ("n", "median", "p25", "p75", "min", "max")


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """n, median, quartiles, min and max of `samples` (NaN for no samples)."""
    if not samples:
        return {"n": 0, **{k: float("nan") for k in SUMMARY_FIELDS[1:]}}
    a = np.asarray(samples, dtype=float)
    p25, median, p75 = np.percentile(a, [25, 50, 75])
    return {"n": int(a.size), "median": float(median), "p25": float(p25), "p75": float(p75),
            "min": float(a.min()), "max": float(a.max())}

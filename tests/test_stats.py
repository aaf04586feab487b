from __future__ import annotations

import math

from layerbench.analysis.stats import (
    STATS_FIELDS,
    WIDE_CI,
    bootstrap_ci,
    ci_half_width,
    outliers_mad,
    outliers_tukey,
    summarize,
    wide_ci,
)


def test_summary_has_every_field_and_keeps_the_old_ones() -> None:
    s = summarize([5, 1, 3, 2, 4])
    assert tuple(s) == STATS_FIELDS
    assert (s["median"], s["p25"], s["p75"], s["iqr"]) == (3.0, 2.0, 4.0, 2.0)
    assert s["p90"] == 4.6 and math.isclose(s["p99"], 4.96)
    assert s["ci95_low"] <= 3.0 <= s["ci95_high"]
    assert s["outliers_mad"] == 0 and s["outliers_tukey"] == 0


def test_empty_samples_are_nan_with_no_outliers() -> None:
    s = summarize([])
    assert s["n"] == 0 and math.isnan(s["median"]) and math.isnan(s["ci95_low"])
    assert s["outliers_mad"] == 0 and s["outliers_tukey"] == 0


def test_bootstrap_is_seeded_and_brackets_the_median() -> None:
    samples = [10, 11, 12, 10, 13, 11, 12, 30, 10, 11]
    assert bootstrap_ci(samples) == bootstrap_ci(list(samples))
    low, high = bootstrap_ci(samples)
    assert low <= 11 <= high < 30
    assert bootstrap_ci([7]) == (7.0, 7.0)


def test_outliers_are_counted_not_dropped() -> None:
    samples = [100, 101, 99, 100, 102, 98, 100, 1000]
    assert outliers_mad(samples) == 1 and outliers_tukey(samples) == 1
    s = summarize(samples)
    assert s["n"] == 8 and s["max"] == 1000.0
    assert outliers_mad([5, 5, 5, 5]) == 0 and outliers_mad([5, 5, 5, 6]) == 1


def test_wide_ci_warns_on_an_unsettled_timing_not_on_one_outlier() -> None:
    assert wide_ci([100, 101, 99, 100, 102], "ns") is None
    assert wide_ci([100, 101, 99, 100, 102, 100, 98, 101, 100, 500], "ns") is None  # one outlier: the median holds
    half = wide_ci([100, 300, 50, 400, 120, 90, 250], "ns")
    assert half is not None and half == ci_half_width([100, 300, 50, 400, 120, 90, 250]) > WIDE_CI
    assert wide_ci([100, 300, 50, 400, 120], "bytes") is None  # sizes and counts get no warning
    assert wide_ci([1, 200], "ns") is None  # too few samples to say anything
    assert wide_ci([0, 0, 0, 5], "ns") is None  # a median of 0: no relative width

from __future__ import annotations

import math

from layerbench.harness.stats import STATS_FIELDS, advice, bootstrap_ci, outliers_mad, outliers_tukey, summarize


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


def test_advice_for_many_outliers_and_a_slow_first_sample() -> None:
    assert advice([100, 101, 99, 100, 102], "ns") == []
    (slow,) = advice([900, 101, 99, 100, 102, 100, 98, 101, 100, 99, 100], "ns")
    assert "--warmup" in slow and "9.0x the median" in slow
    noisy = advice([100, 100, 100, 100, 100, 500, 600, 100, 100, 100], "ns")
    assert any("outliers" in w and "--cold" in w and "quieter machine" in w for w in noisy)
    assert advice([900, 100, 100, 100, 700], "bytes") == []  # sizes and counts get no advice
    assert not any("outliers" in w for w in advice([100, 100, 100, 100, 100, 100, 100, 100, 100, 500], "ns"))
    assert advice([1, 2], "ns") == []  # too few samples to say anything

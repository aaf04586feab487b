"""Units as people read them: one home for formatting durations, sizes, ratios and parameters."""

from __future__ import annotations

import math

__all__ = ["human", "times_text", "params_human", "bytes_text"]


def human(value: float, unit: str) -> str:
    """A median in a unit a person reads at a glance."""
    if math.isnan(value):
        return "-"
    if unit == "ns":
        for scale, name in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.0f} ns"
    if unit == "bytes":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.0f} B"
    if unit == "fraction":
        return f"{value * 100:.3g}%"
    return f"{value:.0f}"


def times_text(ratio: float, worse: str = "slower") -> str:
    """A ratio to the best in words: `best`, `1.9x`, `21x slower`, `2,100x slower`."""
    if math.isnan(ratio) or math.isinf(ratio):
        return "n/a"
    if ratio <= 1.005:
        return "best"
    if ratio < 10:
        return f"{ratio:.2g}x" if ratio < 9.95 else f"{ratio:.0f}x {worse}"
    digits = max(len(str(int(ratio))) - 2, 0)  # two significant figures, thousands separated
    return f"{round(ratio, -digits):,.0f}x {worse}"


def params_human(text: str) -> str:
    """`depth=1;file_size=4096` as people write it: `depth=1, file_size=4 KiB` ("-" for none)."""
    parts = [part.partition("=") for part in text.split(";") if part]
    return (
        ", ".join(
            f"{k}={human(float(v), 'bytes') if k.endswith('size') and v.isdigit() else v}" for k, _, v in parts
        ).replace(".0 ", " ")
        or "-"
    )


def bytes_text(n: float) -> str:
    """A size in messages: `1.0 MiB`, `191.8 MiB`, `2.5 GiB`, `512 B`."""
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"

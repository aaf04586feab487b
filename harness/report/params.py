"""How a report reads a cell's parameters: which only set sample counts, and how they sort."""

from __future__ import annotations

from typing import Any

from layerbench.analysis import results

__all__ = ["REPEAT_PARAMS", "other_params", "params_key"]

#: parameters that only set how many samples a set takes: they do not split a line
REPEAT_PARAMS = frozenset({"samples", "warmup"})


def other_params(params: dict[str, Any], swept: str) -> str:
    """`k=v;...` of the parameters besides `swept` that shape the measurement."""
    return results.params_text({k: v for k, v in params.items() if k != swept and k not in REPEAT_PARAMS})


def params_key(text: str) -> tuple[Any, ...]:
    """Sort key for `k=v;k=v` that orders numbers by value, then words."""
    return tuple(
        (k, (0, float(v), "") if v.lstrip("-").replace(".", "", 1).isdigit() else (1, 0.0, v))
        for k, _, v in (part.partition("=") for part in text.split(";"))
    )

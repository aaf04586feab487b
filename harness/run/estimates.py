"""How big a cell's store must be: upper bounds of its bytes and inodes, and the run's disk check."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench.driver import Style
from layerbench.errors import UserError
from layerbench.images.image import Image
from layerbench.scenario import Step
from layerbench.units import bytes_text

if TYPE_CHECKING:
    from layerbench.run.plan import Cell

__all__ = ["estimate_bytes", "estimate_inodes", "check_disk"]

_MiB = 1 << 20


def estimate_bytes(cell: Cell) -> int:
    """An upper bound of the bytes the cell's backing store holds at its fullest."""
    image = cell.scenario.image(cell.params)
    total, layers = image.total_bytes, image.layer_count
    steps = cell.scenario.steps(cell.params)
    containers = sum(int(s.args.get("count", 1)) for s in steps if s.op == "start")
    copies = sum(1 for s in steps if s.op in ("commit", "volume"))
    commits = sum(1 for s in steps if s.op == "commit")
    builds = sum(1 for s in steps if s.op == "build" and "image" not in s.args)  # the [image] again
    written = sum(_step_bytes(s, image) for s in steps) * (1 + commits)  # a commit copies what was written
    if cell.driver.style is Style.COPY:
        need = total * (layers * (1 + builds) + containers + copies)
    else:
        need = total * (1 + builds + containers + copies)
    need += _images_need(cell, total, "bytes")
    return int((need + written) * 1.2) + estimate_inodes(cell) * 4096 + 128 * _MiB


def _images_need(cell: Cell, base: int, what: str) -> int:
    """The bytes (or files) the scenario's further images add: their own, and on a copy driver
    every layer's whole copy of the image below it (`base`: the [image]'s bytes or files). An image
    `build` steps import (prebuilt = false) counts once per such step of a sample."""
    s = cell.scenario
    steps = s.steps(cell.params)
    chain, need = {"base": base}, 0
    for prebuilt in (True, False):  # a not pre-built image's base is pre-built
        for name, base_name, image in s.images(cell.params, prebuilt):
            own = image.total_bytes if what == "bytes" else image.total_files
            chain[name] = (chain[base_name] if base_name else 0) + own
            times = 1 if prebuilt else sum(1 for x in steps if x.op == "build" and x.args.get("image") == name)
            need += times * (chain[name] * image.layer_count if cell.driver.style is Style.COPY else own)
    return need


def _step_files(step: Step, image: Image) -> int:
    """How many files a step works on, at most (a glob: every file of the image)."""
    args = step.args
    if "count" in args and step.op == "write":
        return int(args["count"])
    if "path" in args:
        return 1
    if "fraction" in args:
        return max(1, round(args["fraction"] * image.total_files))
    return image.total_files


#: op -> the bytes it can add to each file it works on, from its arguments (beyond copy-up)
_WRITES: dict[str, Callable[[dict[str, Any]], int]] = {
    "write": lambda a: int(a["bytes"]),
    "append": lambda a: int(a.get("bytes", 1)),
    "overwrite": lambda a: int(a.get("bytes", 4)),
    "truncate": lambda a: int(a["size"]),  # growing a file; sparse, but a copy may fill it
}


def _step_bytes(step: Step, image: Image) -> int:
    """The bytes a step can add to the store: what it writes times the files it writes to."""
    grow = _WRITES.get(step.op)
    return grow(step.args) * _step_files(step, image) if grow is not None else 0


def estimate_inodes(cell: Cell) -> int:
    """An upper bound of the inodes the cell's store holds at its fullest (ext4 fixes them at mkfs)."""
    image = cell.scenario.image(cell.params)
    steps = cell.scenario.steps(cell.params)
    containers = sum(int(s.args.get("count", 1)) for s in steps if s.op == "start")
    created = sum(_step_files(s, image) for s in steps if s.op == "write") + sum(
        1 for s in steps if s.op in ("mkdir", "commit")
    )
    copies = image.layer_count + containers if cell.driver.style is Style.COPY else 2 + containers // 8
    builds = sum(1 for s in steps if s.op == "build" and "image" not in s.args)  # the [image] again
    dirs = image.total_files // 4 + 64  # generated paths share directories
    further = _images_need(cell, image.total_files, "files") * 5 // 4  # with their directories
    return (
        int(((image.total_files + dirs) * (copies * (1 + builds)) + further + created * 2 + containers * 16) * 1.3)
        + 4096
    )


def check_disk(cells: list[Cell], work_parent: Path, progress: Callable[[str], None]) -> None:
    """Refuse to start when the free disk under `work_parent` is less than the largest cell's estimate."""
    need = {id(c): estimate_bytes(c) for c in cells}
    biggest = max(cells, key=lambda c: need[id(c)])
    free = shutil.disk_usage(work_parent).free
    if free < need[id(biggest)]:
        raise UserError(
            f"not enough free disk under {work_parent}: the largest cell ({biggest.describe()}) needs "
            f"{bytes_text(need[id(biggest)])}, {bytes_text(free)} is free; free some space, pass "
            f"--work-root on a bigger disk, or --param to shrink it"
        )
    progress(f"{len(cells)} cells; the largest needs {bytes_text(need[id(biggest)])} of disk ({bytes_text(free)} free)")

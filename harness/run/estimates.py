"""How big a cell's store must be: upper bounds of its bytes and inodes, and the run's disk check."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from layerbench.driver import Style
from layerbench.errors import UserError
from layerbench.units import bytes_text

if TYPE_CHECKING:
    from layerbench.run.plan import Cell

__all__ = ["estimate_bytes", "estimate_inodes", "check_disk"]

_MiB = 1 << 20


def estimate_bytes(cell: Cell) -> int:
    """An upper bound of the bytes the cell's backing store holds at its fullest."""
    image, steps = cell.image, cell.footprint
    total, layers = image.total_bytes, image.layer_count
    written = steps.written_bytes * (1 + steps.commits)  # a commit copies what was written
    copies = steps.containers + steps.copies
    if cell.driver.style is Style.COPY:
        need = total * (layers * (1 + steps.rebuilds) + copies)
    else:
        need = total * (1 + steps.rebuilds + copies)
    need += _images_need(cell, total, "bytes")
    if cell.driver.engine is not None:  # a layer passes through the engine: its directory, tar and blob
        need += 2 * total + written
    return int((need + written) * 1.2) + estimate_inodes(cell) * 4096 + 128 * _MiB


def _images_need(cell: Cell, base: int, what: str) -> int:
    """The bytes (or files) the scenario's further images add: their own, and on a copy driver
    every layer's whole copy of the image below it (`base`: the [image]'s bytes or files). An image
    `build` steps import (prebuilt = false) counts once per such step of a sample."""
    chain, need = {"base": base}, 0
    imports = cell.footprint.imports
    for prebuilt, images in ((True, cell.images), (False, cell.unbuilt)):  # a not pre-built image's base is pre-built
        for name, base_name, image in images:
            own = image.total_bytes if what == "bytes" else image.total_files
            chain[name] = (chain[base_name] if base_name else 0) + own
            times = 1 if prebuilt else imports.count(name)
            need += times * (chain[name] * image.layer_count if cell.driver.style is Style.COPY else own)
    return need


def estimate_inodes(cell: Cell) -> int:
    """An upper bound of the inodes the cell's store holds at its fullest (ext4 fixes them at mkfs)."""
    image, steps = cell.image, cell.footprint
    containers = steps.containers
    copies = image.layer_count + containers if cell.driver.style is Style.COPY else 2 + containers // 8
    dirs = image.total_files // 4 + 64  # generated paths share directories
    further = _images_need(cell, image.total_files, "files") * 5 // 4  # with their directories
    return (
        int(
            (
                (image.total_files + dirs) * (copies * (1 + steps.rebuilds))
                + further
                + steps.new_files * 2
                + containers * 16
            )
            * 1.3
        )
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

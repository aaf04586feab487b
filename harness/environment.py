"""The settings of a run that its cells' processes act on, as one object passed down to each cell.

`RunConfig.environment()` makes it; the runner hands it to every cell it runs and a fleet
ships it to each host's cell process (`to_plain`/`from_plain`, the host's own work root).
The cell passes it on explicitly (the store's loop I/O); for the images it opens it is
in effect with `applied()`, because the image-source plugin door (`(table, base_dir)`)
has no place for it: `open_image` and the synthetic-OCI layout cache read `current()`.
Outside a run (a test, a benchmark) `current()` is the defaults: direct I/O, no image
limit, the layout cache under the default work root.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbench.errors import UserError

__all__ = ["RunEnvironment", "LOOP_IO", "current", "applied"]

#: how a store's loop device does I/O (`run --loop-io`): direct (as a disk), or buffered (A/B runs only)
LOOP_IO = ("direct", "buffered")


@dataclass(frozen=True)
class RunEnvironment:
    """Where a cell may write and the bounds it works within."""

    work_root: Path | None = None  # None: outside a run (no image limit from the free disk)
    loop_io: str = "direct"  # new loop stores: "direct" or "buffered" (run --loop-io)
    max_image_bytes: int | None = None  # an imported image's uncompressed size limit (None: the free disk)
    planning: bool = False  # a dry run: image sources open what is built already and build nothing (NotBuilt)

    def __post_init__(self) -> None:
        if self.loop_io not in LOOP_IO:
            raise UserError(f"--loop-io {self.loop_io!r}: allowed: {', '.join(LOOP_IO)}")
        size = self.max_image_bytes
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise UserError(f"--max-image-bytes {self.max_image_bytes!r}: expected a positive number of bytes")

    @property
    def direct_io(self) -> bool:
        return self.loop_io == "direct"

    def to_plain(self) -> dict[str, Any]:
        """What a fleet ships to a host (its work root is the host's own)."""
        return {"loop_io": self.loop_io, "max_image_bytes": self.max_image_bytes}

    @classmethod
    def from_plain(cls, data: dict[str, Any], work_root: Path | None) -> RunEnvironment:
        """The environment `to_plain` described, on this host's `work_root`; a bad field is one UserError."""
        if not isinstance(data, dict) or set(data) - {"loop_io", "max_image_bytes"}:
            raise UserError(f"a cell's environment must be loop_io and max_image_bytes, not {data!r}")
        return cls(work_root, data.get("loop_io", "direct"), data.get("max_image_bytes"))


_current: ContextVar[RunEnvironment] = ContextVar("layerbench_run_environment")
_OUTSIDE = RunEnvironment()


def current() -> RunEnvironment:
    """The environment `applied` put in effect (the defaults outside a run)."""
    return _current.get(_OUTSIDE)


@contextmanager
def applied(env: RunEnvironment) -> Iterator[RunEnvironment]:
    """`env` in effect for what runs inside (this thread, and a process forked from it), then the one before."""
    token = _current.set(env)
    try:
        yield env
    finally:
        _current.reset(token)

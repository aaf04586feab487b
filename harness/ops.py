"""The step ops a scenario can use, each defined once: its fields and rules, its default metric, its footprint.

`scenario.py` checks a `[[step]]` against its op's fields and runs its op's rules (the
checks one op makes of its own fields); `run/estimates.py` sizes a
cell's store by its steps' footprints; `run/steps.py` gives each op its behaviour, one
function per op, and refuses on import an op without one. docs/scenarios.md documents
every op.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from layerbench.errors import UserError
from layerbench.kernel.netshape import parse_link

if TYPE_CHECKING:
    from layerbench.images.image import Image

__all__ = [
    "Op",
    "Footprint",
    "Checker",
    "Rule",
    "OPS",
    "SELECT",
    "INT",
    "SIZE",
    "STR",
    "BOOL",
    "FRACTION",
    "NUMBER",
    "ERRNOS",
    "MODE",
]

# Field kinds: how a value is checked once parameters are substituted (scenario.py).
INT, SIZE, STR, BOOL = "int", "size", "str", "bool"
FRACTION, NUMBER, ERRNOS, MODE = "fraction", "number", "errnos", "mode"

#: the most a `run` step's process is assumed to write into its container, and the files it may create
RUN_WRITES, RUN_NEW_FILES = 32 << 20, 2048

#: the ways a file step picks its files; exactly one is given
SELECT = {"path": STR, "glob": STR, "fraction": FRACTION}

#: the most files a `write` step's `count` numbers
MAX_WRITE_COUNT = 1_000_000
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Footprint:
    """The most one step adds to a cell's store; `run/estimates.py` turns the sum into bytes and inodes."""

    containers: int = 0  # containers it starts
    copies: int = 0  # whole copies of the image it may make (a commit, a volume populated from it)
    commits: int = 0  # commits: each may copy again what the sample wrote
    rebuilds: int = 0  # builds of the [image] again
    imports: tuple[str, ...] = ()  # the not pre-built [[images]] it imports
    written_bytes: int = 0  # bytes it writes into files
    new_files: int = 0  # inodes it creates

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


#: an op's footprint from its arguments (parameters substituted) and the cell's [image]
Sizer = Callable[[dict[str, Any], "Image"], Footprint]


def _nothing(args: dict[str, Any], image: Image) -> Footprint:
    return Footprint()


class Checker(Protocol):
    """What an op's rules see of the scenario file's checker (`scenario._Checker`)."""

    images: tuple[str, ...]  # the images a step may start: 'base', 'committed' and the [[images]]
    unbuilt: dict[str, int]  # the [[images]] with prebuilt = false, by name -> index
    imported: set[str]  # those a build or pull step before this one imports

    def fail(self, where: str, message: str) -> UserError:
        """The one-line error naming the file and `where`, to raise."""
        ...

    def value(self, value: Any, kind: Any, where: str) -> None:
        """Check a value of a field kind (or an enum tuple), or every value its `${param}` takes."""
        ...

    def bounded(self, value: Any, low: float, high: float, where: str) -> None:
        """A number between `low` and `high`, literal or every value of its `${param}`."""
        ...

    def is_param(self, value: Any) -> bool:
        """Whether `value` is a `${param}` reference, checked per value elsewhere."""
        ...


#: one of an op's own checks: the file's checker, the step as written (`${param}`s unsubstituted)
#: and where it is (`step[i].`); raises `c.fail(...)` on a bad step
Rule = Callable[[Checker, dict[str, Any], str], None]


@dataclass(frozen=True)
class Op:
    """One step op: what a scenario may write for it, the metric it times, what it can cost on disk."""

    name: str
    fields: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # name -> (kind or enum tuple, required)
    selects: bool = False  # works on files chosen by one of SELECT
    measure: str | None = None  # the metric it times unless the step names one
    timed: bool = True  # False: it records fixed metrics, and `measure` is refused
    footprint: Sizer = _nothing  # called with `with_defaults` of the step's arguments
    defaults: dict[str, Any] = field(default_factory=dict)  # the value of an optional field left out
    rules: tuple[Rule, ...] = ()  # its own checks, run once its fields' kinds are checked
    path_rules: tuple[Rule, ...] = ()  # its own checks, run once the files it selects and its paths are
    imports_image: bool = False  # its `image` is an [[images]] entry it imports: a later step may start it

    def with_defaults(self, args: dict[str, Any]) -> dict[str, Any]:
        """A step's arguments with the op's defaults for those it leaves out."""
        return {**self.defaults, **args}


def selected_files(args: dict[str, Any], image: Image) -> int:
    """How many files a step works on, at most: `count` numbered paths, one path, a fraction of the
    image's files, or (a glob) every file of the image."""
    if "count" in args:
        return int(args["count"])
    if "path" in args:
        return 1
    if "fraction" in args:
        return max(1, round(args["fraction"] * image.total_files))
    return image.total_files


def _writes(size: Callable[[dict[str, Any]], int], creates: bool = False) -> Sizer:
    """The footprint of a file op adding `size(args)` bytes to each file it selects (beyond copy-up)."""

    def footprint(args: dict[str, Any], image: Image) -> Footprint:
        n = selected_files(args, image)
        return Footprint(written_bytes=size(args) * n, new_files=n if creates else 0)

    return footprint


def _build(args: dict[str, Any], image: Image) -> Footprint:
    return Footprint(imports=(args["image"],)) if "image" in args else Footprint(rebuilds=1)


def _started_image(c: Checker, step: dict[str, Any], where: str) -> None:
    """start, run: a known image, and one not pre-built only once a step before imports it."""
    if "image" in step:
        c.value(step["image"], c.images, f"{where}image")
        if step["image"] in c.unbuilt and step["image"] not in c.imported:
            raise c.fail(f"{where}image", f"{step['image']!r} is not pre-built: a build step must import it first")


def _built_image(c: Checker, step: dict[str, Any], where: str) -> None:
    """build: the image it imports is an [[images]] entry with prebuilt = false."""
    if "image" in step and step["image"] not in c.unbuilt:
        importable = ", ".join(c.unbuilt) or "none (mark an [[images]] entry prebuilt = false)"
        what = "pre-built (the runner builds it before the samples)" if step["image"] in c.images else "unknown"
        raise c.fail(f"{where}image", f"{step['image']!r} is {what}; images to import: {importable}")


def _pulled_image(c: Checker, step: dict[str, Any], where: str) -> None:
    """pull: the [image] table ('base') or an [[images]] entry with prebuilt = false."""
    if "image" in step and step["image"] != "base" and step["image"] not in c.unbuilt:
        pullable = ", ".join(("base", *c.unbuilt))
        raise c.fail(f"{where}image", f"{step['image']!r} cannot be pulled; images to pull: {pullable}")


def _link(c: Checker, step: dict[str, Any], where: str) -> None:
    """pull: a link `kernel/netshape.py` can shape (a `${param}`'s values are checked when the step runs)."""
    if isinstance(step.get("link"), str) and not c.is_param(step["link"]):
        try:
            parse_link(step["link"])
        except UserError as exc:
            raise c.fail(f"{where}link", str(exc)) from None


def _prefix(c: Checker, step: dict[str, Any], where: str) -> None:
    """usage, pull, run: the prefix of the metrics they record."""
    if isinstance(step.get("prefix"), str) and not _PREFIX.match(step["prefix"]):
        raise c.fail(f"{where}prefix", "a metric name prefix: lower_snake_case, such as 'after_remove'")


def _content(c: Checker, step: dict[str, Any], where: str) -> None:
    """expect: the file's content by its digest or by the layer it comes from, one of the two."""
    if ("sha256" in step) == ("layer" in step):
        raise c.fail(where.rstrip("."), "op 'expect' needs exactly one of sha256 (the content's digest) or layer")
    if isinstance(step.get("sha256"), str) and not _SHA256.match(step["sha256"]):
        raise c.fail(f"{where}sha256", "64 lower-case hex digits")


def _numbered(c: Checker, step: dict[str, Any], where: str) -> None:
    """write: `count` files at most MAX_WRITE_COUNT, numbered by the `{i}` in the path."""
    if "count" in step:
        c.bounded(step["count"], 0, MAX_WRITE_COUNT, f"{where}count")
    if "count" in step and "{i}" not in str(step.get("path", "")):
        raise c.fail(f"{where}path", "with count, the path must hold {i}, numbering the files")


_OPS = (
    Op(
        "start",
        {"count": (INT, False), "image": (STR, False)},
        measure="startup_ns",
        footprint=lambda a, i: Footprint(containers=int(a["count"])),
        defaults={"count": 1},
        rules=(_started_image,),
    ),
    Op(
        "run",
        {
            "image": (STR, False),
            "runtime": (("crun", "builtin"), False),
            "cold": (BOOL, False),
            "keep": (BOOL, False),
            "prefix": (STR, False),
            "timeout": (NUMBER, False),
        },
        timed=False,
        # a container, and what its process may write into it (a Python writing its bytecode caches)
        footprint=lambda a, i: Footprint(containers=1, written_bytes=RUN_WRITES, new_files=RUN_NEW_FILES),
        defaults={"cold": False, "keep": False, "timeout": 60.0},
        rules=(_started_image, _prefix),
    ),
    Op("remove"),
    Op("commit", measure="commit_ns", footprint=lambda a, i: Footprint(copies=1, commits=1, new_files=1)),
    Op(
        "build",
        {"image": (STR, False)},
        measure="build_ns",
        footprint=_build,
        rules=(_built_image,),
        imports_image=True,
    ),
    Op("usage", {"prefix": (STR, False)}, timed=False, rules=(_prefix,)),
    Op(
        "volume",
        {"path": (STR, True), "kind": (("bind", "tmpfs"), False), "populate": (BOOL, False)},
        timed=False,
        footprint=lambda a, i: Footprint(copies=1),
    ),
    Op(
        "write",
        {"bytes": (SIZE, True), "count": (INT, False)},
        selects=True,
        footprint=_writes(lambda a: int(a["bytes"]), creates=True),
        path_rules=(_numbered,),
    ),
    Op(
        "append",
        {"bytes": (SIZE, False)},
        selects=True,
        footprint=_writes(lambda a: int(a["bytes"])),
        defaults={"bytes": 1},
    ),
    Op(
        "overwrite",
        {"bytes": (SIZE, False), "offset": (SIZE, False)},
        selects=True,
        footprint=_writes(lambda a: int(a["bytes"])),
        defaults={"bytes": 4},
    ),
    # growing a file: sparse, but a copy may fill it
    Op("truncate", {"size": (SIZE, True)}, selects=True, footprint=_writes(lambda a: int(a["size"]))),
    Op("open_rdwr", selects=True),
    Op("read", {"cold": (BOOL, False)}, selects=True),
    Op("page_cache", selects=True, timed=False),
    Op("stat", selects=True),
    Op("fsync", selects=True),
    Op("chmod", {"mode": (MODE, True)}, selects=True),
    Op("chown", {"uid": (INT, True), "gid": (INT, True)}, selects=True),
    Op("unlink", selects=True),
    Op("rename", {"path": (STR, True), "to": (STR, True)}),
    Op("mkdir", {"path": (STR, True)}, footprint=lambda a, i: Footprint(new_files=1)),
    Op("readdir", {"path": (STR, True)}),
    Op(
        "expect",
        {"path": (STR, True), "sha256": (STR, False), "layer": (INT, False)},
        timed=False,
        rules=(_content,),
    ),
    # pull_ns, unpack_ns, apply_ns, pulled_bytes, image_pull_bytes (run/pull.py); the image once more in the store
    Op(
        "pull",
        {"image": (STR, False), "link": (STR, False), "prefix": (STR, False)},
        timed=False,
        footprint=lambda a, i: Footprint(copies=1) if a["image"] == "base" else Footprint(imports=(a["image"],)),
        defaults={"image": "base", "link": "loopback"},
        rules=(_pulled_image, _link, _prefix),
        imports_image=True,
    ),
)

#: every op, by name, in the order docs/scenarios.md lists them
OPS: dict[str, Op] = {op.name: op for op in _OPS}

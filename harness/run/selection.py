"""Which files of the container a file step works on, chosen before the clock.

A step names its files by `path` (with `count`, `{i}` numbered), by `glob` (layerbench's own
walker, `glob_paths`: no symlink followed, each directory once per pattern position) or by
`fraction` of the image's files (seeded). Only regular files are kept (docs/images.md, threat
model): every other entry, and every path through one, is skipped and counted by kind, so
the step can say what it left out. The ops themselves are run/steps.py.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import random
import re
import stat
from collections import Counter
from typing import Any

from layerbench.images.image import Image
from layerbench.kernel.confined import Parents, Root

__all__ = ["glob_paths", "select_files", "skip_reason", "entry_kind", "counted", "skipped_text"]

_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFBLK: "block device",
    stat.S_IFCHR: "char device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def entry_kind(mode: int) -> str:
    """What an entry of mode `mode` is, in a message: `directory`, `symlink`, `fifo` ... `special file`."""
    return _KINDS.get(stat.S_IFMT(mode), "special file")


def glob_paths(root: str | Root, pattern: str) -> list[str]:
    """The entries under `root` whose relative path matches `pattern`, sorted, without following symlinks.

    Components are `/`-separated fnmatch patterns; `**` stands for any number of
    directories, none included. As with Python's glob, a name starting with `.`
    matches only a component starting with `.`. Only real directories are entered
    (`os.scandir` of a directory opened beneath the root, no symlink followed),
    each once per pattern position, so a tree of symlink loops ends at once.
    """
    if not isinstance(root, Root):
        with Root(root) as box:
            return glob_paths(box, pattern)
    parts = [p for p in pattern.split("/") if p]
    rules = [None if p == "**" else re.compile(fnmatch.translate(p)) for p in parts]
    found: set[str] = set()
    seen: set[tuple[str, int]] = set()
    stack = [("", 0)]
    while stack:
        rel, i = stack.pop()
        if (rel, i) in seen:
            continue
        seen.add((rel, i))
        if i == len(parts):
            if rel:
                found.add(rel)
            continue
        rule = rules[i]
        if rule is None:
            stack.append((rel, i + 1))  # `**` as no directory at all
        try:
            fd = root.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        except (NotADirectoryError, FileNotFoundError, PermissionError, OSError):
            continue
        try:
            entries = list(os.scandir(fd))
        finally:
            os.close(fd)
        for entry in entries:
            name = entry.name
            child = f"{rel}/{name}" if rel else name
            if rule is None:
                if name.startswith("."):
                    continue
                if i + 1 == len(parts):
                    found.add(child)
                if entry.is_dir(follow_symlinks=False):
                    stack.append((child, i))
            elif (
                rule.match(name)
                and (not name.startswith(".") or parts[i].startswith("."))
                and (i + 1 == len(parts) or entry.is_dir(follow_symlinks=False))
            ):
                stack.append((child, i + 1))
    return sorted(found)


def skip_reason(parents: Parents, rel: str) -> str | None:
    """Why the file step must not open `rel`, or None: a regular file, or nothing
    there yet (a write creates it; any other op fails with ENOENT, as it should)."""
    found = parents.kind(rel)
    if found is None:
        return None
    last, mode = found
    return entry_kind(mode) if last else f"path through a {entry_kind(mode)}"


def select_files(image: Image, args: dict[str, Any], parents: Parents) -> tuple[list[str], Counter[str]]:
    """The regular files a step works on, as paths relative to the root, chosen before the
    clock, and how many entries of each other kind the selection skipped."""
    if "path" in args and "count" in args:
        rels = [args["path"].replace("{i}", str(i)) for i in range(args["count"])]
    elif "path" in args:
        rels = [args["path"]]
    elif "glob" in args:
        rels = glob_paths(parents.root, args["glob"])
        if not rels:
            raise FileNotFoundError(errno.ENOENT, f"glob {args['glob']!r} matched nothing")
    else:
        files = image.file_paths()
        random.Random(0).shuffle(files)
        rels = sorted(files[: max(1, round(args["fraction"] * len(files)))])
    paths: list[str] = []
    skipped: Counter[str] = Counter()
    for rel in rels:
        if (why := skip_reason(parents, rel)) is None:
            paths.append(rel)
        else:
            skipped[why] += 1
    return paths, skipped


def counted(kind: str, n: int) -> str:
    """`1 fifo`, `2 directories`, `3 paths through a symlink`."""
    if n == 1:
        return f"1 {kind}"
    head, _, tail = kind.partition(" ")
    if head == "path":
        return f"{n} paths {tail}"
    return f"{n} {kind[:-1]}ies" if kind.endswith("y") else f"{n} {kind}s"


def skipped_text(skipped: Counter[str]) -> str:
    """What a selection skipped, in one phrase: `1 fifo, 2 directories`."""
    return ", ".join(counted(kind, n) for kind, n in sorted(skipped.items()))

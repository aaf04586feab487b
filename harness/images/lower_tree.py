"""What the layers below a DIFF layer hold, path by path: `LowerTree`.

A DIFF root (overlay2's `diff`) holds one layer only, so the import of the next layer
asks this model where a FULL import would look in its root: a path through a lower
symlink or non-directory is refused the same way on both (images/layer_apply.py).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from layerbench.images.layer_encoding import is_whiteout
from layerbench.kernel import confined

__all__ = ["LowerTree"]


@dataclass
class _Node:
    kind: str  # dir symlink other
    children: dict[str, _Node] = field(default_factory=dict)


class LowerTree:
    """What the layers below hold, path by path, for a DIFF import (its root holds one layer only).

    A FULL root holds the lower layers, so a symlink or a file there stops an entry
    below it; a DIFF import asks this model instead and refuses the same entries.
    Pass one `LowerTree` to every layer of an image, bottom first: after each DIFF
    layer it takes in what the layer holds, by overlayfs's rules.
    """

    def __init__(self) -> None:
        self.top = _Node("dir")

    def kind(self, parts: tuple[str, ...]) -> str | None:
        """ "dir", "symlink", "other", or None when the layers below do not hold `parts`."""
        node: _Node | None = self.top
        for name in parts:
            node = node.children.get(name) if node is not None and node.kind == "dir" else None
        return None if node is None else node.kind

    def fold(self, root_fd: int, opaque_xattr: str) -> None:
        """Take in the DIFF layer at `root_fd`: whiteouts remove, opaque directories hide, the rest wins."""
        todo: list[tuple[int, _Node]] = [(os.dup(root_fd), self.top)]
        try:
            while todo:
                fd, node = todo.pop()
                try:
                    try:
                        if os.getxattr(fd, opaque_xattr) == b"y":
                            node.children.clear()
                    except OSError:
                        pass
                    for name in os.listdir(fd):
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        if is_whiteout(st):
                            node.children.pop(name, None)
                        elif stat.S_ISDIR(st.st_mode):
                            child = node.children.get(name)
                            if child is None or child.kind != "dir":
                                child = node.children[name] = _Node("dir")
                            todo.append((confined.opendir(fd, name), child))
                        else:
                            node.children[name] = _Node("symlink" if stat.S_ISLNK(st.st_mode) else "other")
                finally:
                    os.close(fd)
        finally:
            for fd, _ in todo:
                os.close(fd)

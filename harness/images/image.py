"""Images the harness builds: seeded synthetic ones, and the interface every source meets.

Synthetic images are shaped by the Docker Hub studies (Zhao et al.): a median image
of about 94 MB in about 1,090 files, most layers small, a few large files holding
most of the bytes. The generator draws file sizes from a log-normal distribution
scaled to the asked total, puts about half the files in the bottom (base OS) layer
and spreads the rest over the layers above, at least one file each.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from layerbench.driver import LayerFormat
from layerbench.images.layer_encoding import OPAQUE_XATTR, make_whiteout
from layerbench.kernel.confined import Parents, Root

__all__ = [
    "FileSpec",
    "LayerSpec",
    "Image",
    "SyntheticImage",
    "synthetic_image",
    "synthetic_from_table",
    "apply_layer",
    "write_whiteout",
    "skipped_at_import",
]


@dataclass(frozen=True)
class FileSpec:
    """One regular file of a layer: its path in the image, size and content seed."""

    path: str
    size: int
    seed: int
    mode: int = 0o644


@dataclass(frozen=True)
class LayerSpec:
    """A layer's new files and the paths it removes from the layers below."""

    files: tuple[FileSpec, ...]
    removals: tuple[str, ...] = ()


class Image(Protocol):
    """What the runner needs of an image, whatever its source.

    An image may also keep `skipped`, a list of what its last build's layers did not apply and why
    (`LayerStats.skipped`: `dev/null: device nodes need root`), started anew by layer 0; the cell
    records it (`skipped_at_import`, below)."""

    @property
    def layer_count(self) -> int: ...

    @property
    def total_bytes(self) -> int: ...

    @property
    def total_files(self) -> int: ...

    def file_paths(self) -> list[str]:
        """Regular files of the flattened image, sorted."""
        ...

    def apply(self, index: int, root: Path, layer_format: LayerFormat, *, opaque_xattr: str = OPAQUE_XATTR) -> None:
        """Write layer `index` (0 = bottom) into `root`, the directory create_layer handed out.

        Layers go in order, bottom first; `opaque_xattr` is the driver's (`Driver.opaque_xattr`).
        """
        ...


@dataclass(frozen=True)
class SyntheticImage:
    """A generated image; the same seed gives the same bytes on every driver."""

    layers: tuple[LayerSpec, ...]

    @property
    def layer_count(self) -> int:
        return len(self.layers)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for layer in self.layers for f in layer.files)

    @property
    def total_files(self) -> int:
        return sum(len(layer.files) for layer in self.layers)

    def file_paths(self) -> list[str]:
        present: set[str] = set()
        for layer in self.layers:
            for gone in layer.removals:
                present = {p for p in present if p != gone and not p.startswith(gone + "/")}
            present.update(f.path for f in layer.files)
        return sorted(present)

    def contents(self) -> dict[str, bytes]:
        """Every file's bytes by seed, generated ahead (keeps generation out of timed builds)."""
        return {str(f.seed): _content(f) for layer in self.layers for f in layer.files}

    def apply(
        self,
        index: int,
        root: Path,
        layer_format: LayerFormat,
        contents: dict[str, bytes] | None = None,
        *,
        opaque_xattr: str = OPAQUE_XATTR,
    ) -> None:
        layer = self.layers[index]  # removals only: no opaque directory, whatever the xattr
        for gone in layer.removals:
            write_whiteout(root, gone, layer_format)
        apply_layer(root, layer.files, layer_format, contents)


def skipped_at_import(image: Image) -> list[str]:
    """What the last build of `image` did not apply and why (none for an image that keeps no `skipped`)."""
    return list(getattr(image, "skipped", ()))


@functools.lru_cache(maxsize=8)  # a cell asks for its image more than once; generation is the slow part
def synthetic_image(
    layers: int,
    files: int,
    total_bytes: int,
    seed: int = 0,
    depth: int = 3,
    sigma: float = 2.0,
    extra: tuple[tuple[int, FileSpec], ...] = (),
    removals: tuple[tuple[int, str], ...] = (),
) -> SyntheticImage:
    """Generate an image; `extra` adds (layer, file) at fixed paths, `removals` (layer, path)."""
    rng = np.random.default_rng(seed)
    files = max(files, layers)
    per_layer = np.zeros(layers, dtype=int)
    per_layer[0] = files if layers == 1 else max(1, min(files // 2, files - (layers - 1)))
    rest = files - per_layer[0]
    if layers > 1:
        per_layer[1:] = rest // (layers - 1)
        per_layer[1 : 1 + rest % (layers - 1)] += 1
    weights = rng.lognormal(mean=0.0, sigma=sigma, size=files)
    sizes = np.floor(weights / weights.sum() * total_bytes).astype(int)
    sizes[0] += total_bytes - int(sizes.sum())  # exact total
    out: list[list[FileSpec]] = [[] for _ in range(layers)]
    index = 0
    for layer, count in enumerate(per_layer):
        for i in range(int(count)):
            dirs = [f"d{int(rng.integers(0, 8))}" for _ in range(int(rng.integers(0, depth + 1)))]
            path = "/".join(["usr", *dirs, f"l{layer}-f{i}.bin"])
            out[layer].append(FileSpec(path=path, size=int(sizes[index]), seed=seed * 1_000_003 + index))
            index += 1
    for layer, spec in extra:
        out[layer].append(spec)
    gone: list[list[str]] = [[] for _ in range(layers)]
    for layer, path in removals:
        gone[layer].append(path)
    return SyntheticImage(tuple(LayerSpec(tuple(f), tuple(g)) for f, g in zip(out, gone, strict=True)))


def _content(spec: FileSpec) -> bytes:
    return np.random.default_rng(spec.seed).bytes(spec.size)


def _remove(parents: Parents, path: str) -> None:
    """Delete `path` below the root, whatever it is (nothing there: nothing to do)."""
    try:
        pfd, name = parents.at(path)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=pfd)
    else:
        os.unlink(name, dir_fd=pfd)


def write_whiteout(root: Path, path: str, layer_format: LayerFormat) -> None:
    """Remove `path` the driver's way: delete it (FULL) or an overlay 0/0 char device (DIFF).

    `path` comes from a scenario (`[[image.remove]]`): it is resolved beneath `root`
    by openat2 (harness/kernel/confined.py), so it cannot reach above it.
    """
    with Root(root) as box, Parents(box) as parents:
        if layer_format is LayerFormat.FULL:
            _remove(parents, path)
            return
        box.makedirs(os.path.dirname(path))
        _remove(parents, path)
        pfd, name = parents.at(path)
        make_whiteout(name, pfd)


def apply_layer(
    root: Path, files: tuple[FileSpec, ...], layer_format: LayerFormat, contents: dict[str, bytes] | None = None
) -> None:
    """Write a layer's files under `root`, the directory `create_layer` handed out.

    An existing path is replaced (unlinked, then created), as the OCI spec says for
    a layer entry over a non-directory; with `LayerFormat.DIFF` the directory is
    empty to begin with and only the layer's own files land in it. Every path is
    resolved beneath `root` (openat2: no `..` above it, no symlink followed), so a
    scenario's `[[image.file]]` cannot write outside the layer.
    """
    made: set[str] = set()  # the directories made so far: one makedirs per directory
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    os.makedirs(root, exist_ok=True)  # the layer's own directory (the harness's path)
    with Root(root) as box, Parents(box) as parents:
        for spec in files:
            parent = os.path.dirname(spec.path)
            if parent not in made:
                box.makedirs(parent)
                made.add(parent)
            pfd, name = parents.at(spec.path)
            data = contents[str(spec.seed)] if contents is not None else _content(spec)
            try:
                fd = os.open(name, flags, spec.mode, dir_fd=pfd)
            except FileExistsError:  # a lower layer's file (FULL) or an earlier entry: replace it
                os.unlink(name, dir_fd=pfd)
                fd = os.open(name, flags, spec.mode, dir_fd=pfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if spec.mode & 0o7000:  # setuid, setgid, sticky: open(2) drops them under a umask
                    os.fchmod(fd, spec.mode)
            finally:
                os.close(fd)


def synthetic_from_table(img: dict[str, Any]) -> SyntheticImage:
    """A synthetic image from a scenario's `[image]` table (`source = "synthetic"`), parameters substituted."""
    seed = img.get("seed", 0)
    extra = tuple(
        (f.get("layer", 0), FileSpec(f["path"], f["size"], seed * 7919 + 17 + i, f.get("mode", 0o644)))
        for i, f in enumerate(img.get("file", []))
    )
    removals = tuple((r["layer"], r["path"]) for r in img.get("remove", []))
    return synthetic_image(
        layers=img.get("layers", 1),
        files=img.get("files", 100),
        total_bytes=img.get("bytes", 1 << 20),
        seed=seed,
        depth=img.get("depth", 3),
        sigma=float(img.get("sigma", 2.0)),
        extra=extra,
        removals=removals,
    )

"""Synthetic images: seeded, reproducible layer contents shaped like Docker Hub images.

Docker Hub studies (Zhao et al.): a median image of about 94 MB in about 1,090
files, most layers small, a few large files holding most of the bytes. The
generator draws file sizes from a log-normal distribution scaled to the asked
total, puts about half the files in the bottom (base OS) layer and spreads the
rest over the layers above, at least one file each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .driver import LayerFormat

__all__ = ["FileSpec", "ImageSpec", "synthetic_image", "apply_layer"]


@dataclass(frozen=True)
class FileSpec:
    """One regular file of a layer: its path in the image, size and content seed."""

    path: str
    size: int
    seed: int


@dataclass(frozen=True)
class ImageSpec:
    """An image as a list of layers, bottom first."""

    layers: tuple[tuple[FileSpec, ...], ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for layer in self.layers for f in layer)

    @property
    def total_files(self) -> int:
        return sum(len(layer) for layer in self.layers)


def synthetic_image(
    layers: int,
    files: int,
    total_bytes: int,
    seed: int = 0,
    depth: int = 3,
    sigma: float = 2.0,
    extra: tuple[tuple[int, FileSpec], ...] = (),
) -> ImageSpec:
    """Build an image spec; `extra` adds (layer index, file) pairs at fixed paths."""
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
    return ImageSpec(layers=tuple(tuple(layer) for layer in out))


def _content(spec: FileSpec) -> bytes:
    return np.random.default_rng(spec.seed).bytes(spec.size)


def apply_layer(root: Path, files: tuple[FileSpec, ...], layer_format: LayerFormat) -> None:
    """Write a layer's files under `root`, the directory `create_layer` handed out.

    An existing path is replaced (unlinked, then created), as the OCI spec says for
    a layer entry over a non-directory; with `LayerFormat.DIFF` the directory is
    empty to begin with and only the layer's own files land in it.
    """
    for spec in files:
        path = root / spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if layer_format is LayerFormat.FULL and os.path.lexists(path):
            path.unlink()
        with open(path, "wb") as f:
            f.write(_content(spec))

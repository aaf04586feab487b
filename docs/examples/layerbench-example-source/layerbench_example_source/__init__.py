"""layer-dirs: an example layerbench image source, each subdirectory of `path` one layer, bottom first."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench import LayerFormat, UserError, hookimpl

if TYPE_CHECKING:
    from layerbench.plugins import ImageSourceRegistry

__all__ = ["LayerDirsImage", "open_layer_dirs", "layerbench_register_image_sources"]
__version__ = "0.1.0"


@dataclass
class LayerDirsImage:
    """The layers are host directories; a file in a higher layer replaces the one below."""

    layers: list[Path]

    @property
    def layer_count(self) -> int:
        return len(self.layers)

    def _files(self) -> dict[str, int]:
        """Regular files of the flattened image and their sizes."""
        out: dict[str, int] = {}
        for layer in self.layers:
            for top, _, names in os.walk(layer):
                for name in names:
                    full = Path(top, name)
                    rel = str(full.relative_to(layer))
                    if full.is_file() and not full.is_symlink():
                        out[rel] = full.stat().st_size
                    else:
                        out.pop(rel, None)
        return out

    @property
    def total_bytes(self) -> int:
        return sum(self._files().values())

    @property
    def total_files(self) -> int:
        return len(self._files())

    def file_paths(self) -> list[str]:
        return sorted(self._files())

    def apply(self, index: int, root: Path, layer_format: LayerFormat, *, opaque_xattr: str = "") -> None:
        """Copy layer `index` into `root`. Only additions and replacements, so a DIFF layer (just this
        layer's files) and a FULL one (the parent's tree, changed in place) are written the same way."""
        src = self.layers[index]
        for top, dirs, names in os.walk(src):
            rel = Path(top).relative_to(src)
            for name in dirs:
                dest = root / rel / name
                if (src / rel / name).is_symlink():
                    dest.unlink(missing_ok=True)
                    os.symlink(os.readlink(src / rel / name), dest)
                else:
                    dest.mkdir(exist_ok=True)
                    shutil.copystat(src / rel / name, dest)
            for name in names:
                dest = root / rel / name
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                shutil.copy2(src / rel / name, dest, follow_symlinks=False)


def open_layer_dirs(table: Mapping[str, Any], base_dir: Path) -> LayerDirsImage:
    """The image of `[image] source = "layer-dirs"`: `path` (relative to the scenario file) holds one
    subdirectory per layer, applied in name order."""
    if not isinstance(table.get("path"), str):
        raise UserError("image.path: source 'layer-dirs' needs a path to a directory of layer directories")
    where = base_dir / table["path"]
    layers = sorted(p for p in where.iterdir() if p.is_dir()) if where.is_dir() else []
    if not layers:
        raise UserError(f"image.path: {where} holds no layer directories (source 'layer-dirs')")
    return LayerDirsImage(layers)


@hookimpl
def layerbench_register_image_sources(registry: ImageSourceRegistry) -> None:
    registry.add("layer-dirs", open_layer_dirs, description="each subdirectory of `path` a layer, in name order")

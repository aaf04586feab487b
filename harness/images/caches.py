"""The image caches under the work root: `cache_root` (where oci-cache/, debian-cache/ and the
registry caches live) and `synthetic_layout` (a synthetic image's OCI layout, written once)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from layerbench import environment
from layerbench.images.image import SyntheticImage
from layerbench.images.oci_write import write_layout
from layerbench.kernel.safety import DEFAULT_WORK_ROOT, prepare_work_root

__all__ = ["cache_root", "synthetic_layout"]


def cache_root() -> Path:
    """The work root the image caches live under (the run environment's, harness/environment.py; the
    default one outside a run), made if need be."""
    return prepare_work_root(environment.current().work_root or DEFAULT_WORK_ROOT)


def synthetic_layout(image: SyntheticImage, compression: str) -> Path:
    """The OCI layout of `image` with `compression` layers: written once under the work root's
    `oci-cache/` (named by the image's specification), then reused by every cell that asks. The work
    root is the run environment's (harness/environment.py; the default one outside a run)."""
    root = prepare_work_root(environment.current().work_root or DEFAULT_WORK_ROOT) / "oci-cache"
    key = hashlib.sha256(repr((image.layers, compression)).encode()).hexdigest()[:32]
    dest = root / f"{key}-{compression}"
    if (dest / "index.json").is_file():
        return dest
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        write_layout(image, partial / "layout", compression)
        os.rename(partial / "layout", dest)  # whole or not at all
    except OSError:
        if not (dest / "index.json").is_file():  # not another process writing the same layout first
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest

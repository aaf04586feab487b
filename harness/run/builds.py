"""A cell's images built on its store, the store's use read after each layer (docs/results.md)."""

from __future__ import annotations

from typing import Any

from layerbench.driver import Driver
from layerbench.images.build import build_image, layer_ids
from layerbench.images.image import Image
from layerbench.run import backing

__all__ = ["build_measured", "build_further_images"]


def build_measured(
    image: Image, driver: Driver, store: backing.BackingStore, base: int, name: str = "", parent: str | None = None
) -> tuple[str, list[int]]:
    """Build the image on `parent` (its base image's top layer, or None); return its top layer and
    the store's use over `base` after each layer. Layer ids are `layer<i>`, `<name>-layer<i>` for a named image."""
    after: list[int] = []
    top = build_image(
        driver,
        image,
        ids=layer_ids(image, name),
        parent=parent,
        sealed=lambda layer: after.append(store.usage().bytes - base),
    )
    return top, after


def build_further_images(
    images: list[tuple[str, str | None, Image]],
    driver: Driver,
    store: backing.BackingStore,
    base: int,
    tops: dict[str, str],
    image_bytes: int,
    disk: int,
) -> list[dict[str, Any]]:
    """Build the scenario's pre-built further images in order, each on its base's top layer (as `FROM`), on one store.

    `tops` starts as {"base": the [image]'s top layer} and gains each image's; `disk` is the store's
    use once the [image] is built. Returns, per image, its own bytes, its base's bytes (the whole
    chain below it), and the store's use after it and what it added (docs/results.md).
    """
    chain = {"base": image_bytes}
    out = []
    for name, base_name, image in images:
        top, after = build_measured(image, driver, store, base, name, tops[base_name] if base_name else None)
        tops[name] = top
        below = chain[base_name] if base_name else 0
        chain[name] = below + image.total_bytes
        out.append(
            {
                "name": name,
                "base": base_name,
                "layers": image.layer_count,
                "bytes": image.total_bytes,
                "base_bytes": below,
                "disk_bytes": after[-1],
                "added_bytes": after[-1] - disk,
            }
        )
        disk = after[-1]
    return out

"""Real mounts on real filesystems: assert what only the real mechanisms produce."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec, apply_layer

from ..conftest import driver_on_store, first_append_ns

pytestmark = pytest.mark.mounts
REAL = ["overlay2", "btrfs", "vfs"]
MiB = 1 << 20


def build(driver: Driver, layers: list[list[FileSpec]]) -> str:
    """An image of exactly these files per layer, as layers `l0`, `l1`...; return the top id."""
    return build_image(driver, files_image(layers), ids=[f"l{i}" for i in range(len(layers))])


@pytest.mark.parametrize("name", REAL)
def test_copy_up_of_64mib_costs_10x_4kib_only_on_overlay(name: str, work: Path) -> None:
    """What a first append writes, from the store's own accounting (overlay2 copies the whole
    file up, the others write a block), and the time it takes: a ratio of the fastest of five
    of each, with a margin far from both sides (a loaded machine only ever adds time)."""
    with driver_on_store(name, work) as (driver, store):
        top = build(
            driver, [[FileSpec("small.bin", 4096, 1), FileSpec("big.bin", 64 * MiB, 2)], [FileSpec("etc/conf", 100, 3)]]
        )
        small, big, written = [], [], []
        for i in range(5):
            driver.create_container(f"c{i}", top)
            root = driver.mount(f"c{i}")
            small.append(first_append_ns(root / "small.bin"))
            before = store.usage().bytes
            big.append(first_append_ns(root / "big.bin"))
            written.append(store.usage().bytes - before)
            driver.unmount(f"c{i}")
            driver.remove(f"c{i}")
    ratio = min(big) / min(small)
    if name == "overlay2":
        assert min(written) >= 64 * MiB, f"overlay2 copied up {min(written)} bytes of a 64 MiB file"
        assert ratio > 5, f"overlay2 copy-up 64 MiB / 4 KiB = {ratio:.1f}"  # 16384x the bytes
    else:
        assert max(written) < 4 * MiB, f"{name}: a 1-byte append wrote {max(written)} bytes"  # no copy


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", REAL)
def test_write_lands_in_the_container_layer_and_the_image_is_unchanged(name: str, work: Path) -> None:
    with driver_on_store(name, work) as (driver, _):
        bottom = driver.create_layer("l0", None)
        apply_layer(bottom, (FileSpec("data/f.bin", 1 * MiB, 5),), driver.layer_format)
        driver.seal_layer("l0")
        image_file = bottom / "data/f.bin"
        before = _sha(image_file)
        driver.create_container("c", "l0")
        root = driver.mount("c")
        first_append_ns(root / "data/f.bin")
        assert (root / "data/f.bin").stat().st_size == MiB + 1
        assert _sha(image_file) == before and image_file.stat().st_size == MiB
        if name == "overlay2":
            upper = Path(driver.inspect("c")["UpperDir"]) / "data/f.bin"
            assert upper.stat().st_size == MiB + 1  # copied up whole, then appended
        driver.unmount("c")


@pytest.mark.parametrize("name", REAL)
def test_disk_of_20_containers(name: str, work: Path) -> None:
    with driver_on_store(name, work, size=1024 * MiB) as (driver, store):
        base = store.usage().bytes
        top = build(driver, [[FileSpec(f"f{i}.bin", 2 * MiB, i) for i in range(16)]])
        image = store.usage().bytes - base
        for i in range(20):
            driver.create_container(f"c{i}", top)
            driver.mount(f"c{i}")
        containers = store.usage().bytes - base - image
        for i in range(20):
            driver.unmount(f"c{i}")
    assert image >= 32 * MiB
    if name == "vfs":
        assert containers >= 18 * image, f"vfs: 20 containers took {containers / image:.1f} images"
    else:
        assert containers < 0.05 * image, f"{name}: 20 containers took {containers / image:.3f} of an image"


@pytest.mark.parametrize("name", REAL)
def test_delete_in_a_container_hides_the_file_from_that_container_only(name: str, work: Path) -> None:
    with driver_on_store(name, work) as (driver, _):
        top = build(driver, [[FileSpec("a/gone.txt", 10, 1), FileSpec("a/kept.txt", 10, 2)], [FileSpec("b", 1, 3)]])
        driver.create_container("x", top)
        driver.create_container("y", top)
        x, y = driver.mount("x"), driver.mount("y")
        os.unlink(x / "a/gone.txt")
        assert sorted(os.listdir(x / "a")) == ["kept.txt"]
        assert sorted(os.listdir(y / "a")) == ["gone.txt", "kept.txt"]
        if name == "overlay2":
            assert (Path(driver.inspect("l0")["UpperDir"]) / "a/gone.txt").exists()
            whiteout = (Path(driver.inspect("x")["UpperDir"]) / "a/gone.txt").lstat()
            assert whiteout.st_rdev == 0 and (whiteout.st_mode & 0o170000) == 0o020000  # 0/0 char device
        driver.unmount("x")
        driver.unmount("y")


@pytest.mark.parametrize("new_api", [True, False], ids=["fsconfig-lowerdir+", "relative-short-names"])
def test_overlay2_mounts_128_layers_in_dockers_layout(new_api: bool, work: Path) -> None:
    with driver_on_store("overlay2", work) as (driver, _):
        driver.new_api = new_api  # type: ignore[attr-defined]
        top = build(driver, [[FileSpec(f"layer{i}.txt", 16, i)] for i in range(128)])
        home = driver.home
        assert len((home / top / "link").read_text()) == 26
        lower = (home / top / "lower").read_text().split(":")
        assert len(lower) == 127 and all(p.startswith("l/") for p in lower)
        assert os.readlink(home / lower[-1]) == "../l0/diff"
        driver.create_container("c", top)
        root = driver.mount("c")
        assert (root / "layer0.txt").stat().st_size == 16  # from the bottom of 128 layers
        assert len(os.listdir(root)) == 128
        driver.unmount("c")
        assert not (home / "c" / "merged").exists()

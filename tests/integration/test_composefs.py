"""composefs on its real mechanism: what only a content store under an EROFS metadata image gives."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec, LayerSpec, SyntheticImage, synthetic_image
from layerbench.kernel import syscalls
from layerbench.testing import Tree, compare, snapshot

from ..conftest import driver_on_store

pytestmark = pytest.mark.mounts
MiB = 1 << 20
METACOPY, REDIRECT = "trusted.overlay.metacopy", "trusted.overlay.redirect"


def _sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _objects(driver: Driver) -> list[Path]:
    return [Path(top, n) for top, _, names in os.walk(driver.home / "objects") for n in names]


def _build(driver: Driver, image: SyntheticImage, prefix: str) -> str:
    """Build `image` as a layer stack named `<prefix>0`, `<prefix>1`...; return the top layer."""
    ids = [f"{prefix}{i}" for i in range(image.layer_count)]
    return build_image(driver, image, ids=ids, contents=image.contents())


def _twin_images(total: int = 32 * MiB) -> tuple[SyntheticImage, SyntheticImage, float]:
    """Two images whose files share about 90% of their bytes, in different layers and paths.

    B holds A's files under srv/ in two layers instead of three, every tenth file with new
    content. Returns both and the fraction of B's bytes that are also A's.
    """
    a = synthetic_image(layers=3, files=200, total_bytes=total, seed=7, sigma=0.5)
    files = [f for layer in a.layers for f in layer.files]
    twins = tuple(
        FileSpec(f"srv/{f.path}", f.size, f.seed + (10**9 if i % 10 == 0 else 0)) for i, f in enumerate(files)
    )
    b = SyntheticImage((LayerSpec(twins[:120]), LayerSpec(twins[120:])))
    shared = sum(f.size for i, f in enumerate(files) if i % 10) / b.total_bytes
    return a, b, shared


def _two_images_bytes(name: str, work: Path) -> tuple[int, int]:
    """Disk used (statvfs) by image A alone, then by A and B, on a fresh store."""
    a, b, _ = _twin_images()
    with driver_on_store(name, work) as (driver, store):
        base = store.usage().bytes
        _build(driver, a, "a")
        one = store.usage().bytes - base
        _build(driver, b, "b")
        return one, store.usage().bytes - base


def test_two_images_sharing_90_percent_cost_under_1_2x_on_composefs_and_about_2x_on_overlay2(tmp_path: Path) -> None:
    _, _, shared = _twin_images()
    assert 0.85 < shared < 0.95, f"the twin images share {shared:.0%} of their bytes"
    cfs_one, cfs_two = _two_images_bytes("composefs", tmp_path / "composefs")
    ovl_one, ovl_two = _two_images_bytes("overlay2", tmp_path / "overlay2")
    print(
        f"\ncomposefs: one image {cfs_one} B, two {cfs_two} B ({cfs_two / cfs_one:.2f}x); "
        f"overlay2: one {ovl_one} B, two {ovl_two} B ({ovl_two / ovl_one:.2f}x); shared {shared:.1%}"
    )
    assert cfs_two / cfs_one < 1.2
    assert ovl_two / ovl_one > 1.8


def test_an_object_is_stored_once_however_many_layers_and_images_hold_it(tmp_path: Path) -> None:
    one = files_image([(FileSpec(f"copy{i}", 3 * MiB, seed=1),) for i in range(4)])  # the same bytes, four layers
    two = files_image([(FileSpec("again", 3 * MiB, seed=1), FileSpec("new", MiB, seed=2))])  # again, and new ones
    same, other = two.contents()["1"], two.contents()["2"]
    with driver_on_store("composefs", tmp_path) as (driver, _):
        build_image(driver, one, ids=[f"l{i}" for i in range(4)])
        build_image(driver, two, ids=["x0"])
        driver.create_container("c", "l3")
        (driver.mount("c") / "written-in-a-container").write_bytes(same)
        driver.unmount("c")
        driver.commit("c", "committed")
        objects = _objects(driver)
        digest = hashlib.sha256(same).hexdigest()
        assert sorted(p.name for p in objects) == sorted([digest[2:], hashlib.sha256(other).hexdigest()[2:]])
        obj = driver.home / "objects" / digest[:2] / digest[2:]
        assert os.stat(obj).st_nlink == 1 and _sha(obj) == digest
        driver.create_container("v", "committed")
        root = driver.mount("v")
        try:
            names = [f"copy{i}" for i in range(4)] + ["written-in-a-container"]
            assert all((root / n).read_bytes() == same for n in names)
        finally:
            driver.unmount("v")
        driver.remove("v")
        driver.remove("committed")
        driver.remove("x0")  # its "new" object goes with it; the shared one stays for l0..l3
        assert [p.name for p in _objects(driver)] == [digest[2:]]


def _mounted_image(image: Path, at: Path) -> Path:
    at.mkdir()
    syscalls.mount(str(image), str(at), "erofs", syscalls.MS_RDONLY)
    return at


def test_the_metadata_image_holds_no_file_data_and_reads_come_from_the_objects(tmp_path: Path) -> None:
    image = synthetic_image(layers=2, files=100, total_bytes=48 * MiB, seed=3, removals=((1, "usr/l0-f0.bin"),))
    with driver_on_store("composefs", tmp_path / "store") as (driver, _):
        top = _build(driver, image, "l")
        meta_image = Path(driver.inspect(top)["MetadataImage"])
        meta_bytes = meta_image.read_bytes()
        print(f"\nmetadata image {len(meta_bytes)} B for {image.total_bytes} B in {image.total_files} files")
        assert len(meta_bytes) < image.total_bytes / 50
        contents = image.contents()
        for spec in (f for layer in image.layers for f in layer.files if f.size >= 4096):
            sample = contents[str(spec.seed)][:64]
            assert sample not in meta_bytes, f"{spec.path}: its bytes are in the metadata image"
        driver.create_container("c", top)
        root = driver.mount("c")
        meta = _mounted_image(meta_image, tmp_path / "meta")
        try:
            paths = image.file_paths()
            assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == paths
            for rel in paths:
                digest = _sha(root / rel)
                redirect = os.getxattr(meta / rel, REDIRECT).decode()
                assert redirect == f"/{digest[:2]}/{digest[2:]}", rel
                assert os.getxattr(meta / rel, METACOPY) == b""
                assert os.stat(meta / rel).st_size == os.stat(root / rel).st_size
                assert _sha(driver.home / "objects" / redirect.lstrip("/")) == digest
        finally:
            syscalls.umount(str(meta))
            driver.unmount("c")


def test_the_container_tree_equals_overlay2s_for_the_same_image(tmp_path: Path) -> None:
    image = synthetic_image(
        layers=4,
        files=120,
        total_bytes=8 * MiB,
        seed=11,
        extra=((2, FileSpec("usr/bin/tool", 5000, 99, 0o4755)),),
        removals=((1, "usr/l0-f1.bin"), (3, "usr/bin")),
    )
    trees = {}
    for name in ("composefs", "overlay2"):
        with driver_on_store(name, tmp_path / name) as (driver, _):
            driver.create_container("c", _build(driver, image, "l"))
            try:
                trees[name] = snapshot(driver.mount("c"))
            finally:
                driver.unmount("c")
    assert len(trees["overlay2"].entries) > 100
    # The image source sets no mtimes: each build's files carry the time they were written.
    ovl, cfs = (
        Tree({p: replace(e, mtime_ns=None) for p, e in trees[n].entries.items()}, trees[n].links)
        for n in ("overlay2", "composefs")
    )
    assert compare(ovl, cfs) == []


def test_chown_copies_up_metadata_only_and_an_append_copies_the_file_up(tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    with driver_on_store("composefs", tmp_path) as (driver, _):
        (driver.create_layer("base", None) / "f").write_bytes(data)
        driver.seal_layer("base")
        driver.create_container("c", "base")
        upper = Path(driver.inspect("c")["UpperDir"])
        root = driver.mount("c")
        try:
            os.chown(root / "f", 1000, 1000)
            copied = os.stat(upper / "f")
            assert os.getxattr(upper / "f", METACOPY) == b""
            assert copied.st_size == len(data) and copied.st_blocks * 512 <= 4096  # at most an xattr block
            with open(root / "f", "ab") as f:
                f.write(b"+")
            assert (upper / "f").read_bytes() == data + b"+"
            assert METACOPY not in os.listxattr(upper / "f")
            assert (root / "f").read_bytes() == data + b"+"
        finally:
            driver.unmount("c")
        digest = hashlib.sha256(data).hexdigest()
        assert _sha(driver.home / "objects" / digest[:2] / digest[2:]) == digest  # the object is untouched

"""graphtest-style micro-benchmarks for every driver: `pytest benchmarks/ --benchmark-only`.

moby's graphtest benchmarks (Exists, GetEmpty, DeepLayerRead, DiffN) and a create
and a commit, through the layerbench Driver interface:

- exists: `inspect` of a layer (the interface has no Exists; inspect is its cheapest query)
- get_empty: mount + unmount of a container on an empty layer (Get + Put)
- create_layer: a child layer on a one-file base
- deep_read: open + read + close of a file 20 and 128 layers down, through a container
- diff: the container's changes against its image (see `conftest.changes`), with a
  small (10 files) and a 10,000-file change set
- commit: a container with 10 changed files committed as a new layer
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from layerbench.driver import Driver, Style
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec

ROUNDS = 15


def _small_file(layer: int, j: int, per_layer: int) -> FileSpec:
    """File `j` of a `build_layers` layer: `d<layer>/f<j>`, 128 bytes."""
    return FileSpec(f"d{layer}/f{j}", 128, seed=layer * per_layer + j)


def build_layers(driver: Driver, count: int, files_per_layer: int = 1) -> tuple[str, dict[str, Path]]:
    """`count` layers, each adding `files_per_layer` small files; returns the top id and the layer dirs."""
    n = files_per_layer
    image = files_image([[_small_file(i, j, n) for j in range(n)] for i in range(count)])
    dirs: dict[str, Path] = {}
    top = build_image(driver, image, created=dirs.__setitem__)
    return top, dirs


def changes(upper: Path | None, container_root: Path, image_root: Path) -> list[str]:
    """The container's changes against its image ("diff").

    A union driver keeps them apart: the walk of its upper directory (`upper`). Any other
    driver holds whole trees: a walk of the container compared, entry by entry
    (type, size, mtime, mode, owner), with the image, plus what the image has and the
    container lost — what Docker's naive diff driver does.
    """
    if upper is not None:  # the container's own layer (inspect's UpperDir)
        return [os.path.join(top, n) for top, dirs, files in os.walk(upper) for n in dirs + files]
    out: list[str] = []
    seen: set[str] = set()
    for top, dirs, files in os.walk(container_root):
        rel_top = os.path.relpath(top, container_root)
        for name in dirs + files:
            rel = os.path.normpath(os.path.join(rel_top, name))
            seen.add(rel)
            a = os.lstat(os.path.join(top, name))
            try:
                b = os.lstat(os.path.join(image_root, rel))
            except FileNotFoundError:
                out.append("A " + rel)
                continue
            if (a.st_mode, a.st_size, a.st_mtime_ns, a.st_uid, a.st_gid) != (
                b.st_mode,
                b.st_size,
                b.st_mtime_ns,
                b.st_uid,
                b.st_gid,
            ) and not (os.path.isdir(os.path.join(top, name)) and a.st_mode == b.st_mode):
                out.append("C " + rel)
    for top, dirs, files in os.walk(image_root):
        rel_top = os.path.relpath(top, image_root)
        for name in dirs + files:
            rel = os.path.normpath(os.path.join(rel_top, name))
            if rel not in seen:
                out.append("D " + rel)
    return out


def _ids(prefix: str) -> Any:
    return (f"{prefix}{i}" for i in itertools.count())


def test_exists(benchmark: Any, bench_driver: Driver) -> None:
    top, _ = build_layers(bench_driver, 1)
    benchmark.pedantic(bench_driver.inspect, args=(top,), rounds=ROUNDS * 4, warmup_rounds=2)


def test_get_empty(benchmark: Any, bench_driver: Driver) -> None:
    bench_driver.create_layer("empty", None)
    bench_driver.seal_layer("empty")
    bench_driver.create_container("c", "empty")

    def get_put() -> None:
        root = bench_driver.mount("c")
        os.listdir(root)
        bench_driver.unmount("c")

    benchmark.pedantic(get_put, rounds=ROUNDS * 2, warmup_rounds=1)


def test_create_layer(benchmark: Any, bench_driver: Driver) -> None:
    top, _ = build_layers(bench_driver, 1, files_per_layer=10)
    ids = _ids("child")
    made: list[str] = []

    def create() -> None:
        lid = next(ids)
        bench_driver.create_layer(lid, top)
        bench_driver.seal_layer(lid)
        made.append(lid)

    benchmark.pedantic(create, rounds=ROUNDS, warmup_rounds=1)
    for lid in made:
        bench_driver.remove(lid)


@pytest.mark.parametrize("depth", [20, 128])
def test_deep_read(benchmark: Any, bench_driver: Driver, depth: int) -> None:
    top, _ = build_layers(bench_driver, depth)
    spec = _small_file(0, 0, 1)
    want = files_image([[spec]]).contents()[str(spec.seed)]  # as build_layers wrote it
    bench_driver.create_container("c", top)
    path = str(bench_driver.mount("c") / "d0" / "f0")  # in the bottom layer

    def read() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, 4096)
        finally:
            os.close(fd)

    try:
        assert benchmark.pedantic(read, rounds=ROUNDS * 4, warmup_rounds=2) == want
    finally:
        bench_driver.unmount("c")


@pytest.mark.parametrize("files", [10, 10_000], ids=["small", "10k"])
def test_diff(benchmark: Any, bench_driver: Driver, files: int) -> None:
    if bench_driver.style is Style.NONE:
        pytest.skip(f"{bench_driver.name}: style none, the container is the image: no changes to list")
    top, dirs = build_layers(bench_driver, 2, files_per_layer=10)
    bench_driver.create_container("c", top)
    root = bench_driver.mount("c")
    (root / "new").mkdir()
    for i in range(files):
        (root / "new" / f"f{i}").write_bytes(b"y")
    info = bench_driver.inspect("c")
    upper = Path(info["UpperDir"]) if "UpperDir" in info else None
    image_root = dirs[top]
    try:
        found = benchmark.pedantic(
            changes, args=(upper, root, image_root), rounds=5 if files > 100 else ROUNDS, warmup_rounds=1
        )
    finally:
        bench_driver.unmount("c")
    assert sum(1 for c in found if "new" in c) >= files


def test_commit(benchmark: Any, bench_driver: Driver) -> None:
    top, _ = build_layers(bench_driver, 2, files_per_layer=10)
    bench_driver.create_container("c", top)
    root = bench_driver.mount("c")
    for i in range(10):
        (root / "d0" / f"f{i}").write_bytes(b"changed")
    bench_driver.unmount("c")
    ids = _ids("commit")
    benchmark.pedantic(lambda: bench_driver.commit("c", next(ids)), rounds=ROUNDS, warmup_rounds=1)

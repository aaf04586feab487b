"""Several images in one store, on real drivers: a base stored once (or copied, on vfs), files shared
across images on composefs, containers started from a named image, the tutorial's claims on a small run,
and compressed OCI images packed by the harness (their unpack through the drivers: test_unpack.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from layerbench.analysis.claims import HELD, evaluate
from layerbench.driver import LayerFormat
from layerbench.images.image import LayerSpec, SyntheticImage, synthetic_image
from layerbench.images.image_sources import open_image
from layerbench.images.oci import read_image
from layerbench.images.oci_write import COMPRESSIONS, write_layout
from layerbench.plugins import default_plugins
from layerbench.run.runner import Cell, RunConfig, run, run_cell
from layerbench.run.sampling import Sampling
from layerbench.scenario import builtin_scenarios, load_scenario

from ..conftest import require

pytestmark = pytest.mark.mounts
MiB = 1 << 20
SMALL = {"base_bytes": [16_000_000], "app_bytes": [2_000_000]}
ONCE = Sampling(samples=1, warmup=0, min_time_s=0.0, cold=False)


def image_sharing(name: str, tmp_path: Path) -> dict[str, Any]:
    require(name)
    scenario = load_scenario(builtin_scenarios()["image-sharing"], SMALL)
    cls = default_plugins().driver(name)
    out = run_cell(Cell(scenario, cls, scenario.param_sets()[0], cls.backings[0]), tmp_path / "cell", ONCE)
    assert out["status"] == "ok", out["error"]
    assert not (tmp_path / "cell").exists()
    return {i["name"]: i for i in out["images"]}


@pytest.mark.parametrize("name", ["overlay2", "btrfs", "composefs"])
def test_union_and_snapshot_drivers_add_only_each_images_own_layers(name: str, tmp_path: Path) -> None:
    images = image_sharing(name, tmp_path)
    assert list(images) == ["app-a", "app-b", "app-c"]
    for image in images.values():
        assert image["base_bytes"] == 16_000_000 and image["bytes"] == 2_000_000
        assert image["added_bytes"] < image["bytes"] + 0.25 * image["base_bytes"]  # the base is not stored again
    assert images["app-b"]["added_bytes"] >= 0.9 * images["app-b"]["bytes"]  # its own files are stored
    if name == "composefs":  # app-c's files are app-a's: content-addressed objects stored once
        assert images["app-c"]["added_bytes"] < 0.25 * images["app-c"]["bytes"]
    else:  # layer stores keep every layer's files, identical or not
        assert images["app-c"]["added_bytes"] >= 0.9 * images["app-c"]["bytes"]


def test_vfs_copies_the_base_into_every_layer_of_every_image(tmp_path: Path) -> None:
    images = image_sharing("vfs", tmp_path)
    for image in images.values():  # each layer a full copy of the image below it
        assert image["added_bytes"] >= 0.95 * image["layers"] * image["base_bytes"]


NAMED = """
name = "named"
description = "A container from a named image, its file checked."
[image]
layers = 1
files = 20
bytes = 200000
[[images]]
name = "app"
base = "base"
layers = 1
files = 1
bytes = 1
[[images.file]]
path = "etc/app.conf"
size = 5000
[repeat]
samples = 1
warmup = 0
[[step]]
op = "start"
image = "app"
[[step]]
op = "expect"
path = "etc/app.conf"
sha256 = "SHA"
[[step]]
op = "expect"
path = "usr/l0-f0.bin"
layer = 0
"""


@pytest.mark.parametrize("name", ["overlay2", "vfs"])
def test_start_runs_the_named_image_and_expect_fails_naming_the_file(name: str, tmp_path: Path) -> None:
    require(name)
    path = tmp_path / "named.toml"
    path.write_text(NAMED.replace("SHA", "0" * 64))
    app = load_scenario(path).images({})[0][2]
    assert isinstance(app, SyntheticImage)
    spec = next(f for f in app.layers[0].files if f.path == "etc/app.conf")
    data = SyntheticImage((LayerSpec((spec,)),)).contents()[str(spec.seed)]
    cls = default_plugins().driver(name)

    out = run_cell(Cell(load_scenario(path), cls, {}, cls.backings[0]), tmp_path / "bad", ONCE)
    assert out["status"] == "error"
    assert "step[1] expect" in out["error"] and "etc/app.conf: the merged view reads sha256" in out["error"]

    path.write_text(NAMED.replace("SHA", hashlib.sha256(data).hexdigest()))
    base = load_scenario(path).image({})
    assert isinstance(base, SyntheticImage)
    base_file = base.layers[0].files[0].path
    path.write_text(path.read_text().replace("usr/l0-f0.bin", base_file))
    out = run_cell(Cell(load_scenario(path), cls, {}, cls.backings[0]), tmp_path / "good", ONCE)
    assert out["status"] == "ok", out["error"]  # the app's own file and the base's, through one container
    assert out["metrics"]["expect_files"]["samples"] == [1, 1]


def test_the_tutorial_claims_hold_on_a_small_run(tmp_path: Path) -> None:
    drivers = ("overlay2", "vfs", "btrfs")
    for name in drivers:
        require(name)
    config = RunConfig(
        scenarios=("container-remove", "volume-writes", "nearest-layer"),
        drivers=drivers,
        samples=1,
        warmup=0,
        target_ci=0.0,
        work_root=tmp_path / "work",
        results_dir=tmp_path / "results",
    )
    doc, _ = run(config)
    assert all(c["status"] == "ok" for c in doc["cells"]), [c["error"] for c in doc["cells"]]
    rows = {r["claim"].split(":")[0]: r for r in evaluate(doc)}
    for claim in (
        "Removing a container removes its layer",
        "tmpfs writes never reach the host file system",
        "The nearest layer wins in the merged view",
    ):
        assert rows[claim]["verdict"] == HELD, rows[claim]["figures"]
        assert all(d in rows[claim]["figures"] for d in drivers)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_packed_layout_imports_as_the_synthetic_image(compression: str, tmp_path: Path) -> None:
    image = synthetic_image(layers=3, files=30, total_bytes=300_000, seed=5, removals=((2, "usr"),))
    first, again = tmp_path / "a", tmp_path / "b"
    write_layout(image, first, compression)
    write_layout(image, again, compression)
    assert (first / "index.json").read_bytes() == (again / "index.json").read_bytes()  # deterministic digests
    blobs = read_image(first)  # digests verified
    assert [b.media_type for b in blobs] == [COMPRESSIONS[compression]] * 3
    contents = image.contents()
    imported = open_image("oci", first)
    for i in range(2):
        root = tmp_path / f"layer{i}"
        root.mkdir()
        imported.apply(i, root, LayerFormat.FULL)
        for spec in image.layers[i].files:
            assert (root / spec.path).read_bytes() == contents[str(spec.seed)]
    assert imported.file_paths() == image.file_paths()  # layer 2's whiteout of usr hides the lower files

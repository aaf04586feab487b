"""Scenario steps on real drivers: volumes bypass copy-up, EXDEV is an outcome, commit, whiteouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbench.plugins import default_plugins
from layerbench.run.runner import Cell, run_cell
from layerbench.scenario import load_scenario

from ..conftest import require

pytestmark = pytest.mark.mounts
MiB = 1 << 20

SCENARIO = """
name = "steps"
description = "Volumes, renames, commit and a deleted file, on a small image."

[image]
layers = 3
files = 40
bytes = 400000

[[image.file]]
path = "data/db.bin"
size = 8388608

[[image.file]]
path = "vol/db.bin"
size = 8388608

[[image.file]]
path = "gone/x.bin"
size = 1000

[[image.remove]]
path = "gone/x.bin"
layer = 2

[repeat]
samples = 2
warmup = 0

[[step]]
op = "start"

[[step]]
op = "volume"
path = "vol"
populate = true

[[step]]
op = "usage"

[[step]]
op = "overwrite"
path = "vol/db.bin"
measure = "overwrite_volume_ns"

[[step]]
op = "usage"

[[step]]
op = "overwrite"
path = "data/db.bin"
measure = "overwrite_container_ns"

[[step]]
op = "usage"

[[step]]
op = "stat"
path = "gone/x.bin"
allow_errors = ["ENOENT"]

[[step]]
op = "rename"
path = "usr"
to = "usr2"
allow_errors = ["EXDEV"]

[[step]]
op = "write"
path = "pkg/f{i}"
count = 20
bytes = 100000

[[step]]
op = "commit"

[[step]]
op = "start"
image = "committed"

[[step]]
op = "read"
path = "pkg/f19"
measure = "read_committed_ns"
"""


@pytest.mark.parametrize("name", ["overlay2", "btrfs", "vfs"])
def test_steps_on_a_real_driver(name: str, tmp_path: Path) -> None:
    require(name)
    path = tmp_path / "steps.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    cls = default_plugins().driver(name)
    out = run_cell(Cell(scenario, cls, {}, cls.backings[0]), tmp_path / "cell")
    assert out["status"] == "ok", out["error"]
    disk = out["metrics"]["disk_bytes"]["samples"][:3]  # first sample: after volume, volume write, container write
    assert disk[1] - disk[0] < 1 * MiB  # a volume write goes around the storage driver
    if name == "overlay2":
        assert disk[2] - disk[1] >= 8 * MiB  # the container write copied the 8 MiB file up
        assert out["outcomes"]["step[8] rename"] == {"EXDEV": 2}
    else:
        assert disk[2] - disk[1] < 8 * MiB and "step[8] rename" not in out["outcomes"]
    assert out["outcomes"]["step[7] stat"] == {"ENOENT": 2}  # the whiteout hides the file
    layers = out["image_layers_disk_bytes"]
    assert layers == sorted(layers)  # deleting in a later layer did not shrink the image
    assert len(out["metrics"]["read_committed_ns"]["samples"]) == 2  # the committed image has the files
    assert out["metrics"]["written_bytes"]["samples"] == [2 * 4 + 20 * 100000] * 2
    assert not (tmp_path / "cell").exists()


COMMIT_ALONE = """
name = "commit-alone"
description = "Write 4 MiB into a container, commit it, remove the container, read the store."
[image]
layers = 2
files = 20
bytes = 1000000
[repeat]
samples = 2
warmup = 0
[[step]]
op = "start"
[[step]]
op = "write"
path = "pkg/f{i}"
count = 16
bytes = 262144
[[step]]
op = "commit"
[[step]]
op = "remove"
[[step]]
op = "usage"
prefix = "layer_alone"
[[step]]
op = "start"
image = "committed"
"""


@pytest.mark.parametrize("name", ["overlay2", "btrfs"])
def test_what_a_committed_layer_holds_alone_is_the_containers_changes(name: str, tmp_path: Path) -> None:
    # btrfs: the commit is a snapshot of the live container, sharing every extent with it, so the disk it
    # adds beside the container is next to nothing; once the container is gone the layer holds the 4 MiB
    require(name)
    path = tmp_path / "commit-alone.toml"
    path.write_text(COMMIT_ALONE)
    cls = default_plugins().driver(name)
    out = run_cell(Cell(load_scenario(path), cls, {}, cls.backings[0]), tmp_path / "cell")
    assert out["status"] == "ok", out["error"]
    written = out["metrics"]["written_bytes"]["samples"][0]
    image = out["metrics"]["image_disk_bytes"]["samples"][0]  # the usage step reads the store, image and all
    alone = [a - image for a in out["metrics"]["layer_alone_disk_bytes"]["samples"]]
    beside = out["metrics"]["commit_layer_bytes"]["samples"]
    assert written == 4 * MiB
    assert all(0.9 * written <= a <= 1.5 * written for a in alone), alone
    if name == "btrfs":
        assert max(beside) < 0.25 * written, beside
    else:  # overlay2 copies the container's upper directory into the new layer
        assert all(b >= 0.9 * written for b in beside), beside


VOLUME_THEN_FAIL = """
name = "volume-fail"
description = "A tmpfs volume, then a step that fails the cell."
[params]
p = ["vol"]
[image]
files = 4
bytes = 400
[repeat]
samples = 1
warmup = 0
[[step]]
op = "start"
[[step]]
op = "volume"
path = "${p}"
kind = "tmpfs"
[[step]]
op = "read"
path = "missing.bin"
"""


@pytest.mark.parametrize("target", ["vol", "../../../../sentinel"])
def test_a_volume_is_released_after_a_failed_cell_and_never_lands_outside(target: str, tmp_path: Path) -> None:
    """Issue 20: a tmpfs volume over a host directory stayed mounted after the cell failed. Inside
    the root it is unmounted with the cell; a target outside (the scenario check bypassed) is
    refused before any mount. The null driver's root is <cell>/mnt/null/root: four `..` reach tmp_path."""
    from unittest import mock

    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "host-file").write_bytes(b"host")
    path = tmp_path / "s.toml"
    path.write_text(VOLUME_THEN_FAIL)
    with mock.patch("layerbench.scenario._relative"):  # past the check
        scenario = load_scenario(path)
    cls = default_plugins().driver("null")
    out = run_cell(Cell(scenario, cls, {"p": target}, "dir"), tmp_path / "cell")
    assert out["status"] == "error"
    if target == "vol":
        assert "missing.bin" in out["error"]
    else:
        assert "must be relative to the container root" in out["error"]
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()
    assert os.listdir(sentinel) == ["host-file"] and not (tmp_path / "cell").exists()

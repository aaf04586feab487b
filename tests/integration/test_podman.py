"""Podman as an engine driver: conformance cases on its overlay storage driver, and a run's cell.

Every Podman operation is a `podman` command in a private mount namespace of ours
(drivers/podman.py), so these tests are few: seven conformance cases on `podman/overlay`
(the whole suite but the 128-layer case passes too: `pytest --pyargs
layerbench.testing.conformance --layerbench-driver podman/overlay`), a cell of a run, and
the faithfulness of our overlay2, vfs and btrfs to Podman's drivers of those names on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbench.drivers.podman import PodmanDriver
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec
from layerbench.plugins import default_plugins
from layerbench.run.backing import allocated_bytes
from layerbench.run.ledger import Ledger
from layerbench.run.plan import RunConfig
from layerbench.run.runner import run
from layerbench.run.session import open_driver
from layerbench.testing.conformance import (
    test_an_id_that_exists_is_refused,
    test_commit_of_a_mounted_container,
    test_committed_container_image_starts_again,
    test_container_writes_stay_in_the_container,
    test_empty_layer_root_is_0755_root,
    test_removing_a_layer_with_children_is_refused,
    test_whiteouts_and_opaque_dirs_stay_hidden_in_grandchildren,
)
from tests.conftest import require

pytestmark = pytest.mark.mounts

LAYERBENCH_DRIVERS = ["podman/overlay"]

__all__ = [
    "test_an_id_that_exists_is_refused",
    "test_commit_of_a_mounted_container",
    "test_committed_container_image_starts_again",
    "test_container_writes_stay_in_the_container",
    "test_empty_layer_root_is_0755_root",
    "test_removing_a_layer_with_children_is_refused",
    "test_whiteouts_and_opaque_dirs_stay_hidden_in_grandchildren",
]


def _holders() -> list[int]:
    """Pids of Podman namespace holders (`sleep infinity` under our unshare) still alive."""
    pids = []
    for pid in filter(str.isdigit, (p.name for p in Path("/proc").iterdir())):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ns = Path(f"/proc/{pid}/ns/mnt").readlink()
        except OSError:
            continue
        if cmd[:2] == [b"sleep", b"infinity"] and ns != Path("/proc/self/ns/mnt").readlink():
            pids.append(int(pid))
    return pids


def test_a_podman_cell_runs_in_its_own_namespace_and_leaves_nothing(
    engine_cell: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's cell on podman/overlay: start (podman create + mount), copy-up through the mount,
    commit, disk; the namespace holder in the ledger and gone after; no mount in ours at any time."""
    require("podman/overlay")
    before = set(_holders())
    noted: list[tuple[str, str]] = []
    made, released = Ledger.made, Ledger.released

    def note_made(self: Ledger, kind: str, path: Path | str) -> None:
        noted.append(("make", kind))
        made(self, kind, path)

    def note_released(self: Ledger, kind: str, path: Path | str) -> None:
        noted.append(("release", kind))
        released(self, kind, path)

    monkeypatch.setattr(Ledger, "made", note_made)
    monkeypatch.setattr(Ledger, "released", note_released)
    scenario = engine_cell
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("podman/overlay",),
        results_dir=tmp_path / "results",
        work_root=tmp_path / "work",
        target_ci=0.0,
    )
    doc, _path = run(config, progress=lambda _line: None)
    (cell,) = doc["cells"]
    assert cell["status"] == "ok", cell["error"]
    assert {"startup_ns", "copy_up_ns", "commit_ns", "disk_bytes"} <= set(cell["metrics"])
    assert cell["inspect"]["image"]["GraphDriver"] == "overlay"
    assert [op for op, kind in noted if kind == "daemon"] == ["make", "release"]
    assert set(_holders()) <= before


@pytest.mark.parametrize(
    ("engine", "ours", "backing", "root"),
    [
        ("podman/overlay", "overlay2", "ext4", "root/overlay"),
        ("podman/vfs", "vfs", "ext4", "root/vfs"),
        ("podman/btrfs", "btrfs", "btrfs", "root/btrfs"),
    ],
)
def test_our_drivers_agree_with_podmans_on_disk(
    engine: str, ours: str, backing: str, root: str, tmp_path: Path
) -> None:
    """The same 3-layer, 6 MiB image under Podman's storage driver and under ours of the same name, on the
    same backing: the layers' allocated bytes (FIEMAP, a shared extent once) agree within 1%. (Podman's
    overlay adds a `link` and `lower` file per layer and `l/` links, as overlay2 does: a few KiB.)"""
    require(engine)
    require(ours)
    image = files_image([[FileSpec(f"d{n}/f{i}", 256 << 10, n * 100 + i) for i in range(8)] for n in range(3)])
    disk = {}
    for name, under in ((engine, root), (ours, "")):
        with open_driver(default_plugins().driver(name), tmp_path / name.replace("/", "-"), backing, 1 << 30) as on:
            build_image(on.driver, image)
            os.sync()
            disk[name] = allocated_bytes(on.home / under)
    assert disk[ours] >= image.total_bytes
    assert abs(disk[engine] - disk[ours]) <= 0.01 * disk[ours], disk


def test_a_podman_store_holds_its_layers_once(tmp_path: Path) -> None:
    """What the harness reads of a Podman store (its whole home, as a scenario's disk does) holds the
    image once: the layer tars the driver stages for `podman pull oci:` are gone once Podman has them."""
    require("podman/overlay")
    require("overlay2")
    image = files_image([[FileSpec(f"d{n}/f{i}", 256 << 10, n * 100 + i) for i in range(8)] for n in range(3)])
    disk = {}
    for name in ("podman/overlay", "overlay2"):
        with open_driver(default_plugins().driver(name), tmp_path / name.replace("/", "-"), "ext4", 1 << 30) as on:
            build_image(on.driver, image)
            os.sync()
            disk[name] = allocated_bytes(on.home)
    assert disk["overlay2"] >= image.total_bytes
    assert disk["podman/overlay"] < 1.2 * disk["overlay2"], disk  # with the staged tars: about 2x


def test_a_podman_store_builds_under_a_path_that_is_no_image_name(tmp_path: Path) -> None:
    """Podman 4.3 names an image pulled from `oci:DIR` after DIR; a work root such as mkdtemp's `run-_x7`
    or one with capitals is no valid image name, and building there once failed with "invalid reference
    format" (CI saw it, 1 run in some tens: mkdtemp's random letters)."""
    require("podman/overlay")
    image = files_image([[FileSpec("a", 4096, 1)], [FileSpec("b", 4096, 2)]])
    home = tmp_path / "Work-_Root" / "run-_x7"
    home.mkdir(parents=True)
    with open_driver(default_plugins().driver("podman/overlay"), home, "ext4", 256 << 20) as on:
        top = build_image(on.driver, image)
        on.driver.create_container("c", top)
        root = on.driver.mount("c")
        try:
            assert (root / "a").stat().st_size == 4096 and (root / "b").stat().st_size == 4096
        finally:
            on.driver.unmount("c")
            on.driver.remove("c")


def test_a_container_root_podman_mounts_is_nodev_nosuid(tmp_path: Path) -> None:
    """`podman mount`'s overlay (what copy-up and commit steps write through) carries nodev,nosuid, as every
    mount layerbench makes: a device node in an image opens nothing of the host's (storage.conf `mountopt`).
    The root a started container sees is checked by the cold-start cell (test_podman_cold_start.py)."""
    require("podman/overlay")
    image = files_image([[FileSpec("a", 4096, 1)]])
    with open_driver(default_plugins().driver("podman/overlay"), tmp_path / "store", "ext4", 256 << 20) as on:
        on.driver.create_container("c", build_image(on.driver, image))
        root = on.driver.mount("c")
        try:
            flags = os.statvfs(root).f_flag
            assert flags & os.ST_NODEV and flags & os.ST_NOSUID, flags
        finally:
            on.driver.unmount("c")
            on.driver.remove("c")


def test_a_store_path_with_a_backslash_and_a_quote_is_the_path_podman_uses(tmp_path: Path) -> None:
    """storage.conf and containers.conf are TOML: the store's path went in unquoted, so a work root holding
    `\\t` put Podman's graphroot, tmp_dir and hooks_dir in a directory with a tab instead (under /var/tmp, one
    any user may make and fill with a hook of theirs), and a `"` ended the string. Now Podman reads the path."""
    require("podman/vfs")
    home = tmp_path / 'a\\tb"c'
    home.mkdir()
    with open_driver(default_plugins().driver("podman/vfs"), home, "ext4", 256 << 20) as on:
        assert isinstance(on.driver, PodmanDriver)
        graphroot = on.driver.podman("info", "--format", "{{.Store.GraphRoot}}").strip()
        assert graphroot == str(on.driver.home / "root"), graphroot
        assert not (tmp_path / 'a\tb"c').exists()
